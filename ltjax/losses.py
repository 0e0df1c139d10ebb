"""Multi-label losses as pure functions of arrays, and the registry that names them.

Signature of every loss: ``loss(logits [B, C], labels [B, C] in {0,1}, mask [B, C] | None,
stats: ClassStats, **hyper_parameters) -> scalar``.  ``mask`` marks known labels (1 = known,
0 = unknown); unknown entries contribute neither loss nor gradient.  Losses compute in float32
whatever the model's compute dtype.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.registry import Registry

LOSSES: Registry[Callable[..., jax.Array]] = Registry("loss")


@dataclasses.dataclass(frozen=True)
class ClassStats:
    """Training-set statistics some losses need: n_c per class and N training examples."""

    class_counts: np.ndarray  # [C]
    num_train: int

    @classmethod
    def from_meta(cls, meta) -> "ClassStats":
        return cls(np.asarray(meta.class_counts, dtype=np.float32), int(meta.num_train))


def masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean over all entries, or over the known entries (mask == 1) when a mask is given."""
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def sigmoid_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Element-wise binary cross-entropy with logits, stable for any |z| (log-sigmoid form)."""
    return -(labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits))


@LOSSES.register("bce")
def bce(logits, labels, mask=None, stats: ClassStats | None = None):
    """Binary cross-entropy (ERM), mean over the B*C (known) entries."""
    del stats
    logits = jnp.asarray(logits, jnp.float32)
    labels = jnp.asarray(labels, jnp.float32)
    return masked_mean(sigmoid_bce(logits, labels), mask)
