"""Classifier heads: the layer that maps backbone features to per-class logits."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
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
