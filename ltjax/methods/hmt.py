"""HMT-Net (paper 000, REFERENCE section 4): head / middle / tail groups, group-wise Gaussian feature
perturbation, one classification head per group, fused global prediction.

Everything HMT-Net is in this module: ``group_sigmas`` (eq. 1), the ``HMTNet`` Flax module (eqs. 2-4
and the score fusion), ``hmt_loss`` (eqs. 5-7) and the registered method ``"hmt"``.  Configs:
``configs/hmt_voc.py``, ``configs/hmt_coco.py``, and ``configs/yeast.py:hmt`` /
``configs/synthetic_lt.py:hmt`` for the built-in data.

* Groups: the dataset's ``meta.groups`` (thresholds tau_h = ``data.groups.head_min`` = 100 and
  tau_m = ``data.groups.tail_max`` = 20 by default, or the quantile rule).
* sigma_g = lambda / (mean n_c over the classes of group g), computed once from the metadata.
* Training only: the backbone feature f gets independent noise delta_g ~ N(0, sigma_g^2 I) per group
  (drawn from the ``noise`` PRNG stream, i.e. ``fold_in(rng, step)``); evaluation uses f unchanged.
* Head F_g (own parameters, ``model.head`` kind: linear N(0, 0.01) or cosine) scores only the classes
  of group g; the group scores are scattered back to the original class order (the fused logits).
* Loss: eta * BCE(fused) + (1 - eta) * sum_g BCE_g, each BCE averaged over its classes (eq. 5/6) and
  over the batch.  Empty groups have no head and no loss term.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax import losses, models
from ltjax.methods.base import METHODS, Method, sigmoid_scores
from ltjax.models.heads import make_head


def group_sigmas(class_counts, groups, lam: float) -> tuple[float, ...]:
    """sigma_g = lam / mean_{c in g} n_c for every group of ``groups`` (0.0 for an empty group)."""
    counts = np.asarray(class_counts, dtype=np.float64)
    out = []
    for idx in groups.indices:
        if len(idx) == 0:
            out.append(0.0)
            continue
        mean = counts[idx].mean()
        if mean <= 0:
            raise ValueError("HMT-Net: a class group has mean training count 0; sigma_g = lambda / 0 is undefined")
        out.append(float(lam / mean))
    return tuple(out)


class HMTNet(nn.Module):
    """Backbone -> per-group perturbed features -> per-group heads -> fused logits.

    ``__call__(x, *, train) -> {"logits": [B, C] fused (original class order), "features": f,
    "group_logits": tuple of [B, |C_g|], "group_features": tuple of the (perturbed) f_g,
    "group_indices": the class indices of each head (static)}``.
    """

    backbone: nn.Module
    group_names: tuple[str, ...]
    group_indices: tuple[tuple[int, ...], ...]  # non-empty groups only
    sigmas: tuple[float, ...]
    num_classes: int
    head: str = "linear"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        f = self.backbone(x, train=train)
        fused = jnp.zeros((f.shape[0], self.num_classes), jnp.float32)
        group_logits, group_features = [], []
        if train:
            keys = jax.random.split(self.make_rng("noise"), len(self.group_indices))
        for g, (name, idx, sigma) in enumerate(zip(self.group_names, self.group_indices, self.sigmas)):
            f_g = f
            if train and sigma > 0:
                noise = jax.random.normal(keys[g], f.shape, jnp.float32) * sigma
                f_g = (f.astype(jnp.float32) + noise).astype(f.dtype)
            s_g = make_head(self.head, len(idx), self.dtype).copy(name=f"head_{name}")(f_g, train=train)
            fused = fused.at[:, np.asarray(idx)].set(s_g)
            group_logits.append(s_g)
            group_features.append(f_g)
        return {"logits": fused, "features": f, "group_logits": tuple(group_logits),
                "group_features": tuple(group_features), "group_indices": self.group_indices}


def hmt_loss(outputs: dict, labels, mask, group_indices, eta: float) -> jax.Array:
    """eta * BCE(fused logits, y) + (1 - eta) * sum_g BCE(s_g, y_g) (eqs. 5-7); each BCE is the mean
    over its classes and the batch (over the known entries when ``mask`` is given)."""
    labels = jnp.asarray(labels, jnp.float32)
    total = eta * losses.masked_mean(losses.sigmoid_bce(outputs["logits"], labels), mask)
    for s_g, idx in zip(outputs["group_logits"], group_indices):
        idx = np.asarray(idx)
        m_g = None if mask is None else mask[:, idx]
        total = total + (1.0 - eta) * losses.masked_mean(losses.sigmoid_bce(s_g.astype(jnp.float32), labels[:, idx]), m_g)
    return total


def _nonempty_groups(meta):
    names, indices = [], []
    for name, idx in zip(meta.groups.names, meta.groups.indices):
        if len(idx):
            names.append(name)
            indices.append(tuple(int(c) for c in idx))
    return tuple(names), tuple(indices)


def build_hmt(config, meta, dtype) -> HMTNet:
    """HMT-Net on the backbone of ``config.model`` (any registered model) for the dataset ``meta``."""
    base = models.build_model(config.model, meta.num_classes, meta.input_shape, dtype, vocab_size=meta.vocab_size)
    names, indices = _nonempty_groups(meta)
    all_sigmas = dict(zip(meta.groups.names, group_sigmas(meta.class_counts, meta.groups, config.method.lam)))
    return HMTNet(
        backbone=base.backbone,
        group_names=names,
        group_indices=indices,
        sigmas=tuple(all_sigmas[n] for n in names),
        num_classes=meta.num_classes,
        head=config.model.get("head", "linear"),
        dtype=dtype,
    )


def _defaults():
    c = ml_collections.ConfigDict()
    c.name = "hmt"
    c.lam = 2.0  # lambda of eq. 1 (2 was best on VOC-LT; 0 turns the perturbation off)
    c.eta = 0.5  # weight of the global loss in eq. 7 (not given in the paper; 1 = BCE on the fused scores)
    return c


def _loss(outputs, batch, stats, method_cfg, state=None):
    del stats, state
    if not 0.0 <= method_cfg.eta <= 1.0:
        raise ValueError(f"method.eta must be in [0, 1], got {method_cfg.eta}")
    value = hmt_loss(outputs, batch["labels"], batch.get("mask"), outputs["group_indices"], method_cfg.eta)
    return value, {}


METHODS.add(
    "hmt",
    Method(
        name="hmt",
        description="HMT-Net: group-wise feature perturbation, one head per class group, fused BCE",
        defaults=_defaults,
        build_model=build_hmt,
        loss=_loss,
        scores=sigmoid_scores,
    ),
)
