"""Multi-label losses as pure functions of arrays, and the registry that names them.

Every registered loss has the signature ``loss(logits [B, C], labels [B, C] in {0, 1},
mask [B, C] | None, stats: ClassStats | None, **hyper_parameters) -> scalar float32``.  ``mask`` marks
known labels (1 known, 0 unknown); unknown entries contribute neither loss nor gradient.  Losses cast
logits to float32 and are finite (value and gradient) at any logit.

Config-facing entry points: ``compute_loss(name, logits, labels, mask, stats, hparams)`` and
``loss_defaults(name)``; ``LOSSES.get(name)`` is a callable ``LossSpec(name, fn, defaults, ...)``.

Registered: bce, rw (bce.py); focal (focal.py); cb (class_balanced.py); db
(distribution_balanced.py); asl (asl.py); ldam (ldam.py); zlpr (zlpr.py); gce (gce.py).
"""
from ltjax.losses.base import (
    LOSSES,
    ClassStats,
    LossSpec,
    compute_loss,
    loss_defaults,
    masked_mean,
    register_loss,
    sigmoid_bce,
)
from ltjax.losses.bce import bce_loss, rw_class_weights, rw_loss
from ltjax.losses.focal import focal_loss
from ltjax.losses.class_balanced import cb_class_weights, cb_loss, cb_weights
from ltjax.losses.distribution_balanced import db_bias, db_loss, db_rebalance_weights
from ltjax.losses.asl import asl_loss
from ltjax.losses.ldam import ldam_loss, ldam_margins
from ltjax.losses.zlpr import zlpr_loss
from ltjax.losses.gce import gce_loss

__all__ = [
    "LOSSES",
    "ClassStats",
    "LossSpec",
    "asl_loss",
    "bce_loss",
    "cb_class_weights",
    "cb_loss",
    "cb_weights",
    "compute_loss",
    "db_bias",
    "db_loss",
    "db_rebalance_weights",
    "focal_loss",
    "gce_loss",
    "ldam_loss",
    "ldam_margins",
    "loss_defaults",
    "masked_mean",
    "register_loss",
    "rw_class_weights",
    "rw_loss",
    "sigmoid_bce",
    "zlpr_loss",
]
