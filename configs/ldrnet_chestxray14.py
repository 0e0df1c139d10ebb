"""LDRNet on NIH ChestX-ray14 with the paper's setting (seed 004; ``ltjax/methods/ldrnet.py``).

arg: the row of the paper's ablations (default "full"): "full" (stage 1 + EM with reverse sampling),
"stage1" (stage 1 only: ``method.rounds=0``), "uniform" (EM with p_c = F_c, the data's label rates: Table 6), "no_prompt" (label
queries only, no language model).  E.g. ``--config configs/ldrnet_chestxray14.py:stage1``.  Needs the NIH
release under ``--config.data.root`` or ``$LTJAX_DATA_DIR/chestxray14`` (layout in ltjax/data/medical.py);
without it the run stops at once naming what to prepare.

Setting (paper section 4.3; what it leaves open is stated here):

* DenseNet-121 (the paper's and CheXNet's backbone) from torchvision's ImageNet weights
  (``--config.model.pretrained=/path/densenet121-a639ec97.pth``; empty = random init, not the paper's
  setting), fine-tuned whole (no frozen stage, BatchNorm training); its 14 x 14 x 1024 map at 448 px is
  the token map;
* input 512 resized then 448 cropped: the pipeline's random crop keeping >= 448/512 of each side,
  resized to 448 (evaluation: resize to 448); horizontal flips; no colour jitter;
* Adam lr 1e-4, betas (0.9, 0.999), weight decay 1e-5 as torch's Adam applies it (L2 added to the
  gradient: ``optimizer.name="adam"``), batch 32, constant lr;
* split: the seeded patient-level 7:1:2 split (``data.split="patient"``; stratified on the findings by
  default, ``data.split_method``, so Hernia's ~110 patients reach val and test); the checkpoint is chosen on the
  validation part by its mean AUC (``train.select_on="val:auc_macro"``, the paper's NIH metric; candidates
  at every epoch end of stage 1 and after each M-step and E-step, ltjax/training/selection.py) and the
  report is on the test part, which is never used for the choice;
* lengths (not given in the paper): stage 1 10 epochs, then one EM round of 1 epoch M-step and 1 epoch
  E-step (``method.phases.{stage1,m_step,e_step}``, ``method.rounds``);
* metrics: per-class and mean AUC (the paper's NIH metric), mAP, mACC, F1 at 0.5.
"""
import chestxray14  # the sibling configs/chestxray14.py (LDRNet's data and optimisation setting)

from ltjax.defaults import experiment_config

DATASET = "chestxray14"
VARIANTS = ("full", "stage1", "uniform", "no_prompt")


def ldrnet_config(dataset: str, stage1_epochs: int, variant: str):
    if variant not in VARIANTS:
        raise ValueError(f"configs/ldrnet_*.py: arg must be one of {', '.join(VARIANTS)}, got {variant!r}")
    c = chestxray14.ldrnet_recipe(dataset, "ldrnet", num_epochs=stage1_epochs)
    c.model = experiment_config(dataset=dataset, model="densenet121", method="ldrnet").model
    c.model.frozen_stages = -1
    c.model.norm_eval = False
    c.optimizer.name = "adam"  # torch's Adam(weight_decay=1e-5): L2 in the gradient
    if "split" in c.data:  # ChestX-ray14 also has the official list split; ODIR-5K is patient-level only
        c.data.split = "patient"
    c.method.phases.stage1.epochs = float(stage1_epochs)
    c.train.select_on = "val:auc_macro"
    if variant == "stage1":
        c.method.rounds = 0
    elif variant == "uniform":
        c.method.sampling = "uniform"
    elif variant == "no_prompt":
        c.method.language = "none"
    return c


def get_config(arg=None):
    return ldrnet_config(DATASET, 10, arg or "full")
