"""'glyphnet': a small image backbone that keeps the resolution small objects need, with a spatial map.

Why a new backbone: on ``tiles_voc_lt`` the objects are 20-px MNIST glyphs on an 80-px canvas.  ResNet's
stride-32 trunk leaves them a 2 x 2 (80 px) map and average pooling dilutes them in the background; a
probe of the benchmark found a six-convolution CNN with global max pooling at 75 mAP where ResNet-18
reaches 35 (issue 13).  GlyphNet is that kind of network, written like the ResNets of ltjax (stages,
``frozen_stages``, ``norm_eval``, a spatial feature map for CAM- and token-based methods), and it comes
with its own "ImageNet": weights pretrained by ltjax on single glyphs (:mod:`ltjax.models.glyph_pretrain`,
``model.pretrained = "glyphs"``).

Structure (``widths`` = (w0, w1, ..., wS), ``convs`` per stage, NHWC):

* stage 0, the stem: 3x3 conv with stride ``stem_stride`` (2) -> BatchNorm -> ReLU, ``w0`` channels;
* stage k = 1..S: a 2x2 max pool (stride 2) for k >= 2, then ``convs`` x (3x3 conv -> BatchNorm -> ReLU)
  with ``wk`` channels.

Output stride ``stem_stride * 2 ** (S - 1)``: the defaults (32, 32, 64, 128), 2 convs, stride 2 give a
10 x 10 x 128 map for an 80-px image (a glyph covers 2.5 x 2.5 cells).  Convs have no bias; BatchNorm and
initialisation as the ResNets (torch's momentum / epsilon, kaiming-normal fan_out).  Parameters:
``stem/conv``, ``stem/bn``, ``stage{k}_{i}/conv``, ``stage{k}_{i}/bn``.

``frozen_stages`` has mmcv's meaning (-1 none, 0 the stem, k the stem and stages 1..k): frozen parts get
``stop_gradient``, use running BatchNorm statistics and are masked out of the optimizer;
``norm_eval=True`` keeps every trunk BatchNorm in evaluation mode.  The neck is the recipe's PFC neck or a
plain pool, with ``neck_pool`` "max" by default (see :mod:`ltjax.models.necks`).
"""
from __future__ import annotations

from typing import Any

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
    trunk_trainable_mask,
)
from ltjax.models.heads import make_head
from ltjax.models.necks import NECKS, POOLS, batch_norm, make_neck
from ltjax.models.resnet import conv_init  # torchvision's kaiming-normal (fan_out) conv init

NAME = "glyphnet"


