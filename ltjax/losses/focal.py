"""Focal loss on sigmoid outputs (with the DB code's balance multiplier)."""
from __future__ import annotations

import jax

from ltjax.losses.base import (
    ClassStats,
    check_range,
    focal_factor,
    masked_mean,
    prepare,
    register_loss,
    sigmoid_bce,
    target_logits,
)


@register_loss("focal", gamma=2.0, balance=2.0)
def focal_loss(logits, labels, mask, stats: ClassStats | None, *, gamma: float, balance: float) -> jax.Array:
    """Sigmoid focal loss.

    Formula: l_kc = balance * (1 - p_t)^gamma * BCE(z_kc, y_kc), p_t = sigma(z) for y = 1 and
    1 - sigma(z) for y = 0; the gradient flows through p_t.  (1 - p_t)^gamma is computed as
    exp(gamma * log sigma(-z_t)), finite at any logit.
    Reduction: mean over the B*C (known) entries.
    Defaults: gamma=2.0, balance=2.0 (the DB reference code's balance_param; balance=1 and gamma=0
    give BCE).  ``stats`` is not used.
    """
    del stats
    check_range("focal", "gamma", gamma, 0.0)
    check_range("focal", "balance", balance, 0.0, low_open=True)
    z, y, known = prepare("focal", logits, labels, mask)
    values = balance * focal_factor(target_logits(z, y), gamma) * sigmoid_bce(z, y)
    return masked_mean(values, known)
