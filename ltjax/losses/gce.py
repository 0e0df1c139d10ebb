"""Multi-label generalised cross-entropy (GCE, Zhang & Sabuncu 2018; LDRNet's E-step loss)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax.losses.base import (
    ClassStats,
    check_range,
    masked_mean,
    prepare,
    register_loss,
    sigmoid_bce,
    target_logits,
)


@register_loss("gce", q=0.8)
def gce_loss(logits, labels, mask, stats: ClassStats | None, *, q: float) -> jax.Array:
    """Generalised cross-entropy applied to each class's binary problem.

    Formula: l_kc = (1 - p_t^q) / q, p_t = sigma(z) for y = 1 and 1 - sigma(z) for y = 0, computed as
    -expm1(q * log sigma(z_t)) / q (finite at any logit).  This is GCE's L_q loss on the probability of
    the true binary label of every (example, class) entry; LDRNet's printed eq. 16 is garbled, this is
    the form we implement.  q -> 0 recovers BCE (q = 0 is accepted and is exactly BCE); q = 1 is the
    MAE-like 1 - p_t.
    Reduction: mean over the B*C (known) entries.
    Defaults: q=0.8.  ``stats`` is not used.
    """
    del stats
    check_range("gce", "q", q, 0.0, 1.0)
    z, y, known = prepare("gce", logits, labels, mask)
    if q == 0:
        values = sigmoid_bce(z, y)
    else:
        values = -jnp.expm1(q * jax.nn.log_sigmoid(target_logits(z, y))) / q
    return masked_mean(values, known)