class ConvBN(nn.Module):
    """3x3 conv (no bias) -> BatchNorm -> ReLU."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, use_running_average: bool):
        x = nn.Conv(self.features, (3, 3), strides=(self.stride, self.stride), padding=((1, 1), (1, 1)),
                    use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=conv_init, name="conv")(x)
        return nn.relu(batch_norm(use_running_average, self.dtype, "bn")(x))


def stage_module_names(widths, convs: int, stage: int) -> list[str]:
    """Top-level parameter names of one stage: ``["stem"]`` for 0, ``stage{k}_{i}`` else."""
    if stage == 0:
        return ["stem"]
    return [f"stage{stage}_{i}" for i in range(int(convs))]


def _check_options(widths, convs, stem_stride, frozen_stages) -> None:
    if len(widths) < 2 or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
        raise ValueError(f"model.widths must list at least 2 positive ints (stem, stage 1, ...), got {widths!r}")
    if not isinstance(convs, int) or convs < 1:
        raise ValueError(f"model.convs (3x3 convs per stage) must be a positive int, got {convs!r}")
    if stem_stride not in (1, 2):
        raise ValueError(f"model.stem_stride must be 1 or 2, got {stem_stride!r}")
    stages = len(widths) - 1
    if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= stages:
        raise ValueError(
            f"model.frozen_stages must be an int in [-1, {stages}] (-1 none, 0 stem, k stem + stages 1..k), "
            f"got {frozen_stages!r}"
        )


class GlyphNet(nn.Module):
    """The trunk: NHWC images -> feature map [B, H / stride, W / stride, widths[-1]]."""

    widths: tuple[int, ...] = (32, 32, 64, 128)
    convs: int = 2
    stem_stride: int = 2
    frozen_stages: int = -1
    norm_eval: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        widths = tuple(int(w) for w in self.widths)
        _check_options(widths, self.convs, self.stem_stride, self.frozen_stages)
        if x.ndim != 4:
            raise ValueError(f"glyphnet expects NHWC images [B, H, W, C], got shape {x.shape}")
        min_side = self.stem_stride * 2 ** (len(widths) - 2)
        if x.shape[1] < min_side or x.shape[2] < min_side:
            raise ValueError(f"glyphnet needs images of at least {min_side} px per side, got shape {x.shape}")

        def running(stage: int) -> bool:
            return (not train) or self.norm_eval or stage <= self.frozen_stages

        x = jnp.asarray(x, self.dtype)
        x = ConvBN(widths[0], self.stem_stride, self.dtype, name="stem")(x, use_running_average=running(0))
        if self.frozen_stages >= 0:
            x = jax.lax.stop_gradient(x)
        for stage, width in enumerate(widths[1:], start=1):
            if stage >= 2:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for i in range(self.convs):
                x = ConvBN(width, 1, self.dtype, name=f"stage{stage}_{i}")(x, use_running_average=running(stage))
            if stage <= self.frozen_stages:
                x = jax.lax.stop_gradient(x)
        return x


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = NAME
    c.widths = (32, 32, 64, 128)  # stem, then one width per stage
    c.convs = 2  # 3x3 convs per stage
    c.stem_stride = 2
    c.frozen_stages = -1  # -1 none, 0 stem, k stem + stages 1..k
    c.norm_eval = False  # every trunk BatchNorm uses running statistics, also in training
    c.neck = "pfc"  # "pfc" (pool -> Linear -> BN1d -> Dropout) | "gap" (the pool alone)
    c.neck_pool = "max"  # "max" (small objects) | "avg"
    c.neck_dim = 256
    c.neck_dropout = 0.5
    c.head = "linear"
    # "" = random initialisation; "glyphs" = the single-glyph pretraining of ltjax.models.glyph_pretrain
    # (built on first use, cached); or the path of a weights file that pretraining wrote
    c.pretrained = ""
    from ltjax.models.glyph_pretrain import pretrain_defaults

    c.pretrain = pretrain_defaults()
    return c


def trunk_from_config(cfg, dtype: Any = jnp.float32) -> GlyphNet:
    widths = tuple(int(w) for w in cfg.widths)
    _check_options(widths, cfg.convs, cfg.stem_stride, cfg.frozen_stages)
    return GlyphNet(widths=widths, convs=int(cfg.convs), stem_stride=int(cfg.stem_stride),
                    frozen_stages=int(cfg.frozen_stages), norm_eval=bool(cfg.norm_eval), dtype=dtype)


def build(model_cfg, num_classes: int, input_shape: tuple, dtype: Any = jnp.float32, vocab_size: int = 0) -> nn.Module:
    """GlyphNet + neck + head for NHWC images of shape ``input_shape``."""
    del vocab_size
    cfg = resolve_model_config(model_cfg, defaults())
    num_classes = check_num_classes(num_classes)
    check_input_shape(input_shape, 3, "glyphnet takes NHWC images, input_shape (H, W, C)")
    dtype = resolve_compute_dtype(dtype)
    if cfg.neck not in NECKS:
        raise ValueError(f"unknown model.neck {cfg.neck!r}; choose one of {', '.join(NECKS)}")
    if cfg.neck_pool not in POOLS:
        raise ValueError(f"unknown model.neck_pool {cfg.neck_pool!r}; choose one of {', '.join(POOLS)}")
    neck = make_neck(cfg.neck, features=cfg.neck_dim, dropout=float(cfg.neck_dropout), dtype=dtype,
                     pool=cfg.neck_pool)
    trunk = trunk_from_config(cfg, dtype)
    return Classifier(backbone=Backbone(trunk=trunk, neck=neck), head=make_head(cfg.head, num_classes, dtype))


def trainable_mask(model_cfg, params) -> Any:
    cfg = resolve_model_config(model_cfg, defaults())
    frozen = {n for s in range(int(cfg.frozen_stages) + 1) for n in stage_module_names(cfg.widths, cfg.convs, s)}
    return trunk_trainable_mask(params, frozen, f"glyphnet frozen_stages={cfg.frozen_stages}")


def load_pretrained_trunk(variables, pretrained, model_cfg):
    """``variables`` with the trunk's params and batch_stats from ``pretrained``: ``"glyphs"`` (the cached
    single-glyph pretraining for this architecture, trained now if absent) or a weights file it wrote."""
    from ltjax.models import glyph_pretrain
    from ltjax.models.pretrained import replace_subtrees

    cfg = resolve_model_config(model_cfg, defaults())
    trunk_vars, origin = glyph_pretrain.trunk_weights(cfg, pretrained, log=print)
    trunk = ("backbone", "trunk")
    return replace_subtrees(
        variables,
        {("params", *trunk): trunk_vars["params"], ("batch_stats", *trunk): trunk_vars["batch_stats"]},
        origin={}, state_dict={}, model_label=f"glyphnet ({origin})",
        structure_hint="a glyphnet classifier's variables built from the same model.widths / convs / stem_stride",
    )
