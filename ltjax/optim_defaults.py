"""The ``config.optimizer`` and ``config.schedule`` sections: every field with its default.

Kept free of jax (configs are loaded before ``jax.distributed`` starts); what the fields do is in
:mod:`ltjax.training.optim`.  Both :mod:`ltjax.defaults` (the base config) and the phases of
:mod:`ltjax.methods.base` (a phase overrides any of these fields) build on them.
"""
from __future__ import annotations

import ml_collections


def optimizer_defaults() -> ml_collections.ConfigDict:
    """``config.optimizer``: every field with its default (the DB/HMT recipe)."""
    c = ml_collections.ConfigDict()
    c.name = "sgd"  # "sgd" | "adam" (L2 in the gradient, torch.optim.Adam) | "adamw"
    c.lr = 0.02
    c.momentum = 0.9  # sgd
    c.nesterov = False  # sgd
    c.b1 = 0.9  # adam / adamw
    c.b2 = 0.999  # adam / adamw
    c.eps = 1e-8  # adam / adamw
    c.weight_decay = 1e-4  # sgd / adam: L2 added to the gradient (torch style); adamw: decoupled
    c.grad_clip_norm = 35.0  # clip by global norm; 0 disables
    # parameter groups: name -> {pattern (regex on "backbone/trunk/..." paths), lr_mult, weight_decay (< 0:
    # optimizer.weight_decay)}; e.g. a backbone at 0.1x (ltjax/training/optim.py)
    c.param_groups = ml_collections.ConfigDict()
    return c


def schedule_defaults() -> ml_collections.ConfigDict:
    """``config.schedule``: every field with its default (the DB/HMT recipe)."""
    c = ml_collections.ConfigDict()
    c.name = "step"  # "step" | "cosine" | "constant" | "one_cycle"
    c.warmup_steps = 500  # linear warm-up from lr * warmup_init_factor
    c.warmup_init_factor = 1 / 3
    c.decay_epochs = (5, 7)  # step: multiply by decay_factor at these epochs
    c.decay_factor = 0.1
    c.final_lr_factor = 0.0  # cosine: lr at the end, as a fraction of lr
    c.pct_start = 0.3  # one_cycle: fraction of the steps spent rising to lr
    c.div_factor = 25.0  # one_cycle: starts at lr / div_factor
    c.final_div_factor = 1e4  # one_cycle: ends at lr / (div_factor * final_div_factor)
    return c
