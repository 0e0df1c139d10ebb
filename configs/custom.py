"""Any registered method on your own data: a manifest (CSV or JSONL) of images or documents.

arg: ``METHOD[,KIND[,MODEL]]`` (comma-separated): a method name (default "bce"); the kind, ``image``
(default; model ``resnet18``, or ``resnet50``) or ``text`` (documents, ``data.kind = "text"``; model
``text_pool``, the default, or ``text_bilstm``), e.g. ``--config configs/custom.py:db_focal`` (images) or
``--config configs/custom.py:bce,text,text_bilstm``.
The manifest is required: ``--config.data.manifest=/path/to/labels.csv`` (formats, splits, classes and
errors: ``ltjax/data/custom.py``).  The kind must be chosen here, in the arg, because the model (ResNet or
text) depends on it and a config's model fields are fixed when the config is built.

Images: ResNet-18 (random init; ImageNet weights with ``--config.model.pretrained=/path/resnet18-f37072fd.pth``)
+ PFC neck, 224 x 224 inputs with the DB-loss augmentations, the DB-loss optimiser (SGD lr 0.02, momentum
0.9, wd 1e-4, batch 32, clip 35, 500 warm-up steps from lr/3; 8 epochs with x0.1 at 5 and 7 with
class-aware re-sampling, else 80 epochs with decays at 55 and 70).  Text: the recipe of configs/text.py
(Adam lr 1e-3, batch 64, 20 epochs, 500 tokens).  Groups: the DB thresholds (head n_c >= 100, tail
n_c < 20); for small data sets ``--config.data.groups.mode=quantile`` gives three groups of equal size.

Example::

    python -m ltjax.train --config configs/custom.py:db_focal --workdir runs/mine \\
        --config.data.manifest=/data/mine/labels.csv --config.data.group_column=patient
"""
import text  # the sibling configs/text.py (the text recipe)
import voc_lt  # the sibling configs/voc_lt.py (the DB-loss image recipe)

DATASET = "custom"
TEXT_MODELS = ("text_pool", "text_bilstm")


def parse_arg(arg):
    """'METHOD[,text[,MODEL]]' -> (method, kind, model)."""
    parts = [p.strip() for p in (arg or "").split(",")]
    method = parts[0] or "bce"
    kind = parts[1] if len(parts) > 1 else "image"
    model = parts[2] if len(parts) > 2 else ("text_pool" if kind == "text" else "resnet18")
    if len(parts) > 3 or kind not in ("image", "text") or (kind == "text" and model not in TEXT_MODELS) or (
        kind == "image" and model not in ("resnet18", "resnet50")
    ):
        raise ValueError(
            "configs/custom.py: arg must be METHOD[,image[,resnet18|resnet50]] or "
            f"METHOD,text[,{'|'.join(TEXT_MODELS)}], got {arg!r}"
        )
    return method, kind, model


def get_config(arg=None):
    method, kind, model = parse_arg(arg)
    if kind == "image":
        c = voc_lt.db_recipe(DATASET, method, model)  # the DB-loss image recipe
        c.data.image_size = 224
    else:
        c = text.httn_recipe(DATASET, method, model)  # the recipe of configs/text.py
    c.data.kind = kind
    return c
