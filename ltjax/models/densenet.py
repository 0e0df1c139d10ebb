"""DenseNet-121 ('densenet121') with torchvision's exact structure, ImageNet weights read without torch.

DenseNet-121 is the backbone of CheXNet and LDRNet.  Structure (torchvision ``DenseNet``: growth rate
32, ``block_config`` (6, 12, 24, 16), 64 initial features, ``bn_size`` 4, drop rate 0), NHWC:

* stem: 7x7/2 conv (padding 3) ``conv0`` -> BN ``norm0`` -> ReLU -> 3x3/2 max pool (padding 1);
* dense block b = 1..B (``denseblock{b}``) of ``block_config[b-1]`` dense layers ``denselayer{i}``
  (i = 1..n): on the concatenation of the block input and every earlier layer's output,
  BN ``norm1`` -> ReLU -> 1x1 conv ``conv1`` (``bn_size * growth_rate`` channels) -> BN ``norm2`` -> ReLU
  -> 3x3 conv ``conv2`` (padding 1, ``growth_rate`` channels) [-> dropout ``drop_rate``]; the block
  returns the concatenation ``[input, new_1, ..., new_n]`` (channels ``c + n * growth_rate``);
* transition b = 1..B-1 (``transition{b}``, after every block but the last): BN ``norm`` -> ReLU ->
  1x1 conv ``conv`` to ``c // 2`` channels (compression 0.5) -> 2x2/2 average pool (no padding: an odd
  side loses its last row/column, as torch's ``AvgPool2d(2, 2)``);
* ``norm5`` BN, then ReLU (torchvision applies ``F.relu`` after ``features``).

The trunk returns that spatial map [B, H/32, W/32, 1024] (floor at every stride, e.g. 7 x 7 at 224 px) so
the spatial methods (CSSFE, LDRNet) can use it; the neck pools it.  Convs have no bias and torchvision's
init (kaiming-normal, fan_in, gain sqrt(2)); BatchNorm scale 1, bias 0, momentum 0.9 (torch's 0.1) and
epsilon 1e-5.  Parameter counts equal torchvision's: 6,953,856 in the trunk (7,978,856 with its
1000-class classifier, which ltjax replaces by its own neck and head).  ``block_config``,
``growth_rate``, ``num_init_features`` and ``bn_size`` are config fields, so tests can build tiny
DenseNets; their defaults are DenseNet-121's.

Parameter names mirror torchvision's state dict without its ``features.`` prefix:
``features.denseblock2.denselayer3.conv1.weight`` [O, I, kh, kw] is ``denseblock2/denselayer3/conv1/kernel``
[kh, kw, I, O]; ``features.transition1.norm`` is ``transition1/norm``; BN ``weight/bias`` are
``scale/bias`` in 'params', ``running_mean/var`` are ``mean/var`` in 'batch_stats'.

Stages for ``frozen_stages`` (mmcv's meaning, as the ResNets): -1 freezes nothing; 0 the stem
(``conv0``, ``norm0``); k in 1..B the stem, dense blocks 1..k and the transitions after them
(``transition1..transition{k}``); the final ``norm5`` belongs to the last block (it stands where its
transition would be), so ``frozen_stages = B`` (4 for DenseNet-121) freezes the whole trunk.  Frozen parts
get ``jax.lax.stop_gradient`` on the output of the last frozen stage, always use running BatchNorm
statistics, never apply dropout, and ``trainable_mask`` marks their parameters False.  ``norm_eval=True``
keeps every trunk BatchNorm in evaluation mode, also in training; the PFC neck's BatchNorm still trains.

Weights: ``model.pretrained`` is the path of torchvision's state dict, i.e. the file of
https://download.pytorch.org/models/densenet121-a639ec97.pth (a legacy torch file; ``read_state_dict``
reads it without torch), or a ``.safetensors`` / zip ``.pth`` with the same keys.  That 2017 file uses
the old key spelling ``features.denseblock1.denselayer1.norm.1.weight``; like torchvision's
``_load_state_dict`` the loader renames ``(norm|relu|conv).(1|2).`` inside a dense layer to ``norm1`` /
``conv2`` ..., so both spellings load (a key given in both spellings is an error).  ``classifier.*``
(torchvision's 1000-way classifier) and ``num_batches_tracked`` are ignored; missing or unexpected keys
and wrong shapes raise a ``ValueError`` listing them.  ltjax's asset registry only fetches files from
pinned package-registry wheels, so this file, like the ResNets', is downloaded by the user.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

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
from ltjax.models.necks import NECKS, POOLS, batch_norm as _bn, make_neck
from ltjax.models.resnet import _conv as resnet_conv

NAME = "densenet121"
GROWTH_RATE = 32
BLOCK_CONFIG = (6, 12, 24, 16)
NUM_INIT_FEATURES = 64
BN_SIZE = 4
WEIGHTS_URL = "https://download.pytorch.org/models/densenet121-a639ec97.pth"  # torchvision's ImageNet weights

# torchvision's DenseNet init: nn.init.kaiming_normal_(conv.weight), i.e. fan_in, gain sqrt(2), untruncated
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def _conv(features: int, kernel: int, stride: int, padding: int, dtype: Any, name: str) -> nn.Conv:
    return resnet_conv(features, kernel, stride, padding, dtype, name, kernel_init=conv_init)


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1(bn_size * growth) - BN-ReLU-conv3x3(growth) [- dropout]: the ``growth`` new channels."""

    growth_rate: int
    bn_size: int
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, use_running_average: bool, deterministic: bool):
        y = nn.relu(_bn(use_running_average, self.dtype, "norm1")(x))
        y = _conv(self.bn_size * self.growth_rate, 1, 1, 0, self.dtype, "conv1")(y)
        y = nn.relu(_bn(use_running_average, self.dtype, "norm2")(y))
        y = _conv(self.growth_rate, 3, 1, 1, self.dtype, "conv2")(y)
        if self.drop_rate > 0:
            y = nn.Dropout(rate=self.drop_rate, deterministic=deterministic)(y)
        return y


