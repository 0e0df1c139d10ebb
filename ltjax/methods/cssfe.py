"""CSSFE (seed 002): class activation maps refined by label-embedding attention flowing head -> medium -> tail.

Model (``../shared/REFERENCE.md`` section 4, paper eqs. in its Method section), for a backbone feature map
F [B, H, W, D] of any registered image backbone (the trunk of ``config.model``; the spatial size follows the
input, nothing is hard-coded):

* CAM head: a 1 x 1 convolution D -> C: one class activation map per class, CAM [B, H, W, C].
* label embeddings: one prompt per class (``method.template``, default "a photo of a {}.") through a frozen
  text encoder (``method.encoder``: "minilm", all-MiniLM-L6-v2 offline, the default; "clip", the paper's
  choice: a CLIP text tower read from the user's weights file ``method.clip_weights`` and ``tokenizer.json``
  ``method.clip_tokenizer`` without torch (:mod:`ltjax.models.clip_text`; CLIP RN50's gives the released
  code's 1024-d features); "file", a ``.npy`` [C, E] of embeddings the user computed with any encoder;
  "random", seeded unit vectors, the no-language ablation).  They are computed ONCE when the model is built and held as constants of the
  module (never parameters, never trained), then pass through a trainable projection to D:
  ``method.projection`` "linear" (the paper's text) or "mlp" (the released code: E -> ``mlp_width`` -> D,
  GELU, dropout 0.1).
* attention enhancement (eq. "selective correction"): Q, K = Linear(e); S = softmax_b(Q K^T / sqrt(d) (+)
  Mask); CAM' = (CAM + S . CAM) * sigmoid(Linear(e) -> H*W).  Mask[a, b] = 0 when a is a head class and b a
  medium or tail class, or a medium and b a tail class (information flows head -> medium -> tail only).
  ``method.mask_mode`` "neg_inf" (default): masked logits are -inf, so a head class's refined map is a
  mixture of head classes' maps only, the one-way flow the paper describes; "multiply": the released
  code's logits * Mask, where a masked entry becomes logit 0 and still receives weight exp(0).
* class features f_c = mean over H, W of F * CAM'_c; tokens [f_1..f_C, e_1..e_C] through one Transformer
  block (``heads`` x ``head_dim``, MLP ``mlp_dim``, dropout 0.1, pre-LayerNorm; ``residual`` True by
  default as a Transformer block in the paper's text implies, False = the released code's block without
  residual connections); logit_c = <output token C + c, e_c>.
* ablations (paper Figure 4), ``method.variant``: "net0" backbone + CAM head, logit = spatial mean of the
  CAM; "net1" + label embeddings and the Transformer, no attention enhancement; "net2" + attention without
  the mask; "net3" the full CSSFE.
"""
from __future__ import annotations

import hashlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax import losses, models
from ltjax.methods.base import METHODS, Method, sigmoid_scores
from ltjax.models.classifier import Backbone

VARIANTS = ("net0", "net1", "net2", "net3")
MASK_MODES = ("neg_inf", "multiply")
PROJECTIONS = ("linear", "mlp")
ENCODERS = ("minilm", "clip", "file", "random")


def flow_mask(group_of: np.ndarray) -> np.ndarray:
    """float32 [C, C]: 0 where class a is head (group 0) and b medium or tail, or a medium (1) and b tail
    (2); 1 elsewhere.  ``group_of[c]`` is the group index of class c (0 head, 1 medium, 2 tail)."""
    g = np.asarray(group_of, np.int64)
    return (g[:, None] >= g[None, :]).astype(np.float32)


class SpatialBackbone(Backbone):
    """A :class:`Backbone` without a neck that returns the trunk's feature map [B, H, W, D]."""

    def __call__(self, x, *, train: bool):
        y = self.trunk(x, train=train)
        if y.ndim != 4:
            raise ValueError(f"CSSFE needs a backbone that gives a spatial map [B, H, W, D], got shape {y.shape}")
        return y


class TransformerBlock(nn.Module):
    """One pre-LayerNorm Transformer block; ``residual`` False drops both residual connections."""

    heads: int
    head_dim: int
    mlp_dim: int
    dropout: float
    residual: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        width = x.shape[-1]
        y = nn.LayerNorm(dtype=self.dtype, param_dtype=jnp.float32, name="ln1")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, qkv_features=self.heads * self.head_dim, out_features=width,
            dropout_rate=self.dropout, deterministic=not train, dtype=self.dtype, param_dtype=jnp.float32,
            name="attention")(y, y)
        x = x + y if self.residual else y
        y = nn.LayerNorm(dtype=self.dtype, param_dtype=jnp.float32, name="ln2")(x)
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, param_dtype=jnp.float32, name="mlp_in")(y)
        y = nn.Dropout(self.dropout, deterministic=not train)(nn.gelu(y))
        y = nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32, name="mlp_out")(y)
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        return x + y if self.residual else y


