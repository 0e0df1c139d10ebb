"""The offline image benchmark: any registered method on ``tiles_voc_lt`` (VOC-LT's real label sets, images
composed of MNIST digits; ``ltjax/data/tiles.py``), sized for a 2-core CPU.

arg: ``METHOD[,MODEL[,REGIME]]``, e.g. ``--config configs/tiles_voc_lt.py:db_focal``,
``...:hmt,glyphnet,frozen`` or ``...:bce,resnet18`` (the former recipe).

* METHOD: any registered method (default "bce").
* MODEL: ``glyphnet`` (default; ``ltjax/models/glyphnet.py``), or ``resnet18`` / ``resnet50`` /
  ``efficientnet_lite0``, which run the former recipe (below).
* REGIME (glyphnet only):

  - ``finetune`` (default): the DB recipe's way of using ImageNet weights, with the tiles world's
    ImageNet: the trunk starts from ltjax's single-glyph pretraining (``model.pretrained = "glyphs"``,
    ``ltjax/models/glyph_pretrain.py``: built on first use, ~2 min here, then cached), the stem and
    stage 1 frozen, every trunk BatchNorm in evaluation mode (``frozen_stages = 1``, ``norm_eval``);
  - ``frozen``: the same pretrained trunk frozen whole; its max-pooled output is computed once per image
    (``data.frozen_features = "pooled"``, ``ltjax/training/frozen_features.py``) and the neck and
    head (and whatever the method puts on top) train on the stored vectors, kept on the device;
  - ``scratch``: the same network from random weights, nothing frozen, BatchNorm training.

The benchmark recipe (glyphnet), and why:

* images generated at 80 x 80 with 20-px glyphs (``data.tile_canvas``/``glyph_size``; the dataset's
  default 224 / 56 scaled by 5/14, the same 4 x 4 grid of glyph places) and read at 80 px;
* augmentation: the DB recipe's photometric jitter (its +-18 degree hue jitter keeps red and blue
  apart), but no horizontal flip (the dataset declares that a flip changes its labels: a mirrored digit;
  neither pipeline flips) and no random crop: a crop keeping 80 % of each side removes up to 16 px of an
  80-px tile, most of a 20-px glyph at the border, whose label stays, so for a tail class with 4 training
  images it is label noise.  With the crop, BCE's 3-seed std was 2.05 points (75.70, tail 50.55 +- 3.98);
  without, 0.64 (73.72, tail 46.51 +- 1.33), 24 epochs each.  Glyph positions are random already;
* the PFC neck with global MAX pooling (``model.neck_pool``): average pooling dilutes 20-px glyphs in
  an 80-px canvas;
* optimiser: SGD, momentum 0.9, weight decay 1e-4, clip 35 (the DB recipe's), lr 0.05 (ASL, a summed
  loss: lr / 640 and clip x 640, ``configs/voc_lt.py:summed_loss_scale``) with 50 warm-up
  steps from lr/3 and a cosine decay to 0 over 24 epochs (fine-tuning and scratch; 36 steps of 32 per
  epoch) or 30 epochs (frozen features, where a step costs almost nothing).  The DB recipe's lr 0.02
  underfits here in 16 epochs (training loss 0.182 against the class-frequency floor's 0.2195; BCE 47.96
  mAP, head 63.7), and 16 epochs at 0.05 end at training loss 0.082 and 60-64 mAP, 24 at 0.057;
* class-aware sampling (``hmt``'s default setting): a class-aware epoch is as long as a uniform one
  (``class_aware_epoch_divisor`` 14: 775 * 20 / 14 = 1,107 draws, about N = 1,142), so every method sees
  about the same number of images;
* CSSFE (``:cssfe``; ``--config.method.variant=net0..net3`` for its ablation, ``scripts/ablate_cssfe.py``)
  trains under this same recipe, on glyphnet's 10 x 10 x 128 map, with its ASL counted as a summed loss
  (lr / 640, clip x 640), not under its paper's AdamW / one-cycle / EMA (``configs/cssfe_voc.py``): one
  protocol for every row of the benchmark (docs/RESULTS.md compares the two optimisers for CSSFE);
* LDRNet (``:ldrnet``): width 128, 4 heads, MLP 512 (glyphnet's map has 128 channels; the default 512-wide
  encoder is sized for ResNet / DenseNet maps and costs ~16x more here), stage 1 for the recipe's epochs,
  then its default EM round;
* the DB methods' VOC hyper-parameters; HMT-Net as in ``configs/hmt_voc.py`` (lambda 2, class-aware);
  the VOC-LT group thresholds (head n_c >= 100, tail n_c < 20: 6/6/8 classes).

The former recipe (``MODEL`` = a ResNet or EfficientNet-Lite0: docs/RESULTS.md's older tiles tables):
the DB recipe scaled down, the backbone from scratch (``frozen_stages = -1``, ``norm_eval = False``),
flips as the dataset allows, SGD lr 0.02 with x0.1 steps at epochs 8 and 10 of 12, 100 warm-up steps.
With torchvision weights (``--config.model.pretrained=...``) set ``--config.model.frozen_stages=1
--config.model.norm_eval=true`` for the DB recipe's setting.
"""
import voc_lt  # the sibling configs/voc_lt.py (the DB-loss image recipe)