class DenseBlock(nn.Module):
    """``num_layers`` dense layers ``denselayer1..n``; returns ``[x, new_1, ..., new_n]`` concatenated on C."""

    num_layers: int
    growth_rate: int
    bn_size: int
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, use_running_average: bool, deterministic: bool):
        for i in range(1, self.num_layers + 1):
            new = DenseLayer(self.growth_rate, self.bn_size, self.drop_rate, self.dtype, name=f"denselayer{i}")(
                x, use_running_average=use_running_average, deterministic=deterministic)
            x = jnp.concatenate([x, new], axis=-1)
        return x


class Transition(nn.Module):
    """BN ``norm`` -> ReLU -> 1x1 conv ``conv`` (``features`` channels) -> 2x2/2 average pool (floor)."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, use_running_average: bool):
        x = nn.relu(_bn(use_running_average, self.dtype, "norm")(x))
        x = _conv(self.features, 1, 1, 0, self.dtype, "conv")(x)
        return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


def num_features(block_config, growth_rate: int, num_init_features: int) -> int:
    """Channels of the trunk's output (1024 for DenseNet-121)."""
    c = int(num_init_features)
    for b, n in enumerate(block_config, start=1):
        c += int(n) * int(growth_rate)
        if b != len(block_config):
            c //= 2
    return c


