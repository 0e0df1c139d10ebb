"""COMIC on PLT-VOC (VOC-LT with 40 % of the training positives hidden), the reference recipe (paper 001,
REFERENCE section 4; ``ltjax/methods/comic.py`` says what every method field does).

arg: the row of the paper's tables (default "comic"): "comic"; the ablations "no_rlc", "no_mfm", "no_htb",
"mfm_pn" (MFM with the positive-negative factor only), "mfm_ht" (head-tail factor only), "plain" (none of
RLC / MFM / HTB: COMIC's classifier under plain BCE, the architecture's share); the branch rows
"head_model" / "tail_model" (the same training, scored by one branch: they equal
``python -m ltjax.evaluate --workdir W --config.method.test_branch=head`` on a "comic" run).  tau and alpha
sweeps: ``--config.method.tau=0.6``, ``--config.method.alpha=1``; other missing ratios:
``--config.data.missing_ratio=0.3`` (0 = the fully labelled VOC-LT).  The baselines of COMIC's table under
the same partial labels: ``configs/voc_lt.py:METHOD --config.data.missing_ratio=0.4`` (the hidden set depends
only on the data, the ratio and ``data.missing_seed``, so it is the same for every method).

Recipe (the released code, where the paper is silent): ResNet-50 (ImageNet weights from
``--config.model.pretrained=/path/resnet50-0676ba61.pth``; first stage frozen, BN in eval) + the PFC neck,
224 px with the DB augmentations; three streams (instance / reverse / class-uniform sampling); Adam (L2
weight decay 1e-4 as torch.optim.Adam, no gradient clipping), lr 1e-3 for the features and 1e-4 for the
classifiers (``optimizer.param_groups.classifiers``: pattern "classifier_", x0.1), batch 32, 40 epochs of
the instance stream; constant lr after 500 warm-up steps from lr/3 (the reference gives no schedule and no
weight decay: these two are the DB recipe's).  n_c and the head / medium / tail groups are counted on the
observed labels.  Needs a VOCdevkit (``--config.data.root`` or ``$LTJAX_DATA_DIR/VOCdevkit``); without it
the run stops at once saying what to prepare.
"""
import ml_collections

import voc_lt  # the sibling configs/voc_lt.py (the DB image recipe)

ROWS = {
    "comic": {}, "no_rlc": {"rlc": False}, "no_mfm": {"mfm": False}, "no_htb": {"htb": False},
    "mfm_pn": {"mfm_factors": "pn"}, "mfm_ht": {"mfm_factors": "ht"},
    "head_model": {"test_branch": "head"}, "tail_model": {"test_branch": "tail"},
    # not a row of the paper: COMIC's classifier (branch layer + causal-norm cosine classifier) trained with plain
    # BCE on one stream, no RLC / MFM / HTB: what the architecture alone gives, against BCE's linear head
    "plain": {"rlc": False, "mfm": False, "htb": False},
}


def comic_recipe(c, row: str = "comic", lr: float = 1e-3):
    """COMIC's optimiser and the row's switches on a config whose data and model are set."""
    if row not in ROWS:
        raise ValueError(f"COMIC config: unknown row {row!r}; valid rows: {', '.join(ROWS)}")
    c.method.update(ROWS[row])
    c.optimizer.name = "adam"
    c.optimizer.lr = lr
    c.optimizer.weight_decay = 1e-4
    c.optimizer.grad_clip_norm = 0.0
    c.optimizer.param_groups = ml_collections.ConfigDict(
        {"classifiers": {"pattern": "classifier_", "lr_mult": 0.1, "weight_decay": -1.0}})
    c.schedule.name = "constant"
    return c


def comic_config(dataset: str, arg=None):
    c = voc_lt.db_recipe(dataset, "comic")
    c.data.missing_ratio = 0.4
    c.data.sampler = "uniform"
    c.train.num_epochs = 40
    return comic_recipe(c, arg or "comic")


def get_config(arg=None):
    return comic_config("voc_lt", arg)
