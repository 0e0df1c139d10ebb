"""Any registered method on ODIR-5K with LDRNet's training setting (REFERENCE section 4).

arg: the method name (default "bce"), e.g. ``--config configs/odir5k.py:gce``; the seed is
``--config.seed``.  Needs the ODIR-5K training release (the annotation .xlsx or a CSV export of it, and
ODIR-5K_Training_Dataset/) under ``--config.data.root`` or ``$LTJAX_DATA_DIR/odir5k`` (layout in
ltjax/data/medical.py; reading .xlsx needs ``pip install openpyxl``).

Protocol (LDRNet): one example per fundus image with the patient's 8 labels (N D G C A H M O), seeded
patient-level 7:1:2 train/val/test split (``data.split_seed``, ``data.split_fractions``; stratified on the
labels by default, ``data.split_method``); the report adds
the official ODIR scores (kappa, F1, AUC at threshold 0.5 over the flattened label matrix, and their
mean, the final score; see ``ltjax.metrics.odir_scores``) to mAP and the group table.

Training setting: as configs/chestxray14.py (ResNet-50 fine-tuned whole, GAP + linear head; adamw lr
1e-4, weight decay 1e-5, batch 32, constant lr; 448 input from a >= 0.875 random crop; flips, no colour
jitter); 30 epochs (not given in the paper; ~4,600 steps at batch 32).

Groups: LDRNet calls N, D and O the head classes and the other five tail.  With the DB thresholds
(n_c >= 100 head, < 20 tail) every ODIR class is head (each has well over 100 training images), so
the groups are quantiles of the training counts cut at 5/8: the 3 most frequent classes head (N, D, O
on ODIR-5K), the 5 rarer ones tail, no medium group.  Override with ``--config.data.groups.*``.
"""
import chestxray14  # the sibling configs/chestxray14.py (LDRNet's setting)

DATASET = "odir5k"


def get_config(arg=None):
    c = chestxray14.ldrnet_recipe(DATASET, arg or "bce", num_epochs=30)
    c.data.groups.mode = "quantile"
    c.data.groups.quantiles = (5 / 8, 5 / 8)
    return c