def stage_module_names(num_blocks: int, stage: int) -> list[str]:
    """Top-level trunk module names of one stage: the stem for 0; block b with its transition (or
    ``norm5`` after the last block) for b in 1..num_blocks."""
    if stage == 0:
        return ["conv0", "norm0"]
    return [f"denseblock{stage}", f"transition{stage}" if stage < num_blocks else "norm5"]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_options(block_config, growth_rate, num_init_features, bn_size, drop_rate, frozen_stages) -> None:
    if (not isinstance(block_config, (tuple, list)) or not block_config
            or any(not _is_int(n) or n < 1 for n in block_config)):
        raise ValueError(f"model.block_config must be a non-empty tuple of positive ints (dense layers per block), "
                         f"got {block_config!r}")
    for field, value in (("growth_rate", growth_rate), ("num_init_features", num_init_features),
                         ("bn_size", bn_size)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"model.{field} must be a positive int, got {value!r}")
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"model.drop_rate must be in [0, 1), got {drop_rate!r}")
    blocks = len(block_config)
    if not _is_int(frozen_stages) or not -1 <= frozen_stages <= blocks:
        raise ValueError(
            f"frozen_stages must be an int in [-1, {blocks}] (-1 none, 0 stem, k stem + dense blocks 1..k with their "
            f"transitions, {blocks} the whole trunk including norm5), got {frozen_stages!r}"
        )


