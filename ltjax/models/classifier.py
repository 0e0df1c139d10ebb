"""The model composition every registered model shares, plus the helpers their builders use.

``Backbone(trunk, neck)`` maps inputs to the feature vector the classifier head reads;
``Classifier(backbone, head)`` adds the head and returns ``{"logits", "features"}``.  Methods that
replace the head (e.g. HMT-Net's per-group heads) reuse ``Backbone`` unchanged.  This module also
owns the config resolution, the frozen-trunk mask (``trunk_trainable_mask``) (defaults + overrides, unknown fields rejected) and the dtype / shape
checks the ``build`` functions of ``mlp.py`` and ``resnet.py`` share.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

COMPUTE_DTYPES = ("float32", "bfloat16")


class Backbone(nn.Module):
    """Feature extractor: ``trunk`` (e.g. a ResNet feature map or MLP hidden layers), then ``neck``.

    ``__call__(x, *, train) -> [B, D]`` features (in the compute dtype).  ``neck=None`` means the
    trunk's output already is the feature vector.  Parameters live under ``trunk`` and ``neck``.
    """

    trunk: nn.Module
    neck: nn.Module | None = None

    def __call__(self, x, *, train: bool):
        y = self.trunk(x, train=train)
        if self.neck is not None:
            y = self.neck(y, train=train)
        if y.ndim != 2:
            raise ValueError(
                f"Backbone must produce [B, D] features, got shape {y.shape}; a trunk that returns a "
                "feature map needs a neck (e.g. 'gap' or 'pfc') that pools it"
            )
        return y


class Classifier(nn.Module):
    """``backbone`` features -> ``head`` logits.

    ``__call__(x, *, train) -> {"logits": [B, C] float32, "features": [B, D]}``.  The head is
    called as ``head(features, train=train)`` so heads that behave differently in training (noise,
    dropout) fit the same slot.
    """

    backbone: nn.Module
    head: nn.Module

    def __call__(self, x, *, train: bool):
        features = self.backbone(x, train=train)
        logits = self.head(features, train=train)
        return {"logits": jnp.asarray(logits, jnp.float32), "features": features}


def resolve_compute_dtype(dtype: Any) -> jnp.dtype:
    """``dtype`` (a jnp dtype or its name) as a numpy dtype; only float32 and bfloat16 are allowed."""
    try:
        resolved = jnp.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype must be one of {COMPUTE_DTYPES}, got {dtype!r}")
    return resolved


def resolve_model_config(
    model_cfg: Mapping[str, Any] | None, defaults: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
    """``defaults`` overridden by the fields of ``model_cfg``.

    A field that the model does not have, or a ``name`` that is not the model's, raises a
    ``ValueError`` naming it and listing the valid fields, so a typo never passes silently.
    """
    resolved = ml_collections.ConfigDict(defaults.to_dict())
    if model_cfg is None:
        return resolved
    items = model_cfg.items() if isinstance(model_cfg, (Mapping, ml_collections.ConfigDict)) else None
    if items is None:
        raise TypeError(f"model config must be a ConfigDict or a mapping, got {type(model_cfg).__name__}")
    for key, value in items:
        if key not in resolved:
            valid = ", ".join(sorted(resolved.keys()))
            raise ValueError(f"model {defaults.name!r} has no config field {key!r}; valid fields: {valid}")
        if key == "name" and value != defaults.name:
            raise ValueError(
                f"model config names {value!r} but is being built as {defaults.name!r}; use "
                "ltjax.models.build_model, which picks the builder from model.name"
            )
        resolved[key] = value
    return resolved


def check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return int(num_classes)


def check_input_shape(input_shape: Any, rank: int, what: str) -> tuple[int, ...]:
    """``input_shape`` (one example, no batch axis) as a tuple of ``rank`` positive ints."""
    try:
        shape = tuple(int(d) for d in input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be a tuple of ints, got {input_shape!r}") from None
    if len(shape) != rank or any(d < 1 for d in shape):
        raise ValueError(f"{what}; got input_shape={shape} (give the shape of ONE example, without the batch axis)")
    return shape


def trunk_trainable_mask(params, frozen: set[str], what: str) -> Any:
    """Bool pytree shaped like ``params``: False exactly for parameters under ``backbone/trunk/<m>`` for a
    module name ``m`` in ``frozen`` (found anywhere in a path, so it also works inside wrappers such as
    HMT-Net).  ``what`` names the setting for the error raised when a frozen module is absent (params of
    another model)."""
    found: set[str] = set()

    def is_trainable(path, _leaf) -> bool:
        keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        for j in range(len(keys) - 2):
            if keys[j] == "backbone" and keys[j + 1] == "trunk" and keys[j + 2] in frozen:
                found.add(keys[j + 2])
                return False
        return True

    mask = jax.tree_util.tree_map_with_path(is_trainable, params)
    if found != set(frozen):
        raise ValueError(
            f"{what} freezes {sorted(frozen)} but params lack {sorted(set(frozen) - found)} under "
            "backbone/trunk; pass variables['params'] of a model built from the same config"
        )
    return mask