DATASET = "tiles_voc_lt"
MODELS = ("glyphnet", "resnet18", "resnet50", "efficientnet_lite0")
REGIMES = ("finetune", "frozen", "scratch")
IMAGE_SIZE = 80
GLYPH_SIZE = 20
CLASS_AWARE_EPOCH_DIVISOR = 14  # class-aware epoch = int(775 * 20 / 14) = 1,107 draws, about N
LDRNET_WIDTH = 128  # LDRNet's token width here (its default 512 is for ResNet / DenseNet maps)

# the benchmark recipe (glyphnet)
EPOCHS = {"finetune": 24, "scratch": 24, "frozen": 30}
LR = 0.05
WARMUP_STEPS = 50

# the former recipe (ResNets, EfficientNet-Lite0)
FORMER_EPOCHS, FORMER_DECAY_EPOCHS = 12, (8, 10)
FORMER_WARMUP_STEPS = 100


def parse_arg(arg):
    """'METHOD[,MODEL[,REGIME]]' -> (method, model, regime)."""
    parts = [p.strip() for p in (arg or "").split(",")]
    method = parts[0] or "bce"
    model = parts[1] if len(parts) > 1 and parts[1] else "glyphnet"
    regime = parts[2] if len(parts) > 2 and parts[2] else ("finetune" if model == "glyphnet" else "")
    if len(parts) > 3 or model not in MODELS or (model == "glyphnet" and regime not in REGIMES) or (
            model != "glyphnet" and regime):
        raise ValueError(
            f"configs/tiles_voc_lt.py: arg must be METHOD[,{'|'.join(MODELS)}[,{'|'.join(REGIMES)}]] (a regime "
            f"only for glyphnet), got {arg!r}"
        )
    return method, model, regime


def _common(c, method):
    if method == "hmt":  # configs/hmt_voc.py's default ("rs") setting
        c.data.sampler = "class_aware"
        c.method.lam = 2.0
    if method == "ldrnet":  # a 128-wide encoder over glyphnet's 100 tokens (128 channels): CPU-sized
        c.method.width, c.method.heads, c.method.mlp_dim = LDRNET_WIDTH, 4, 4 * LDRNET_WIDTH
    c.data.image_size = IMAGE_SIZE
    c.data.tile_canvas = IMAGE_SIZE
    c.data.glyph_size = GLYPH_SIZE
    c.data.eval_batch_size = 128
    c.data.class_aware_epoch_divisor = CLASS_AWARE_EPOCH_DIVISOR
    c.train.log_every = 36


def get_config(arg=None):
    method, model, regime = parse_arg(arg)
    c = voc_lt.db_recipe(DATASET, method, model)
    _common(c, method)
    if model != "glyphnet":  # the former recipe
        if "frozen_stages" in c.model:  # from scratch: nothing frozen, BatchNorm trains
            c.model.frozen_stages = -1
        if "norm_eval" in c.model:
            c.model.norm_eval = False
        c.train.num_epochs, c.schedule.decay_epochs = FORMER_EPOCHS, FORMER_DECAY_EPOCHS
        c.schedule.warmup_steps = FORMER_WARMUP_STEPS
        return c
    c.model.pretrained = "" if regime == "scratch" else "glyphs"
    c.model.frozen_stages = {"finetune": 1, "scratch": -1, "frozen": 3}[regime]
    c.model.norm_eval = regime != "scratch"
    if regime == "frozen":
        c.data.frozen_features = "pooled"
        c.data.on_device = True
    c.data.crop_min_ratio = 1.0  # no random crop: it cuts glyphs at the border (module docstring)
    c.optimizer.lr = LR / voc_lt.summed_loss_scale(method, c.data.batch_size, DATASET)  # (clip: db_recipe)
    c.schedule.name = "cosine"
    c.schedule.warmup_steps = WARMUP_STEPS
    c.schedule.decay_epochs = ()
    c.train.num_epochs = EPOCHS[regime]
    return c