def refine_cams(cam, scores_logits, mask, gate, mask_mode: str):
    """CAM' = (CAM + S . CAM) * gate, S = softmax over b of the masked ``scores_logits`` [C, C]; ``cam``
    [B, H, W, C], ``gate`` [C, H, W] in (0, 1), ``mask`` [C, C] or None (no mask)."""
    logits = scores_logits
    if mask is not None:
        logits = jnp.where(mask > 0, logits, -jnp.inf) if mask_mode == "neg_inf" else logits * mask
    s = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    context = jnp.einsum("ab,nhwb->nhwa", s, cam.astype(jnp.float32)).astype(cam.dtype)
    return (cam + context) * jnp.transpose(gate, (1, 2, 0))[None]


def class_features(fmap, cams):
    """f [B, C, D]: the mean over H, W of F * CAM'_c."""
    h, w = fmap.shape[1], fmap.shape[2]
    return jnp.einsum("nhwd,nhwc->ncd", fmap, cams) / (h * w)


class CSSFENet(nn.Module):
    """Backbone map -> CAMs -> (refined CAMs -> class tokens + label tokens -> Transformer) -> logits."""

    backbone: SpatialBackbone
    embeddings: Any  # np.ndarray [C, E]: the frozen encoder's label embeddings (constants)
    mask: Any  # np.ndarray [C, C] flow mask
    variant: str = "net3"
    mask_mode: str = "neg_inf"
    projection: str = "mlp"
    mlp_width: int = 4096
    heads: int = 8
    head_dim: int = 512
    mlp_dim: int = 2048
    dropout: float = 0.1
    residual: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        fmap = self.backbone(x, train=train)
        num_classes = int(np.shape(self.embeddings)[0])
        cam = nn.Conv(num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, name="cam")(fmap)
        if self.variant == "net0":
            logits = jnp.mean(cam.astype(jnp.float32), axis=(1, 2))
            return {"logits": logits, "features": jnp.mean(fmap, axis=(1, 2)), "cams": cam}
        d = fmap.shape[-1]
        e = jnp.asarray(self.embeddings, jnp.float32)  # constants: no gradient reaches them
        if self.projection == "mlp":
            e = nn.Dense(self.mlp_width, dtype=self.dtype, param_dtype=jnp.float32, name="embed_in")(e)
            e = nn.Dropout(self.dropout, deterministic=not train)(nn.gelu(e))
        e = nn.Dense(d, dtype=self.dtype, param_dtype=jnp.float32, name="embed_out")(e)
        cams = cam
        if self.variant in ("net2", "net3"):
            q = nn.Dense(d, dtype=self.dtype, param_dtype=jnp.float32, name="query")(e)
            k = nn.Dense(d, dtype=self.dtype, param_dtype=jnp.float32, name="key")(e)
            h, w = fmap.shape[1], fmap.shape[2]
            gate = jax.nn.sigmoid(nn.Dense(h * w, dtype=self.dtype, param_dtype=jnp.float32, name="gate")(e))
            mask = jnp.asarray(self.mask) if self.variant == "net3" else None
            cams = refine_cams(cam, q @ k.T / np.sqrt(d), mask, gate.reshape(num_classes, h, w), self.mask_mode)
        f = class_features(fmap, cams)
        tokens = jnp.concatenate([f, jnp.broadcast_to(e[None], (f.shape[0],) + e.shape).astype(f.dtype)], axis=1)
        out = TransformerBlock(self.heads, self.head_dim, self.mlp_dim, self.dropout, self.residual, self.dtype,
                               name="transformer")(tokens, train=train)
        logits = jnp.sum(out[:, num_classes:].astype(jnp.float32) * e[None].astype(jnp.float32), axis=-1)
        return {"logits": logits, "features": jnp.mean(f, axis=1), "cams": cams}


# ---------------------------------------------------------------------------------------------------
# label embeddings


def prompts(class_names, template: str) -> list[str]:
    if "{}" not in template:
        raise ValueError(f"method.template must contain '{{}}' where the class name goes, got {template!r}")
    return [template.format(str(n).replace("_", " ")) for n in class_names]


def label_embeddings(method_cfg, class_names) -> np.ndarray:
    """float32 [C, E]: the frozen encoder's embedding of each class's prompt (module docstring)."""
    encoder = str(method_cfg.encoder)
    texts = prompts(class_names, str(method_cfg.template))
    if encoder == "minilm":
        from ltjax.models.minilm import encode_sentences

        return np.asarray(encode_sentences(texts), np.float32)
    if encoder == "clip":
        from ltjax.models.clip_text import encode

        if not str(method_cfg.clip_weights) or not str(method_cfg.clip_tokenizer):
            raise ValueError("method.encoder='clip' needs method.clip_weights (a CLIP .safetensors / .pt state dict, "
                             "open_clip or Hugging Face layout) and method.clip_tokenizer (its tokenizer.json)")
        return encode(texts, str(method_cfg.clip_weights), str(method_cfg.clip_tokenizer),
                      heads=int(method_cfg.clip_heads), act=str(method_cfg.clip_act))
    if encoder == "file":
        path = str(method_cfg.embeddings_file)
        try:
            e = np.load(path)
        except (OSError, ValueError) as err:
            raise ValueError(f"method.embeddings_file {path!r} cannot be read as a .npy array ({err}); save the "
                             f"[C, E] label embeddings with numpy.save") from None
        if e.ndim != 2 or e.shape[0] != len(texts):
            raise ValueError(f"method.embeddings_file holds shape {e.shape}; expected [{len(texts)}, E], one row per "
                             "class in the dataset's class order")
        return e.astype(np.float32)
    if encoder == "random":  # the no-language ablation: seeded unit vectors, one per class name
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(int(method_cfg.random_dim))
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, np.float32)
    raise ValueError(f"method.encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")


