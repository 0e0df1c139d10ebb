"""ZLPR (zero-bounded log-sum-exp and pairwise rank-based) multi-label loss."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax.losses.base import ClassStats, prepare, register_loss


def _log1p_sum_exp(x: jax.Array, include: jax.Array) -> jax.Array:
    """log(1 + sum_{c: include} e^{x_c}) per row, as a logsumexp over [0, x_included] (stable)."""
    x = jnp.where(include, x, -jnp.inf)
    x = jnp.concatenate([jnp.zeros((x.shape[0], 1), x.dtype), x], axis=1)
    return jax.nn.logsumexp(x, axis=1)


@register_loss("zlpr")
def zlpr_loss(logits, labels, mask, stats: ClassStats | None) -> jax.Array:
    """ZLPR loss (Su et al. 2022).

    Formula: per example k, l_k = log(1 + sum_{c in neg_k} e^{z_kc}) + log(1 + sum_{c in pos_k} e^{-z_kc}),
    computed as logsumexp over [0, z] (finite at any logit).  Unknown entries are in neither set.
    Reduction: mean over the examples of the batch (over the examples with at least one known label
    when a mask is given; an example with none contributes 0).
    Defaults: no hyper-parameters; ``stats`` is not used.
    """
    del stats
    z, y, known = prepare("zlpr", logits, labels, mask)
    pos = y > 0.5
    neg = ~pos
    if known is not None:
        pos = pos & known
        neg = neg & known
    per_example = _log1p_sum_exp(z, neg) + _log1p_sum_exp(-z, pos)
    if known is None:
        return jnp.mean(per_example)
    counted = jnp.any(known, axis=1)
    return jnp.sum(jnp.where(counted, per_example, 0.0)) / jnp.maximum(jnp.sum(counted.astype(jnp.float32)), 1.0)
