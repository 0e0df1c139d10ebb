"""The loss baselines of the seed papers' tables: the standard model trained with one registered loss.

Their ``config.method`` holds the loss's hyper-parameters (see ``ltjax.losses``), so e.g.
``--config.method.gamma=1`` changes focal's gamma.  R-BCE, R-BCE-NTR and DB-focal are one loss ('db')
with parts switched on or off; ``config_updates`` are settings outside ``config.method`` that a method
implies (RS: the class-aware sampler).  Each trains in the single default phase.
"""
from __future__ import annotations

import ml_collections

from ltjax import losses
from ltjax.methods.base import METHODS, Method, sigmoid_scores, standard_model


def loss_method(name: str, loss_name: str, description: str, config_updates=None, **preset) -> Method:
    """The standard model trained with the registered loss ``loss_name`` (hyper-parameters ``preset``
    on top of the loss's defaults, all of them fields of ``config.method``)."""
    unknown = set(preset) - set(losses.loss_defaults(loss_name))
    if unknown:
        raise ValueError(f"method {name!r}: {sorted(unknown)} are not hyper-parameters of loss {loss_name!r}")

    def defaults():
        cfg = ml_collections.ConfigDict()
        cfg.name = name
        cfg.update(losses.loss_defaults(loss_name))
        cfg.update(preset)
        return cfg

    def loss(outputs, batch, stats, method_cfg, state=None):
        del state
        hparams = {k: v for k, v in method_cfg.items() if k != "name"}
        value = losses.compute_loss(loss_name, outputs["logits"], batch["labels"], batch.get("mask"), stats, hparams)
        return value, {}

    return Method(name, description, defaults, standard_model, loss, sigmoid_scores,
                  config_updates=dict(config_updates or {}))


CLASS_AWARE = {"data.sampler": "class_aware"}

# The baselines of the seed papers' tables (REFERENCE section 3 gives formulas and defaults).
for _method in (
    loss_method("bce", "bce", "binary cross-entropy (ERM)"),
    loss_method("rw", "rw", "BCE re-weighted per class by N / n_c (mode 'inv') or its square root"),
    loss_method("rs", "bce", "ERM with class-aware re-sampling", config_updates=CLASS_AWARE),
    loss_method("focal", "focal", "focal loss (gamma 2, DB's balance factor 2)"),
    loss_method("cb_focal", "cb", "class-balanced focal loss (beta 0.9, average_w)", gamma=2.0, balance=2.0),
    # DB's re-balanced weighting corrects the sampling frequencies of class-aware re-sampling, which
    # the DB recipe always uses with it.
    loss_method("r_bce", "db", "DB: re-balanced BCE only, with class-aware re-sampling",
                config_updates=CLASS_AWARE, ntr=False, focal=False),
    loss_method("r_bce_ntr", "db", "DB: re-balanced BCE with negative-tolerant regularisation, class-aware re-sampling",
                config_updates=CLASS_AWARE, focal=False),
    loss_method("db_focal", "db", "distribution-balanced focal loss (all parts), class-aware re-sampling",
                config_updates=CLASS_AWARE),
    loss_method("asl", "asl", "asymmetric loss (gamma- 4, gamma+ 0, clip 0.05)"),
    loss_method("ldam", "ldam", "LDAM with multi-label margins C / n_c^(1/4) on a cosine head (s 30)",
                config_updates={"model.head": "cosine"}),
    loss_method("zlpr", "zlpr", "zero-bounded log-sum-exp & pairwise rank-based loss"),
    loss_method("gce", "gce", "multi-label generalised cross-entropy (q 0.8)"),
):
    METHODS.add(_method.name, _method)

