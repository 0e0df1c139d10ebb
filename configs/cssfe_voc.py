"""CSSFE on VOC-LT with the paper's training setting (``../shared/REFERENCE.md`` section 4, seed 002).

arg: the ablation variant (default "net3", the full CSSFE; "net0".."net2" for the paper's Figure 4), e.g.
``--config configs/cssfe_voc.py:net1``.  Needs a VOCdevkit under ``--config.data.root`` (or
``$LTJAX_DATA_DIR/VOCdevkit``); without it the run stops at once naming what to prepare.

Recipe: ResNet-50 at 448 px (a 14 x 14 x 2048 map; ``--config.model.pretrained=/path/resnet50-0676ba61.pth``
for the ImageNet weights, the paper's start), nothing frozen; label embeddings of "a photo of a {}." from
all-MiniLM-L6-v2 by default (offline; the paper's CLIP RN50 text tower from your copy of its weights:
``--config.method.encoder=clip --config.method.clip_weights=open_clip_model.safetensors
--config.method.clip_tokenizer=tokenizer.json``, see ``ltjax/models/clip_text.py``), MLP projection;
ASL (gamma- 4, gamma+ 0, clip 0.05); AdamW lr 5e-5 (1e-5 on COCO-LT), weight decay 1e-4, batch 16,
one-cycle (warm-up over the first 10 % of the steps, the released main.py's pct_start), 80 epochs;
parameter EMA 0.998 used for evaluation; the checkpoint is the last one (never chosen on the test split).

Augmentation (``ltjax/data/autoaugment.py``, host pipeline): resize to 448, the ASL code's Cutout (factor
0.5), RandAugment (N 2, M 9), no crop, flip or photometric jitter: the training transform of the ASL / CPRFL
code the authors' main.py runs.  The paper's text cites AutoAugment (Cubuk et al. 2019) for its
"automatic augmentation"; the numbers it reports come from that code, so RandAugment is the default and
``--config.data.auto_augment=autoaugment`` gives the ImageNet AutoAugment policy.
"""
from ltjax.defaults import experiment_config

DATASET = "voc_lt"
LR = {"voc_lt": 5e-5, "coco_lt": 1e-5}
VARIANTS = ("net0", "net1", "net2", "net3")


def cssfe_recipe(dataset: str, variant: str = "net3"):
    if variant not in VARIANTS:
        raise ValueError(f"configs/cssfe_*.py: arg must be one of {', '.join(VARIANTS)}, got {variant!r}")
    c = experiment_config(dataset=dataset, model="resnet50", method="cssfe")
    c.method.variant = variant
    c.model.frozen_stages = -1
    c.model.norm_eval = False
    c.data.image_size = 448
    c.data.batch_size = 16
    c.data.eval_batch_size = 32
    c.data.auto_augment = "randaugment"
    c.data.randaugment_ops, c.data.randaugment_magnitude = 2, 9
    c.data.cutout_factor = 0.5
    c.data.crop_min_ratio = 1.0
    c.data.flip_prob = 0.0
    c.data.photometric = False
    c.optimizer.name = "adamw"
    c.optimizer.lr = LR[dataset]
    c.optimizer.weight_decay = 1e-4
    c.optimizer.grad_clip_norm = 0.0
    c.schedule.name = "one_cycle"
    c.schedule.warmup_steps = 0
    c.schedule.pct_start = 0.1
    c.train.num_epochs = 80
    c.train.ema_decay = 0.998
    c.eval.use_ema = True
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    return c


def get_config(arg=None):
    return cssfe_recipe(DATASET, arg or "net3")