# ---------------------------------------------------------------------------------------------------
# the method


def _defaults():
    c = ml_collections.ConfigDict()
    c.name = "cssfe"
    c.variant = "net3"  # net0 | net1 | net2 | net3 (paper Figure 4; net3 = CSSFE)
    c.mask_mode = "neg_inf"  # "neg_inf" (one-way flow, the paper's text) | "multiply" (the released code)
    c.projection = "mlp"  # "mlp" (released code: E -> mlp_width -> D, GELU, dropout) | "linear" (paper text)
    c.mlp_width = 4096
    c.heads = 8
    c.head_dim = 512
    c.mlp_dim = 2048
    c.dropout = 0.1
    c.residual = True  # False: the released code's block without residual connections
    c.encoder = "minilm"  # "minilm" | "clip" (clip_weights + clip_tokenizer) | "file" (embeddings_file, [C, E] .npy) | "random"
    c.template = "a photo of a {}."
    c.embeddings_file = ""
    c.clip_weights = ""  # encoder "clip": the CLIP weights file (ltjax/models/clip_text.py)
    c.clip_tokenizer = ""  # encoder "clip": its tokenizer.json
    c.clip_heads = 0  # 0: width / 64, CLIP's rule
    c.clip_act = "quick_gelu"  # "quick_gelu" (OpenAI's towers) | "gelu"
    c.random_dim = 384
    # ASL (gamma- 4, gamma+ 0, clip 0.05), the paper's loss
    c.gamma_pos, c.gamma_neg, c.clip, c.eps, c.focal_grad = 0.0, 4.0, 0.05, 1e-8, True
    return c


def _check(method_cfg):
    for field, allowed in (("variant", VARIANTS), ("mask_mode", MASK_MODES), ("projection", PROJECTIONS),
                           ("encoder", ENCODERS)):
        if str(method_cfg[field]) not in allowed:
            raise ValueError(f"method.{field} must be one of {', '.join(allowed)}, got {method_cfg[field]!r}")


def build_cssfe(config, meta, dtype) -> CSSFENet:
    """CSSFE on the trunk of ``config.model`` (any registered image backbone with a spatial map)."""
    m = config.method
    _check(m)
    if meta.input_kind != "image" and not (meta.input_kind == "features" and len(meta.input_shape) == 3):
        raise ValueError(f"CSSFE needs images (or data.frozen_features='map'); {meta.name} is a {meta.input_kind} "
                         f"dataset with inputs {tuple(meta.input_shape)}")
    from ltjax.data.groups import GROUP_NAMES

    if tuple(meta.groups.names) != GROUP_NAMES:  # flow_mask reads group 0 as head, 1 medium, 2 tail
        raise ValueError(f"CSSFE's flow mask needs the groups {', '.join(GROUP_NAMES)} in that order; {meta.name} has "
                         f"{', '.join(meta.groups.names)}")
    base = models.build_model(config.model, meta.num_classes, meta.input_shape, dtype, vocab_size=meta.vocab_size)
    trunk = getattr(getattr(base, "backbone", None), "trunk", None)
    if trunk is None:
        raise ValueError(f"CSSFE needs an image backbone with a spatial feature map; model {config.model.name!r} has "
                         "no backbone trunk")
    return CSSFENet(
        backbone=SpatialBackbone(trunk=trunk), embeddings=label_embeddings(m, meta.class_names),
        mask=flow_mask(meta.groups.assignment()), variant=str(m.variant), mask_mode=str(m.mask_mode),
        projection=str(m.projection), mlp_width=int(m.mlp_width), heads=int(m.heads), head_dim=int(m.head_dim),
        mlp_dim=int(m.mlp_dim), dropout=float(m.dropout), residual=bool(m.residual), dtype=dtype,
    )


def _loss(outputs, batch, stats, method_cfg, state=None):
    del state
    hparams = {k: method_cfg[k] for k in losses.loss_defaults("asl")}
    value = losses.compute_loss("asl", outputs["logits"], batch["labels"], batch.get("mask"), stats, hparams)
    return value, {}


METHODS.add(
    "cssfe",
    Method(
        name="cssfe",
        description="CSSFE: CAMs refined by label-embedding attention flowing head -> medium -> tail, ASL",
        defaults=_defaults,
        build_model=build_cssfe,
        loss=_loss,
        scores=sigmoid_scores,
        input_kinds=("image",),
    ),
)
