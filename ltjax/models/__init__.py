"""The model registry: ``MODELS`` maps a config name to a ``ModelSpec``.

Registered: 'mlp' (feature vectors), 'resnet18' / 'resnet50' (torchvision layout, ImageNet weights from
.pth/.safetensors), 'densenet121' (torchvision layout and weights, CheXNet's backbone),
'efficientnet_lite0' (ImageNet weights fetched offline), 'glyphnet' (small objects, pretrained by ltjax
on single glyphs), 'text_pool' / 'text_bilstm'
(token ids; optional GloVe 50d initialisation) and 'minilm' (frozen all-MiniLM-L6-v2 text encoder).

Every registered model is a Flax Linen module with
``__call__(x, *, train) -> {"logits": [B, C] float32, "features": [B, D]}`` whose variables are
'params' (always float32) and, when it has BatchNorm, 'batch_stats' (apply with
``mutable=['batch_stats']`` in training).  Randomness comes only from ``rngs={'dropout': key}``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ltjax.models import densenet, glyphnet, mlp, resnet
from ltjax.models import efficientnet  # 'efficientnet_lite0' (registers its weights and photo assets)
from ltjax.models import text  # 'text_pool', 'text_bilstm'
from ltjax.models import minilm  # 'minilm' (all-MiniLM-L6-v2 encoder; registers its weight assets)
from ltjax.models.classifier import Backbone, Classifier
from ltjax.models.heads import LinearHead
from ltjax.models.mlp import MLP
from ltjax.models.necks import GAPNeck, PFCNeck
from ltjax.models.resnet import BasicBlock, Bottleneck, ResNet
from ltjax.registry import Registry


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to configure, build and freeze one model.

    ``defaults()`` returns all of the model's config fields (``name`` included);
    ``build(model_cfg, num_classes, input_shape, dtype, vocab_size=0)`` returns the module
    (``input_shape`` is one example's shape, without the batch axis; ``dtype`` the compute dtype;
    ``vocab_size`` the number of token ids of a text dataset, 0 otherwise);
    ``trainable_mask(model_cfg, params)`` returns a bool pytree shaped like ``params``, False for
    frozen parameters (the optimizer excludes them from updates and weight decay);
    ``init_hook(model_cfg, variables, dataset)``, optional, is called once on the host copies
    ``{'params', 'batch_stats'}`` of a freshly initialised model (never on resume) and returns None
    (nothing to change) or ``(variables, info)`` -- weights that need a download or the dataset (the
    MiniLM encoder, GloVe rows for the text vocabulary); ``info`` (numbers) goes to the run log.
    ``load_pretrained(variables, pretrained, model_cfg)``, optional, returns ``variables`` with the
    weights ``model.pretrained`` names (models without it use :data:`PRETRAINED_LOADERS`).
    """

    defaults: Callable[[], ml_collections.ConfigDict]
    build: Callable[..., nn.Module]
    trainable_mask: Callable[[Any, Any], Any]
    init_hook: Callable[[Any, Any, Any], Any] | None = None
    load_pretrained: Callable[[Any, Any, Any], Any] | None = None


MODELS: Registry[ModelSpec] = Registry("model")
MODELS.add("mlp", ModelSpec(mlp.defaults, mlp.build, mlp.trainable_mask))
MODELS.add("resnet18", ModelSpec(resnet.defaults18, resnet.build18, resnet.trainable_mask18))
MODELS.add("resnet50", ModelSpec(resnet.defaults50, resnet.build50, resnet.trainable_mask50))
MODELS.add("glyphnet", ModelSpec(glyphnet.defaults, glyphnet.build, glyphnet.trainable_mask,
                                 load_pretrained=glyphnet.load_pretrained_trunk))
MODELS.add("densenet121", ModelSpec(densenet.defaults, densenet.build, densenet.trainable_mask,
                                    load_pretrained=densenet.load_pretrained))
MODELS.add("efficientnet_lite0", ModelSpec(efficientnet.defaults, efficientnet.build, efficientnet.trainable_mask))
MODELS.add("text_pool", ModelSpec(text.pool_defaults, text.build_pool, text.pool_trainable_mask, text.pool_init_hook))
MODELS.add(
    "text_bilstm", ModelSpec(text.bilstm_defaults, text.build_bilstm, text.bilstm_trainable_mask, text.bilstm_init_hook)
)
MODELS.add("minilm", ModelSpec(minilm.defaults, minilm.build, minilm.trainable_mask, minilm.init_hook))


def _name_of(model_cfg) -> str:
    try:
        return model_cfg["name"]
    except (KeyError, TypeError, AttributeError):
        names = ", ".join(MODELS.names())
        raise ValueError(f"the model config has no 'name'; set model.name to one of {names}") from None


def model_defaults(name: str) -> ml_collections.ConfigDict:
    """All config fields of model ``name`` with their defaults (raises KeyError for unknown names)."""
    return MODELS.get(name).defaults()


def build_model(
    model_cfg, num_classes: int, input_shape: tuple, dtype: Any = jnp.float32, vocab_size: int = 0
) -> nn.Module:
    """The module selected by ``model_cfg.name``; fields missing from ``model_cfg`` take their defaults."""
    return MODELS.get(_name_of(model_cfg)).build(model_cfg, num_classes, input_shape, dtype, vocab_size=vocab_size)


def trainable_mask(model_cfg, params) -> Any:
    """Bool pytree shaped like ``params``: False for the parameters ``model_cfg`` freezes."""
    return MODELS.get(_name_of(model_cfg)).trainable_mask(model_cfg, params)


def load_pretrained(model_name: str, variables, pretrained, model_cfg=None) -> Any:
    """``variables`` of model ``model_name`` with its backbone taken from ``model.pretrained``.

    A model whose ``ModelSpec`` has ``load_pretrained`` uses it (glyphnet: the keyword 'glyphs');
    ResNets read a torchvision state dict file (``load_pretrained_backbone``); other models use the
    loader they registered in :data:`PRETRAINED_LOADERS` (e.g. 'efficientnet_lite0', which also takes
    the keyword 'imagenet').  Raises ``ValueError`` for a model without pretrained weights."""
    from ltjax.models.pretrained import PRETRAINED_LOADERS, load_pretrained_backbone

    spec = MODELS.get(model_name)
    if spec.load_pretrained is not None:
        return spec.load_pretrained(variables, pretrained, model_cfg)
    if model_name in ("resnet18", "resnet50"):
        return load_pretrained_backbone(variables, pretrained, int(model_name[len("resnet"):]))
    if model_name not in PRETRAINED_LOADERS:
        supported = ", ".join(sorted(["resnet18", "resnet50", *PRETRAINED_LOADERS,
                                      *(n for n in MODELS.names() if MODELS.get(n).load_pretrained)]))
        raise ValueError(f"model.pretrained is supported for the models {supported}, not {model_name!r}")
    return PRETRAINED_LOADERS[model_name](variables, pretrained)


def load_configured_pretrained(model_cfg, variables) -> Any:
    """Host ``variables`` with the weights ``model_cfg.pretrained`` names (unchanged when it is empty)."""
    import os

    path = model_cfg.get("pretrained", "")
    if not path:
        return variables
    return load_pretrained(model_cfg.name, variables, os.path.expanduser(path), model_cfg)


__all__ = [
    "MODELS",
    "ModelSpec",
    "model_defaults",
    "build_model",
    "trainable_mask",
    "load_pretrained",
    "load_configured_pretrained",
    "Backbone",
    "Classifier",
    "LinearHead",
    "MLP",
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "PFCNeck",
    "GAPNeck",
]
