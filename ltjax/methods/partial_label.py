"""Partial-label baselines of COMIC's table: the Hill loss and its SPLC variant (Zhang et al. 2021, "Simple and
Robust Loss Design for Multi-Label Learning with Missing Labels"), registered as the method ``"hill"``, and
threshold pseudo-labelling, the method ``"pseudo_label"``.

Both read a 0 as "negative or missing" (the PLT setting of ``data.missing_ratio``).  ``method.variant``:

* ``"hill"``: l = -y (1 - p_m)^gamma log p_m + (1 - y) (lambda - p) p^2, p = sigma(z), p_m = sigma(z - m): a
  focal-margin loss on positives and the Hill loss on negatives, whose weight (lambda - p) p^2 falls off for
  confident "negatives" (likely missing positives).  Defaults (the authors' code): lambda 1.5, m 1.0, gamma 2.
* ``"splc"`` (self-paced loss correction): the focal margin loss with positive logits z - m; from
  ``change_epoch`` (1) epochs on, an entry with y = 0 and sigma(z) > tau (0.6) is taken as a positive (its logit
  without the margin); l = -[y' log sigma(z') + (1 - y') log sigma(-z')] * pt^gamma, pt = 1 - sigma(z') for
  y' = 1 and sigma(z') for y' = 0.  Defaults: tau 0.6, change_epoch 1, m 1.0, gamma 2.

``pseudo_label`` (two stages, not end to end, as COMIC's table marks it): phase ``train`` fits BCE on the
observed labels; the pass ``pseudo`` scores every training example and marks each unlabeled entry with
sigma(z) > ``threshold`` (0.9) as a positive (method state ``pseudo`` [N, C]: the observed labels plus the
pseudo-labels; the pass logs how many were added); phase ``retrain`` continues training with BCE on those
labels (batches carry their example ``index``).  Each phase runs ``train.num_epochs`` epochs unless its block
says otherwise (``method.phases.retrain.epochs``): twice a one-stage baseline's steps by default.

As in the authors' code the Hill / SPLC focal weights carry gradient and the loss is a SUM over the batch's entries (so
``configs/voc_lt.py`` scales the SGD step as for ASL).  The epoch comes from the method state (``steps``,
``steps_per_epoch``; the training phase's epoch).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax.methods.base import METHODS, Method, TrainPhase, sigmoid_scores, standard_model

VARIANTS = ("hill", "splc")


def hill_terms(z, y, lamb: float, margin: float, gamma: float):
    """Per-entry Hill loss [B, C]."""
    z = z.astype(jnp.float32)
    p_m = jax.nn.sigmoid(z - margin)
    p = jax.nn.sigmoid(z)
    pos = -jnp.power(1.0 - p_m, gamma) * jax.nn.log_sigmoid(z - margin)
    neg = (lamb - p) * p * p
    return jnp.where(y > 0.5, pos, neg)


def splc_terms(z, y, tau: float, margin: float, gamma: float, correct):
    """Per-entry SPLC loss [B, C] and the corrected labels; ``correct`` (a 0/1 scalar) switches the correction."""
    z = jnp.where(y > 0.5, z.astype(jnp.float32) - margin, z.astype(jnp.float32))
    y = jnp.where((correct > 0) & (jax.nn.sigmoid(z) > tau), 1.0, y)
    p = jax.nn.sigmoid(z)
    pt = jnp.where(y > 0.5, 1.0 - p, p)
    bce = -jnp.where(y > 0.5, jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z))
    return bce * jnp.power(pt, gamma), y


def _loss(outputs, batch, stats, cfg, state=None):
    del stats
    variant = str(cfg.variant)
    if variant not in VARIANTS:
        raise ValueError(f"method.variant must be one of {VARIANTS}, got {variant!r}")
    z, y = outputs["logits"], jnp.asarray(batch["labels"], jnp.float32)
    if variant == "hill":
        return jnp.sum(hill_terms(z, y, float(cfg.lamb), float(cfg.margin), float(cfg.gamma))), {}
    correct = (state["steps"] >= float(cfg.change_epoch) * state["steps_per_epoch"]).astype(jnp.float32)
    terms, corrected = splc_terms(z, y, float(cfg.tau), float(cfg.margin), float(cfg.gamma), correct)
    return jnp.sum(terms), {"recalled": jnp.sum(corrected - y)}


def _update_state(state, outputs, batch, cfg):
    return {**state, "steps": state["steps"] + 1.0}


def _init_state(config, meta, dataset, outputs):
    spe = int(config.train.steps_per_epoch) or math.ceil(int(meta.num_train) / int(config.data.batch_size))
    return {"steps": np.float32(0), "steps_per_epoch": np.float32(spe)}


def _defaults():
    c = ml_collections.ConfigDict()
    c.name = "hill"
    c.variant = "hill"  # "hill" | "splc"
    c.lamb = 1.5  # Hill: the negatives' weight (lambda - p) p^2
    c.margin = 1.0  # both: subtracted from positive logits
    c.gamma = 2.0  # both: the focal exponent
    c.tau = 0.6  # SPLC: recall threshold
    c.change_epoch = 1.0  # SPLC: epochs before the first correction
    return c


METHODS.add("hill", Method(
    name="hill",
    description="Hill loss / SPLC for missing labels (Zhang et al. 2021): focal margin positives, robust negatives",
    defaults=_defaults, build_model=standard_model, loss=_loss, scores=sigmoid_scores,
    phases=lambda cfg: (TrainPhase("train", update_state=_update_state),), init_state=_init_state))


# ---- pseudo_label -------------------------------------------------------------------------------------


def _pl_defaults():
    from ltjax.methods.base import phase_config

    c = ml_collections.ConfigDict()
    c.name = "pseudo_label"
    c.threshold = 0.9  # an unlabeled entry with sigma(z) above it becomes a positive
    c.phases = ml_collections.ConfigDict()
    c.phases.train = phase_config()
    c.phases.retrain = phase_config()
    return c


def _pl_init_state(config, meta, dataset, outputs):
    return {"pseudo": np.asarray(dataset.split("train").labels, np.float32)}


def _pl_collect(outputs, batch):
    return {"p": jax.nn.sigmoid(outputs["logits"].astype(jnp.float32))}


def _pl_finish(ctx):
    from ltjax.methods.base import PassResult

    threshold = float(ctx.config.method.threshold)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"method.threshold must lie in (0, 1), got {threshold}")
    observed = np.asarray(ctx.labels, np.float32)
    added = (observed < 0.5) & (np.asarray(ctx.gathered["p"]) > threshold)
    pseudo = np.maximum(observed, added.astype(np.float32))
    return PassResult(state={"pseudo": pseudo}, info={"pseudo_positives": float(added.sum()),
                                                      "observed_positives": float(observed.sum())})


def _bce_observed(outputs, batch, stats, cfg, state=None):
    from ltjax import losses

    return losses.masked_mean(losses.sigmoid_bce(outputs["logits"], jnp.asarray(batch["labels"], jnp.float32)),
                              batch.get("mask")), {}


def _bce_pseudo(outputs, batch, stats, cfg, state=None):
    from ltjax import losses

    y = jnp.take(state["pseudo"], jnp.asarray(batch["index"], jnp.int32), axis=0)
    return losses.masked_mean(losses.sigmoid_bce(outputs["logits"], y), None), {}


def _pl_phases(cfg):
    from ltjax.methods.base import PassPhase

    return (TrainPhase("train"), PassPhase("pseudo", finish=_pl_finish, collect=_pl_collect),
            TrainPhase("retrain", loss=_bce_pseudo))


METHODS.add("pseudo_label", Method(
    name="pseudo_label",
    description="threshold pseudo-labelling: BCE, then unlabeled entries above a threshold become positives, BCE again",
    defaults=_pl_defaults, build_model=standard_model, loss=_bce_observed, scores=sigmoid_scores,
    phases=_pl_phases, init_state=_pl_init_state))
