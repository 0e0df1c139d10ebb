"""Class-balanced (CB) loss: BCE or focal loss weighted by the effective number of samples."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.losses.base import (
    ClassStats,
    check_choice,
    check_range,
    focal_factor,
    masked_mean,
    prepare,
    register_loss,
    require_stats,
    sigmoid_bce,
    target_logits,
)

CB_MODES = ("by_class", "average_n", "average_w", "min_n")


def cb_class_weights(stats: ClassStats, beta: float) -> np.ndarray:
    """w_c = (1 - beta) / (1 - beta^{n_c}) per class [C] (float64; n_c floored at 1)."""
    return (1.0 - beta) / (1.0 - np.power(beta, stats.effective_counts()))


def cb_weights(labels: jax.Array, stats: ClassStats, beta: float, mode: str) -> jax.Array:
    """CB weights broadcastable to [B, C] for multi-hot ``labels`` (0 at unknown entries).

    'by_class': w_c for every entry of class c ([C]).  Per-example modes ([B, 1], applied to all of an
    example's classes): 'average_w' the mean of w_c over the example's positive classes; 'average_n'
    (1 - beta)/(1 - beta^{n_bar}) with n_bar the mean n_c over its positives; 'min_n' the same with
    the smallest n_c over its positives.  An example without a (known) positive gets 1 - beta, the
    weight of an infinitely frequent class (the limit n -> inf).
    """
    check_choice("cb", "mode", mode, CB_MODES)
    check_range("cb", "beta", beta, 0.0, 1.0, high_open=True)
    w_class = cb_class_weights(stats, beta)
    if mode == "by_class":
        return jnp.asarray(w_class, jnp.float32)
    counts = jnp.asarray(stats.effective_counts(), jnp.float32)
    pos = labels > 0.5
    num_pos = jnp.sum(pos, axis=1, keepdims=True)
    has_pos = num_pos > 0
    safe_num = jnp.maximum(num_pos, 1).astype(jnp.float32)
    if mode == "average_w":
        w = jnp.sum(jnp.where(pos, jnp.asarray(w_class, jnp.float32), 0.0), axis=1, keepdims=True) / safe_num
    else:
        if mode == "average_n":
            n = jnp.sum(jnp.where(pos, counts, 0.0), axis=1, keepdims=True) / safe_num
        else:  # min_n
            n = jnp.min(jnp.where(pos, counts, jnp.inf), axis=1, keepdims=True)
        n = jnp.where(has_pos, n, 1.0)
        w = (1.0 - beta) / (1.0 - jnp.power(jnp.float32(beta), n))
    return jnp.where(has_pos, w, jnp.float32(1.0 - beta))


@register_loss("cb", needs_stats=True, beta=0.9, mode="average_w", gamma=0.0, balance=1.0)
def cb_loss(logits, labels, mask, stats: ClassStats | None, *, beta: float, mode: str, gamma: float,
            balance: float) -> jax.Array:
    """Class-balanced loss (Cui et al.), multi-label form of the DB reference code.

    Formula: l_kc = balance * (1 - p_t)^gamma * w_kc * BCE(z_kc, y_kc) with class weights
    w_c = (1 - beta)/(1 - beta^{n_c}) combined per ``mode`` (see ``cb_weights``: by_class, average_n,
    average_w, min_n) and applied to positives and negatives alike.  gamma = 0, balance = 1 is CB-BCE;
    CB-focal as in the DB code is gamma=2.0, balance=2.0 (gradient through p_t).  beta = 0 gives
    weights 1, i.e. BCE.
    Reduction: mean over the B*C (known) entries.
    Defaults: beta=0.9, mode='average_w', gamma=0.0, balance=1.0.  Needs ``stats``; n_c floored at 1.
    """
    check_range("cb", "gamma", gamma, 0.0)
    check_range("cb", "balance", balance, 0.0, low_open=True)
    z, y, known = prepare("cb", logits, labels, mask)
    stats = require_stats(stats, "cb", z.shape[1])
    w = cb_weights(y, stats, beta, mode)
    values = balance * focal_factor(target_logits(z, y), gamma) * w * sigmoid_bce(z, y)
    return masked_mean(values, known)
