"""The 'mlp' model: hidden Dense layers on feature-vector inputs [B, D_in] (tabular / text features).

Each hidden layer is ``Dense -> norm -> activation -> dropout``: norm is 'none', 'layer'
(LayerNorm, eps 1e-5) or 'batch' (BatchNorm, momentum 0.9, eps 1e-5, batch statistics in training);
activation is 'relu' or 'gelu' (the exact erf form, as torch's default); dropout is applied after
each hidden activation and only when ``train`` is True.  Hidden Dense layers keep Flax's default
initialisation (kernel lecun-normal, bias 0); the head is ``LinearHead`` (N(0, 0.01), bias 0), so
the features are the last hidden activations (the input itself when ``hidden=()``).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ltjax.models.classifier import (
    Backbone,
    Classifier,
    check_input_shape,
    check_num_classes,
    resolve_compute_dtype,
    resolve_model_config,
)
from ltjax.models.heads import make_head
from ltjax.models.necks import batch_norm

ACTIVATIONS = {"relu": nn.relu, "gelu": lambda x: nn.gelu(x, approximate=False)}
NORMS = ("none", "layer", "batch")


def _check_options(hidden: Sequence[int], dropout: float, activation: str, norm: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown mlp activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown mlp norm {norm!r}; choose one of {', '.join(NORMS)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"mlp dropout must be in [0, 1), got {dropout}")
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in hidden):
        raise ValueError(f"mlp hidden must be a tuple of positive ints (widths), got {tuple(hidden)!r}")


class MLP(nn.Module):
    """Hidden layers ``dense_i`` / ``norm_i``: [B, D_in] -> [B, hidden[-1]] (compute dtype).

    ``in_features``, when given, is checked against the input's last axis.
    """

    hidden: tuple[int, ...] = (256,)
    dropout: float = 0.0
    activation: str = "relu"
    norm: str = "none"
    in_features: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        _check_options(self.hidden, self.dropout, self.activation, self.norm)
        if x.ndim != 2:
            raise ValueError(
                f"the 'mlp' model expects feature vectors [B, D], got shape {x.shape}; flatten the inputs "
                "or pick an image model (e.g. model.name='resnet50') for [B, H, W, C] images"
            )
        if self.in_features is not None and x.shape[-1] != self.in_features:
            raise ValueError(
                f"the 'mlp' model was built for {self.in_features} input features, got shape {x.shape}; "
                "build it with the dataset's input_shape"
            )
        act = ACTIVATIONS[self.activation]
        x = jnp.asarray(x, self.dtype)
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32, name=f"dense_{i}")(x)
            if self.norm == "layer":
                x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32, name=f"norm_{i}")(x)
            elif self.norm == "batch":
                x = batch_norm(not train, self.dtype, f"norm_{i}")(x)
            x = act(x)
            if self.dropout > 0:
                x = nn.Dropout(rate=self.dropout, deterministic=not train)(x)
        return x


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "mlp"
    c.hidden = (256,)  # widths of the hidden layers; () = a linear model on the inputs
    c.dropout = 0.0  # after each hidden activation, training only
    c.activation = "relu"  # "relu" | "gelu"
    c.norm = "none"  # "none" | "layer" | "batch"
    c.head = "linear"  # "linear" (N(0, 0.01) init, bias 0) | "cosine" (normalised, LDAM)
    return c


def build(model_cfg, num_classes: int, input_shape: tuple, dtype: Any = jnp.float32, vocab_size: int = 0) -> nn.Module:
    """``Classifier(Backbone(MLP), LinearHead)`` for inputs of shape ``input_shape == (D_in,)``."""
    cfg = resolve_model_config(model_cfg, defaults())
    num_classes = check_num_classes(num_classes)
    (d_in,) = check_input_shape(input_shape, 1, "the 'mlp' model takes feature vectors, input_shape (D,)")
    dtype = resolve_compute_dtype(dtype)
    hidden = tuple(cfg.hidden)
    _check_options(hidden, float(cfg.dropout), cfg.activation, cfg.norm)
    trunk = MLP(
        hidden=hidden,
        dropout=float(cfg.dropout),
        activation=cfg.activation,
        norm=cfg.norm,
        in_features=d_in,
        dtype=dtype,
    )
    return Classifier(backbone=Backbone(trunk=trunk), head=make_head(cfg.head, num_classes, dtype))


def trainable_mask(model_cfg, params) -> Any:
    """Every parameter of the MLP trains."""
    resolve_model_config(model_cfg, defaults())
    return jax.tree.map(lambda _: True, params)
