"""HMT-Net on VOC-LT, the paper's setting (paper 000 section 4, REFERENCE sections 2 and 4).

ResNet-50 (ImageNet weights from ``--config.model.pretrained=/path/resnet50-0676ba61.pth``; first stage
frozen, BN in eval) + PFC neck, 224 input with the DB augmentations, one head per class group
(head n_c >= 100, middle 20..99, tail < 20), lambda 2, SGD 0.02 / momentum 0.9 / wd 1e-4, 500 warm-up
iterations from lr/3.  arg: "rs" (default: class-aware re-sampling, 8 epochs, decays at 5 and 7) or
"uniform" (80 epochs, decays at 55 and 70).  Needs a VOCdevkit (``--config.data.root`` or
``$LTJAX_DATA_DIR/VOCdevkit``); without it the run stops at once saying what to prepare.
"""
import voc_lt  # the sibling configs/voc_lt.py (the DB recipe)


def hmt_config(dataset: str, arg=None):
    schedule = arg or "rs"
    if schedule not in ("rs", "uniform"):
        raise ValueError(f"HMT-Net config: unknown schedule {schedule!r}; use 'rs' or 'uniform'")
    c = voc_lt.db_recipe(dataset, "hmt")
    c.data.sampler = "class_aware" if schedule == "rs" else "uniform"
    if schedule == "rs":
        c.train.num_epochs, c.schedule.decay_epochs = 8, (5, 7)
    else:
        c.train.num_epochs, c.schedule.decay_epochs = 80, (55, 70)
    c.method.lam = 2.0
    return c


def get_config(arg=None):
    return hmt_config("voc_lt", arg)
