"""Necks: pool a backbone feature map [B, H, W, C] into the feature vector [B, D] the head reads.

``PFCNeck`` is the DB-loss / HMT-Net neck (REFERENCE s.2): global average pool -> Linear(C -> D)
-> BatchNorm1d -> Dropout, with no ReLU.  Its BatchNorm uses batch statistics in training (it is
not covered by the backbone's ``norm_eval``).  ``GAPNeck`` is the global pool alone.

Both take a ``pool``: ``"avg"`` (global average, the recipe's) or ``"max"`` (global max, which keeps a
small object's response undiluted by the background, e.g. 20-px glyphs on an 80-px canvas).  A neck
also accepts an already pooled ``[B, C]`` input (the pooled vectors a frozen-feature run stores, see
:mod:`ltjax.training.frozen_features`) and then skips its pooling: ``neck(pool(map)) == neck(map)``.

BatchNorm here follows torch's conventions: ``momentum=0.9`` (torch's 0.1) and ``epsilon=1e-5``.
One difference remains, inherited from Flax: the running variance is updated with the biased batch
variance (torch uses the unbiased one, a factor n/(n-1)); normalisation in training is identical.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(use_running_average: bool, dtype: Any, name: str, zero_scale: bool = False) -> nn.BatchNorm:
    """torch-equivalent BatchNorm (momentum 0.1 in torch's convention, eps 1e-5), float32 parameters."""
    return nn.BatchNorm(
        use_running_average=use_running_average,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=jnp.float32,
        use_fast_variance=False,
        scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
        name=name,
    )


POOLS = ("avg", "max")


def global_average_pool(x, dtype: Any):
    """Mean over H and W of an NHWC map, accumulated in float32 and returned in ``dtype``."""
    if x.ndim != 4:
        raise ValueError(f"global average pooling expects an NHWC feature map [B, H, W, C], got shape {x.shape}")
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(dtype)


def global_pool(x, kind: str, dtype: Any):
    """``kind`` ("avg" | "max") pooling of an NHWC map over H and W -> [B, C] in ``dtype``; a [B, C] input
    counts as already pooled and is returned (cast)."""
    if kind not in POOLS:
        raise ValueError(f"unknown neck pooling {kind!r}; choose one of {', '.join(POOLS)}")
    if x.ndim == 2:
        return jnp.asarray(x, dtype)
    if kind == "avg":
        return global_average_pool(x, dtype)
    if x.ndim != 4:
        raise ValueError(f"global max pooling expects an NHWC feature map [B, H, W, C], got shape {x.shape}")
    return jnp.max(x, axis=(1, 2)).astype(dtype)


class GAPNeck(nn.Module):
    """Global pool only (``pool``: "avg", the default, or "max"): [B, H, W, C] -> [B, C].  No parameters."""

    dtype: Any = jnp.float32
    pool: str = "avg"

    def __call__(self, x, *, train: bool):
        del train
        return global_pool(x, self.pool, self.dtype)


class PFCNeck(nn.Module):
    """GAP -> ``fc`` Dense(features) -> ``bn`` BatchNorm -> Dropout(dropout); no activation.

    ``fc`` is initialised as in the DB-loss reference: kaiming-normal with fan_out
    (std = sqrt(2 / features)) and bias 0; ``bn`` scale 1, bias 0.  Dropout draws from the
    ``'dropout'`` rng and is active only when ``train`` is True.
    """

    features: int = 256
    dropout: float = 0.5
    dtype: Any = jnp.float32
    pool: str = "avg"

    @nn.compact
    def __call__(self, x, *, train: bool):
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"PFC neck dropout must be in [0, 1), got {self.dropout}")
        y = global_pool(x, self.pool, self.dtype)
        y = nn.Dense(
            self.features,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
            bias_init=nn.initializers.zeros,
            name="fc",
        )(y)
        y = batch_norm(not train, self.dtype, "bn")(y)
        return nn.Dropout(rate=self.dropout, deterministic=not train)(y)


NECKS = ("pfc", "gap")


def make_neck(kind: str, *, features: int, dropout: float, dtype: Any, pool: str = "avg") -> nn.Module:
    """The neck named ``kind`` ('pfc' or 'gap') with global ``pool`` ('avg' or 'max'); ``features`` /
    ``dropout`` only apply to 'pfc'."""
    if pool not in POOLS:
        raise ValueError(f"unknown model.neck_pool {pool!r}; choose one of {', '.join(POOLS)}")
    if kind == "pfc":
        if not (isinstance(features, int) and features >= 1):
            raise ValueError(f"neck_dim must be a positive int, got {features!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"neck_dropout must be in [0, 1), got {dropout}")
        return PFCNeck(features=features, dropout=float(dropout), dtype=dtype, pool=pool)
    if kind == "gap":
        return GAPNeck(dtype=dtype, pool=pool)
    raise ValueError(f"unknown neck {kind!r}; choose one of {', '.join(NECKS)}")
