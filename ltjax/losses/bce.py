"""Binary cross-entropy (ERM) and its per-class re-weighting (RW, inverse class frequency)."""
from __future__ import annotations

import jax
import numpy as np

from ltjax.losses.base import (
    ClassStats,
    check_choice,
    masked_mean,
    prepare,
    register_loss,
    require_stats,
    sigmoid_bce,
)

RW_MODES = ("inv", "sqrt_inv")
RW_NORMALIZE = ("none", "mean", "max")


@register_loss("bce")
def bce_loss(logits, labels, mask, stats: ClassStats | None) -> jax.Array:
    """Binary cross-entropy (ERM).

    Formula: l_kc = -[y log sigma(z) + (1 - y) log sigma(-z)] (log-sigmoid form).
    Reduction: mean over the B*C entries (over the known entries when a mask is given).
    Defaults: no hyper-parameters; ``stats`` is not used.
    """
    del stats
    z, y, known = prepare("bce", logits, labels, mask)
    return masked_mean(sigmoid_bce(z, y), known)


def rw_class_weights(stats: ClassStats, mode: str, normalize: str) -> np.ndarray:
    """Per-class RW weights [C] (float32): N/n_c ('inv') or sqrt(N/n_c) ('sqrt_inv'), then divided by
    nothing ('none'), their mean over classes ('mean', so the average class weight is 1) or their
    maximum ('max', so the rarest class has weight 1).  n_c is floored at 1."""
    check_choice("rw", "mode", mode, RW_MODES)
    check_choice("rw", "normalize", normalize, RW_NORMALIZE)
    w = stats.num_train / stats.effective_counts()
    if mode == "sqrt_inv":
        w = np.sqrt(w)
    if normalize == "mean":
        w = w / w.mean()
    elif normalize == "max":
        w = w / w.max()
    return w.astype(np.float32)


@register_loss("rw", needs_stats=True, mode="inv", normalize="none")
def rw_loss(logits, labels, mask, stats: ClassStats | None, *, mode: str, normalize: str) -> jax.Array:
    """Re-weighted BCE (RW): each class's BCE (positives and negatives alike) times a class weight.

    Formula: l_kc = w_c * BCE(z_kc, y_kc), w_c = N/n_c (mode 'inv') or sqrt(N/n_c) (mode 'sqrt_inv').
    Normalisation of w (hyper-parameter ``normalize``): 'none' (default, the raw N/n_c of the
    reference formula, so the loss is on a larger scale than BCE), 'mean' (w / mean_c w: the average
    class weight is 1, BCE's scale) or 'max' (w / max_c w).
    Reduction: mean over the B*C (known) entries.
    Defaults: mode='inv', normalize='none'.  Needs ``stats``; n_c is floored at 1.
    """
    z, y, known = prepare("rw", logits, labels, mask)
    stats = require_stats(stats, "rw", z.shape[1])
    w = rw_class_weights(stats, mode, normalize)
    return masked_mean(w * sigmoid_bce(z, y), known)
