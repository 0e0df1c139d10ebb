"""Any registered method on NIH ChestX-ray14 with LDRNet's training setting (REFERENCE section 4).

arg: the method name (default "bce"), e.g. ``--config configs/chestxray14.py:gce``; the seed is
``--config.seed``.  Needs the NIH release (Data_Entry_2017[_v2020].csv + images/ or images_NNN/images/)
under ``--config.data.root`` or ``$LTJAX_DATA_DIR/chestxray14`` (layout in ltjax/data/medical.py).

Split: ``data.split="auto"`` takes the official train_val_list.txt / test_list.txt when both are in the
root, else the seeded patient-level 7:1:2 split that LDRNet used; ``--config.data.split=patient`` forces
LDRNet's protocol (``data.split_seed`` picks the split, independent of the training seed;
``data.split_method``: "stratified", the default, keeps every finding in train, val and test in
proportion; "hash" is the label-blind patient order).

Setting (LDRNet, paper 004 section 4.3, where it maps onto existing fields):
* ResNet-50 backbone from ImageNet weights (``--config.model.pretrained=/path/resnet50-0676ba61.pth``;
  empty = random init, not the paper's setting), fine-tuned whole (no frozen stage, BatchNorm in
  training mode) with global average pooling and a linear classifier (no PFC neck).
* Adam, lr 1e-4, betas (0.9, 0.999), weight decay 1e-5, batch 32.  The paper's Adam with weight decay
  (torch style, L2 in the gradient) is mapped onto ``adamw`` (decoupled decay), the optimiser that
  exists here; constant learning rate, no warm-up, no gradient clipping (none is described).
* Input: the paper resizes to 512 and crops 448; here the image pipeline's random crop keeping at least
  448/512 = 0.875 of each side, resized to 448 (evaluation: resize to 448); horizontal flips; no colour
  jitter (not described; meaningless on grayscale X-rays).
* Epochs: not given in the paper; 10 here (~24,500 steps at batch 32 on the 7:1:2 split).
* Groups: with the DB thresholds (n_c >= 100 head, < 20 tail) all 14 findings are head classes on
  ChestX-ray14's ~78k training images, so the groups are quantiles of the training counts (rarest third
  tail, most frequent third head): on the seed-0 patient split head = Atelectasis, Effusion,
  Infiltration, Mass, Nodule; tail = Pneumonia, Edema, Emphysema, Fibrosis, Hernia.  (LDRNet's own
  head list is not frequency-based and is not reproduced.)  Override with ``--config.data.groups.*``.
* Metrics: the evaluation report holds per-class and mean AUC (``auc_macro``, LDRNet's NIH metric) next
  to mAP.
"""
from ltjax.defaults import experiment_config

DATASET = "chestxray14"


def ldrnet_recipe(dataset: str, method: str, num_epochs: int):
    c = experiment_config(dataset=dataset, model="resnet50", method=method)
    c.model.frozen_stages = -1
    c.model.norm_eval = False
    c.model.neck = "gap"
    c.data.image_size = 448
    c.data.crop_min_ratio = 448 / 512
    c.data.photometric = False
    c.data.flip_prob = 0.5
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.data.groups.mode = "quantile"
    c.data.groups.quantiles = (1 / 3, 2 / 3)
    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-4
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.weight_decay = 1e-5
    c.optimizer.grad_clip_norm = 0.0
    c.schedule.name = "constant"
    c.schedule.warmup_steps = 0
    c.train.num_epochs = num_epochs
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    return c


def get_config(arg=None):
    return ldrnet_recipe(DATASET, arg or "bce", num_epochs=10)
