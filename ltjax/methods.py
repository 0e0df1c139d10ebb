"""Methods: a model, a training loss and how predictions are scored, selected by ``config.method.name``.

A ``Method`` builds its Flax module from the config and the dataset metadata, turns the module's
outputs and a batch into a scalar loss (plus named auxiliary values for logging), and turns outputs
into per-class scores in [0, 1] for evaluation.  BCE/ERM is the first method; later methods
(re-weighting, DB-focal, HMT-Net, ...) register here with their own fields in ``config.method``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ltjax import losses, models
from ltjax.registry import Registry


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    description: str
    defaults: Callable[[], ml_collections.ConfigDict]
    # (config, meta, compute dtype) -> flax module whose outputs carry "logits"
    build_model: Callable[[Any, Any, Any], nn.Module]
    # (outputs, batch, stats, method_cfg) -> (loss, aux dict of scalars)
    loss: Callable[..., tuple[jax.Array, dict]]
    # outputs -> scores [B, C] in [0, 1]
    scores: Callable[[dict], jax.Array]
    # (config, params) -> pytree of bool, False for frozen parameters
    trainable_mask: Callable[[Any, Any], Any] = None

    def __post_init__(self):
        if self.trainable_mask is None:
            object.__setattr__(self, "trainable_mask", lambda config, params: models.trainable_mask(config.model, params))


METHODS: Registry[Method] = Registry("method")


def standard_model(config, meta, dtype) -> nn.Module:
    """The model named by config.model on the dataset's classes and input shape."""
    return models.build_model(config.model, meta.num_classes, meta.input_shape, dtype)


def sigmoid_scores(outputs: dict) -> jax.Array:
    return jax.nn.sigmoid(outputs["logits"].astype(jnp.float32))


def _loss_method(name: str, loss_name: str, doc: str) -> Method:
    """A method that is the standard model trained with one registered loss."""

    def defaults():
        cfg = ml_collections.ConfigDict()
        cfg.name = name
        return cfg

    def loss(outputs, batch, stats, method_cfg):
        del method_cfg
        value = losses.LOSSES.get(loss_name)(outputs["logits"], batch["labels"], batch.get("mask"), stats)
        return value, {}

    return Method(name, doc, defaults, standard_model, loss, sigmoid_scores)


METHODS.add("bce", _loss_method("bce", "bce", "binary cross-entropy (ERM)"))


def method_defaults(name: str) -> ml_collections.ConfigDict:
    return METHODS.get(name).defaults()
