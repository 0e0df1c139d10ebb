"""Distribution-balanced (DB) loss: rebalanced weights, negative-tolerant regularisation, focal term.

Each of the three parts is a switch, so R-BCE (rebalance), R-BCE-NTR (rebalance + ntr), DB-focal (all
three, the default) and plain BCE (all off) are configurations of one function.  The NTR bias b
exists only inside the loss: the model's logits (and test-time scores) are untouched.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.losses.base import (
    ClassStats,
    check_range,
    focal_factor,
    masked_mean,
    prepare,
    register_loss,
    require_stats,
    target_logits,
)


def db_bias(stats: ClassStats, kappa: float, lam: float) -> np.ndarray:
    """NTR class bias b_c = -kappa * log(N/n_c - 1) / lam  [C] (float64).

    Equivalently kappa/lam * logit(n_c/N): the class prior's logit, scaled.  n_c is clipped to
    [1, N - 1/2] here so b stays finite for a class absent from, or present in every, training example.
    """
    n = np.clip(stats.class_counts.astype(np.float64), 1.0, stats.num_train - 0.5)
    return -kappa * np.log(stats.num_train / n - 1.0) / lam


def db_rebalance_weights(labels: jax.Array, stats: ClassStats, alpha: float, beta: float, mu: float) -> jax.Array:
    """Rebalancing weights w_kc = alpha + sigmoid(beta * (r_kc - mu)), r_kc = (1/n_c) / sum_{j: y_kj=1} 1/n_j.

    r_kc is the ratio of the class-aware sampling probability to the instance-level one; it is computed
    for every class (positives and negatives alike).  ``labels`` [B, C] are multi-hot with 0 at unknown
    entries (only known positives enter the sum).  An example without a positive has r = +inf, whose
    limit gives w = alpha + 1.  n_c floored at 1.
    """
    inv = jnp.asarray(1.0 / stats.effective_counts(), jnp.float32)
    denom = jnp.sum(jnp.where(labels > 0.5, inv, 0.0), axis=1, keepdims=True)
    has_pos = denom > 0
    r = inv / jnp.where(has_pos, denom, 1.0)
    w = alpha + jax.nn.sigmoid(beta * (r - mu))
    return jnp.where(has_pos, w, jnp.float32(alpha + 1.0))


@register_loss(
    "db",
    needs_stats=True,
    rebalance=True, alpha=0.1, beta=10.0, mu=0.3,
    ntr=True, kappa=0.05, lam=5.0,
    focal=True, gamma=2.0, balance=2.0,
)
def db_loss(logits, labels, mask, stats: ClassStats | None, *, rebalance: bool, alpha: float, beta: float,
            mu: float, ntr: bool, kappa: float, lam: float, focal: bool, gamma: float, balance: float) -> jax.Array:
    """Distribution-balanced loss (Wu et al., ECCV 2020).

    Formula: with w_kc = alpha + sigmoid(beta (r_kc - mu)) if ``rebalance`` else 1 (``db_rebalance_weights``),
    if ``ntr``: z' = z + b_c (b_c = -kappa log(N/n_c - 1)/lam, ``db_bias``); positives keep z' and w,
    negatives use lam * z' and w / lam; else z' = z.  Then l_kc = w' * BCE(z'', y), times
    balance * (1 - p_t)^gamma if ``focal`` with p_t = exp(-BCE(z'', y)) (unweighted; gradient flows
    through p_t).
    Reduction: mean over the B*C (known) entries.
    Defaults (the VOC-LT setting): rebalance=True, alpha=0.1, beta=10.0, mu=0.3; ntr=True, kappa=0.05,
    lam=5.0; focal=True, gamma=2.0, balance=2.0.  COCO-LT uses mu=0.2, lam=2.0.  Needs ``stats``.
    """
    check_range("db", "beta", beta, 0.0)
    check_range("db", "lam", lam, 0.0, low_open=True)
    check_range("db", "gamma", gamma, 0.0)
    check_range("db", "balance", balance, 0.0, low_open=True)
    for name, value in (("alpha", alpha), ("mu", mu), ("kappa", kappa)):
        check_range("db", name, value)
    z, y, known = prepare("db", logits, labels, mask)
    stats = require_stats(stats, "db", z.shape[1])
    pos = y > 0.5
    w = db_rebalance_weights(y, stats, alpha, beta, mu) if rebalance else jnp.ones_like(z)
    if ntr:
        z = z + jnp.asarray(db_bias(stats, kappa, lam), jnp.float32)
        z = jnp.where(pos, z, lam * z)
        w = jnp.where(pos, w, w / lam)
    z_t = target_logits(z, y)
    values = w * -jax.nn.log_sigmoid(z_t)  # = w * BCE(z'', y) for labels in {0, 1}
    if focal:
        values = balance * focal_factor(z_t, gamma) * values
    return masked_mean(values, known)