class DenseNet(nn.Module):
    """The DenseNet trunk: NHWC images [B, H, W, C] -> ReLU(norm5) feature map [B, H/32, W/32, 1024] (121)."""

    block_config: tuple[int, ...] = BLOCK_CONFIG
    growth_rate: int = GROWTH_RATE
    num_init_features: int = NUM_INIT_FEATURES
    bn_size: int = BN_SIZE
    drop_rate: float = 0.0
    frozen_stages: int = -1
    norm_eval: bool = False
    in_channels: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        blocks = tuple(int(n) for n in self.block_config)
        _check_options(blocks, self.growth_rate, self.num_init_features, self.bn_size, self.drop_rate,
                       self.frozen_stages)
        if x.ndim != 4:
            raise ValueError(f"densenet expects NHWC images [B, H, W, C], got shape {x.shape}; use model.name='mlp' "
                             "for feature vectors [B, D]")
        if self.in_channels is not None and x.shape[-1] != self.in_channels:
            raise ValueError(
                f"densenet was built for {self.in_channels} input channels (NHWC), got shape {x.shape}; if the images "
                "are NCHW, transpose them to NHWC"
            )

        def running_average(stage: int) -> bool:
            return (not train) or self.norm_eval or stage <= self.frozen_stages

        image_hw = x.shape[1:3]
        x = jnp.asarray(x, self.dtype)
        x = _conv(self.num_init_features, 7, 2, 3, self.dtype, "conv0")(x)
        x = nn.relu(_bn(running_average(0), self.dtype, "norm0")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        if self.frozen_stages >= 0:
            x = jax.lax.stop_gradient(x)
        channels = int(self.num_init_features)
        for b, n in enumerate(blocks, start=1):
            frozen = b <= self.frozen_stages
            x = DenseBlock(n, int(self.growth_rate), int(self.bn_size), float(self.drop_rate), self.dtype,
                           name=f"denseblock{b}")(
                x, use_running_average=running_average(b), deterministic=(not train) or frozen)
            channels += n * int(self.growth_rate)
            if b < len(blocks):
                if x.shape[1] < 2 or x.shape[2] < 2:
                    raise ValueError(
                        f"densenet: images of {image_hw[0]}x{image_hw[1]} px are too small: transition{b} would "
                        f"average-pool a {x.shape[1]}x{x.shape[2]} map to nothing"
                    )
                channels //= 2
                x = Transition(channels, self.dtype, name=f"transition{b}")(
                    x, use_running_average=running_average(b))
            else:
                x = nn.relu(_bn(running_average(b), self.dtype, "norm5")(x))
            if frozen:
                x = jax.lax.stop_gradient(x)
        return x


# ---------------------------------------------------------------------------------- config / registry


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = NAME
    c.frozen_stages = 1  # -1 none, 0 stem, k stem + dense blocks 1..k (+ transitions; norm5 with the last block)
    c.norm_eval = True  # every backbone BatchNorm uses running statistics, also in training
    c.neck = "pfc"  # "pfc" (pool -> Linear -> BN1d -> Dropout) | "gap"
    c.neck_pool = "avg"  # "avg" | "max"
    c.neck_dim = 256  # pfc output width
    c.neck_dropout = 0.5  # pfc dropout
    c.head = "linear"  # "linear" (N(0, 0.01) init, bias 0) | "cosine" (normalised, LDAM)
    # the architecture (DenseNet-121's; other values build other DenseNets, e.g. tiny ones in tests)
    c.block_config = BLOCK_CONFIG  # dense layers per block
    c.growth_rate = GROWTH_RATE
    c.num_init_features = NUM_INIT_FEATURES
    c.bn_size = BN_SIZE  # bottleneck width = bn_size * growth_rate
    c.drop_rate = 0.0  # dropout after each dense layer (torchvision's default 0), never in frozen stages
    # torchvision ImageNet weights (a state-dict file: .pth or .safetensors, e.g. densenet121-a639ec97.pth from
    # WEIGHTS_URL); "" = random initialisation.  Loaded once, at the start of a fresh run.
    c.pretrained = ""
    return c


def _arch(cfg) -> dict:
    """The architecture fields of a resolved config, checked, as ints (``block_config`` a tuple)."""
    blocks = tuple(cfg.block_config) if isinstance(cfg.block_config, (tuple, list)) else cfg.block_config
    _check_options(blocks, cfg.growth_rate, cfg.num_init_features, cfg.bn_size, cfg.drop_rate, cfg.frozen_stages)
    return dict(block_config=tuple(int(n) for n in blocks), growth_rate=int(cfg.growth_rate),
                num_init_features=int(cfg.num_init_features), bn_size=int(cfg.bn_size))


def _label(arch: Mapping) -> str:
    """'densenet121', or the architecture when it is not DenseNet-121's."""
    if (tuple(arch["block_config"]), arch["growth_rate"], arch["num_init_features"], arch["bn_size"]) == (
            BLOCK_CONFIG, GROWTH_RATE, NUM_INIT_FEATURES, BN_SIZE):
        return NAME
    return (f"densenet(block_config={tuple(arch['block_config'])}, growth_rate={arch['growth_rate']}, "
            f"num_init_features={arch['num_init_features']}, bn_size={arch['bn_size']})")


def build(model_cfg, num_classes: int, input_shape: tuple, dtype: Any = jnp.float32, vocab_size: int = 0) -> nn.Module:
    """DenseNet trunk + neck + head for NHWC images of shape ``input_shape``."""
    del vocab_size
    cfg = resolve_model_config(model_cfg, defaults())
    num_classes = check_num_classes(num_classes)
    _, _, channels = check_input_shape(input_shape, 3, f"{NAME} takes NHWC images, input_shape (H, W, C)")
    dtype = resolve_compute_dtype(dtype)
    arch = _arch(cfg)
    if cfg.neck not in NECKS:
        raise ValueError(f"unknown neck {cfg.neck!r}; choose one of {', '.join(NECKS)}")
    if cfg.neck_pool not in POOLS:
        raise ValueError(f"unknown model.neck_pool {cfg.neck_pool!r}; choose one of {', '.join(POOLS)}")
    trunk = DenseNet(**arch, drop_rate=float(cfg.drop_rate), frozen_stages=int(cfg.frozen_stages),
                     norm_eval=bool(cfg.norm_eval), in_channels=channels, dtype=dtype)
    neck = make_neck(cfg.neck, features=cfg.neck_dim, dropout=float(cfg.neck_dropout), dtype=dtype,
                     pool=cfg.neck_pool)
    return Classifier(backbone=Backbone(trunk=trunk, neck=neck), head=make_head(cfg.head, num_classes, dtype))


def frozen_module_names(num_blocks: int, frozen_stages: int) -> set[str]:
    """Top-level trunk module names frozen by ``frozen_stages`` in a DenseNet of ``num_blocks`` blocks."""
    return {name for stage in range(frozen_stages + 1) for name in stage_module_names(num_blocks, stage)}


def trainable_mask(model_cfg, params) -> Any:
    """False exactly for parameters under ``backbone/trunk/<frozen module>``."""
    cfg = resolve_model_config(model_cfg, defaults())
    arch = _arch(cfg)
    frozen = frozen_module_names(len(arch["block_config"]), int(cfg.frozen_stages))
    return trunk_trainable_mask(params, frozen, f"{cfg.name} frozen_stages={cfg.frozen_stages}")


# ---------------------------------------------------------------------------------- weights

# torchvision's _load_state_dict: old checkpoints name dense-layer submodules 'norm.1', 'relu.1', 'conv.1', ...
_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def rename_old_keys(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` with torchvision's old dense-layer key spelling (``...denselayer1.norm.1.weight``) renamed
    to the current one (``...denselayer1.norm1.weight``), as torchvision's ``_load_state_dict`` does; keys in
    the current spelling are kept.  A key present in both spellings raises ``ValueError``."""
    out: dict[str, Any] = {}
    renamed: dict[str, str] = {}
    for key, value in state_dict.items():
        m = _OLD_KEY.match(key)
        new = m.group(1) + m.group(2) if m else key
        if new in out:
            old = renamed.get(new, key if m is None else new)
            raise ValueError(f"the state dict holds {new!r} in both key spellings ({old!r} and {key!r})")
        if m:
            renamed[new] = key
        out[new] = value
    return out


def torch_layout(block_config=BLOCK_CONFIG, growth_rate: int = GROWTH_RATE,
                 num_init_features: int = NUM_INIT_FEATURES, bn_size: int = BN_SIZE,
                 in_channels: int = 3) -> tuple[dict, dict]:
    """torchvision's DenseNet convs and BNs (current key spelling, without ``.weight`` etc.):
    ``({torch_prefix: OIHW shape}, {torch_prefix: channels})``."""
    g, width = int(growth_rate), int(bn_size) * int(growth_rate)
    convs = {"features.conv0": (int(num_init_features), int(in_channels), 7, 7)}
    bns = {"features.norm0": int(num_init_features)}
    c = int(num_init_features)
    for b, n in enumerate(block_config, start=1):
        for i in range(1, int(n) + 1):
            p, cin = f"features.denseblock{b}.denselayer{i}", c + (i - 1) * g
            bns[f"{p}.norm1"] = cin
            convs[f"{p}.conv1"] = (width, cin, 1, 1)
            bns[f"{p}.norm2"] = width
            convs[f"{p}.conv2"] = (g, width, 3, 3)
        c += int(n) * g
        if b != len(block_config):
            bns[f"features.transition{b}.norm"] = c
            convs[f"features.transition{b}.conv"] = (c // 2, c, 1, 1)
            c //= 2
    bns["features.norm5"] = c
    return convs, bns


def _flax_path(torch_prefix: str) -> tuple[str, ...]:
    """``features.denseblock1.denselayer2.conv1`` -> ('denseblock1', 'denselayer2', 'conv1')."""
    return tuple(torch_prefix.split(".")[1:])


def torchvision_densenet_to_flax(state_dict: Mapping[str, Any], block_config=BLOCK_CONFIG,
                                 growth_rate: int = GROWTH_RATE, num_init_features: int = NUM_INIT_FEATURES,
                                 bn_size: int = BN_SIZE) -> tuple[dict, dict, dict]:
    """``(params_trunk, batch_stats_trunk, origin)`` for :class:`DenseNet` from a torchvision DenseNet state
    dict in either key spelling (numpy arrays -> float32; conv kernels HWIO).  ``origin`` maps
    ``'collection/flax/path'`` to the checkpoint's key.  ``classifier.*`` and ``num_batches_tracked`` are
    ignored; CheXNet's ``densenet121.`` prefix (after the DataParallel ``module.`` one) is stripped; missing/unexpected keys and shape mismatches raise ``ValueError``."""
    from ltjax.models.pretrained import check_state_dict, place_tensors, torch_expected

    arch = dict(block_config=tuple(int(n) for n in block_config), growth_rate=int(growth_rate),
                num_init_features=int(num_init_features), bn_size=int(bn_size))
    label = _label(arch)
    if any(k.startswith("densenet121.") for k in state_dict):  # CheXNet's checkpoint: module.densenet121.features...
        state_dict = {k[len("densenet121."):] if k.startswith("densenet121.") else k: v for k, v in state_dict.items()}
    original = {}
    for key in state_dict:  # current spelling -> the key as the checkpoint spells it, for the messages
        m = _OLD_KEY.match(key)
        original[m.group(1) + m.group(2) if m else key] = key
    sd = rename_old_keys(state_dict)
    stem = sd.get("features.conv0.weight")
    in_channels = int(np.shape(stem)[1]) if stem is not None and np.ndim(stem) == 4 else 3
    convs, bns = torch_layout(in_channels=in_channels, **arch)
    expected = torch_expected({t: (_flax_path(t), shape) for t, shape in convs.items()},
                              {t: (_flax_path(t), c) for t, c in bns.items()})
    ignored = {f"{t}.num_batches_tracked" for t in bns} | {k for k in sd if k.startswith("classifier.")}
    check_state_dict(sd, expected, ignored, label,
                     f"is it a torchvision DenseNet checkpoint with block_config {arch['block_config']}, "
                     f"growth_rate {arch['growth_rate']}, num_init_features {arch['num_init_features']}, "
                     f"bn_size {arch['bn_size']}?", spelled=original)
    return place_tensors(sd, expected, original)


def load_pretrained_backbone(variables: Mapping, path: str | os.PathLike | Mapping[str, Any], model_cfg=None) -> Any:
    """A copy of a DenseNet classifier's ``variables`` with the trunk's params and batch_stats from the
    torchvision checkpoint at ``path`` (or an already-read state dict); the neck and head keep their values.
    ``model_cfg`` gives the architecture (DenseNet-121 when None).  Every converted leaf must have the
    existing leaf's shape and takes its dtype; the result has the input's container type."""
    from ltjax.models.pretrained import read_state_dict, replace_subtrees

    cfg = resolve_model_config(model_cfg, defaults())
    arch = _arch(cfg)
    if isinstance(path, Mapping):
        state_dict = path
    else:
        state_dict = read_state_dict(os.path.expanduser(os.fspath(path)))
    params, batch_stats, origin = torchvision_densenet_to_flax(state_dict, **arch)
    trunk = ("backbone", "trunk")
    return replace_subtrees(
        variables,
        {("params", *trunk): params, ("batch_stats", *trunk): batch_stats},
        origin={k.replace("/", "/backbone/trunk/", 1): v for k, v in origin.items()},
        state_dict=state_dict,
        model_label=_label(arch),
        structure_hint=(
            "a DenseNet classifier's {'params': {'backbone': {'trunk': ...}}, 'batch_stats': {'backbone': "
            "{'trunk': ...}}} (built by ltjax.models.build_model with model.name 'densenet121')"
        ),
    )


def load_pretrained(variables, pretrained, model_cfg):
    """The ``ModelSpec.load_pretrained`` hook: ``model.pretrained`` is a torchvision state dict file."""
    return load_pretrained_backbone(variables, pretrained, model_cfg)


__all__ = [
    "DenseNet",
    "DenseBlock",
    "DenseLayer",
    "Transition",
    "defaults",
    "build",
    "trainable_mask",
    "num_features",
    "stage_module_names",
    "frozen_module_names",
    "rename_old_keys",
    "torch_layout",
    "torchvision_densenet_to_flax",
    "load_pretrained_backbone",
    "load_pretrained",
    "WEIGHTS_URL",
]