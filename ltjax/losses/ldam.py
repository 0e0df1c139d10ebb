"""LDAM (label-distribution-aware margin) loss in its multi-label, per-class sigmoid form."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.losses.base import (
    ClassStats,
    check_range,
    masked_mean,
    prepare,
    register_loss,
    require_stats,
    sigmoid_bce,
)


def ldam_margins(stats: ClassStats, max_m: float) -> np.ndarray:
    """m_c = C_m / n_c^{1/4} with C_m chosen so the largest margin (the rarest class) is ``max_m``
    [C] (float64; n_c floored at 1)."""
    raw = stats.effective_counts() ** -0.25
    return max_m * raw / raw.max()


@register_loss("ldam", needs_stats=True, max_m=0.5, s=30.0)
def ldam_loss(logits, labels, mask, stats: ClassStats | None, *, max_m: float, s: float) -> jax.Array:
    """Multi-label LDAM: the class margin is subtracted from positive logits, then BCE on scaled logits.

    Formula: l_kc = BCE(s * (z_kc - m_c y_kc), y_kc), m_c = max_m * n_c^{-1/4} / max_j n_j^{-1/4}
    (LDAM's margin C/n_c^{1/4} with the single-label code's max-margin scaling).  Each class is a
    binary problem, so the softmax of single-label LDAM becomes a sigmoid; negatives get no margin.
    Reduction: mean over the B*C (known) entries.
    Defaults: max_m=0.5, s=30.0 (max_m = 0, s = 1 gives BCE).  Needs ``stats``.
    """
    check_range("ldam", "max_m", max_m, 0.0)
    check_range("ldam", "s", s, 0.0, low_open=True)
    z, y, known = prepare("ldam", logits, labels, mask)
    stats = require_stats(stats, "ldam", z.shape[1])
    m = jnp.asarray(ldam_margins(stats, max_m), jnp.float32)
    return masked_mean(sigmoid_bce(s * (z - m * y), y), known)
