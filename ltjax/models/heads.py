"""Classifier heads: the layer that maps backbone features to per-class logits.

``model.head`` selects one: "linear" (``LinearHead``, the DB/HMT head) or "cosine" (``CosineHead``,
LDAM's normalised classifier, whose logits are cosines in [-1, 1] that the LDAM loss scales by s).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class LinearHead(nn.Module):
    """``Dense(num_classes)`` on [B, D] features, kernel ~ N(0, init_std^2), bias 0 (REFERENCE s.2).

    ``__call__(features, *, train=False) -> [B, C]`` float32 logits; ``train`` is accepted (and
    unused) so every head has the same call signature.  Parameters: ``fc/kernel`` [D, C] and
    ``fc/bias`` [C], always float32; the matmul runs in ``dtype``.
    """

    num_classes: int
    init_std: float = 0.01
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features, *, train: bool = False):
        del train  # a linear head behaves the same in training and evaluation
        if features.ndim != 2:
            raise ValueError(f"LinearHead expects [B, D] features, got shape {features.shape}")
        logits = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.normal(stddev=self.init_std),
            bias_init=nn.initializers.zeros,
            name="fc",
        )(features)
        return logits.astype(jnp.float32)


def _uniform_pm1(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0)


class CosineHead(nn.Module):
    """Cosine classifier: logits = <f / |f|, w_c / |w_c|> (LDAM's ``NormedLinear``), no bias.

    ``__call__(features, *, train=False) -> [B, C]`` float32 logits in [-1, 1].  Parameter
    ``kernel`` [D, C] float32, initialised uniform in [-1, 1] (only each column's direction matters).
    """

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features, *, train: bool = False):
        del train
        if features.ndim != 2:
            raise ValueError(f"CosineHead expects [B, D] features, got shape {features.shape}")
        kernel = self.param("kernel", _uniform_pm1, (features.shape[-1], self.num_classes), jnp.float32)
        f = features.astype(jnp.float32)
        f = f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
        w = kernel / jnp.maximum(jnp.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
        return jnp.dot(f.astype(self.dtype), w.astype(self.dtype)).astype(jnp.float32)


HEADS = ("linear", "cosine")


def make_head(name: str, num_classes: int, dtype: Any = jnp.float32) -> nn.Module:
    """The head selected by ``model.head``."""
    if name == "linear":
        return LinearHead(num_classes, dtype=dtype)
    if name == "cosine":
        return CosineHead(num_classes, dtype=dtype)
    raise ValueError(f"unknown model.head {name!r}; choose one of: {', '.join(HEADS)}")
