"""ImageNet ResNets ('resnet18', 'resnet50') with torchvision's exact structure, plus stage freezing.

Structure (torchvision ResNet, i.e. v1.5): stem = 7x7/2 conv (padding 3) + BN + ReLU + 3x3/2 max
pool (padding 1); four stages ``layer1..layer4`` of BasicBlocks (18) or Bottlenecks (50) with
64/128/256/512 planes; the stride of a stage sits on the first block's 3x3 conv (``conv2`` in a
Bottleneck, ``conv1`` in a BasicBlock); a block gets a ``downsample`` (1x1 conv with the stride +
BN) when its stride is not 1 or its channel count changes.  Convs have no bias; BatchNorm uses
momentum 0.9 (torch's 0.1) and epsilon 1e-5.  Conv init is torchvision's (kaiming-normal, fan_out,
gain sqrt(2)); BN scale 1, bias 0; ``zero_init_residual`` zeroes the last BN scale of each block.

Parameter names mirror torchvision's state dict, so converting weights is a name mapping:
``conv1``, ``bn1``, then one module per block ``layer{s}_{i}`` holding ``conv1/bn1/conv2/bn2
[/conv3/bn3][/downsample_conv/downsample_bn]``.  torchvision ``layer2.0.downsample.0.weight``
[O, I, kh, kw] is ``layer2_0/downsample_conv/kernel`` [kh, kw, I, O]; ``bn.weight/bias`` are
``scale/bias`` in 'params', ``running_mean/var`` are ``mean/var`` in 'batch_stats'.

Inputs are NHWC float images, already normalised by the data pipeline.  ``frozen_stages`` has
mmcv's meaning: -1 freezes nothing, 0 the stem (conv1 + bn1), k >= 1 the stem and layer1..layerk.
Frozen parts get ``jax.lax.stop_gradient`` on the output of the last frozen stage (no backward pass
through them), their BatchNorms always use running statistics, and ``trainable_mask`` marks their
parameters False so the optimizer skips them (updates and weight decay).  ``norm_eval=True`` puts
every backbone BatchNorm in evaluation mode, also in training (batch_stats never change); the PFC
neck's BatchNorm is not part of the backbone and still trains.
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
from ltjax.models.necks import NECKS, batch_norm as _bn, make_neck

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, stride: int, padding: int, dtype: Any, name: str, kernel_init=None) -> nn.Conv:
    """A bias-free square conv with torch's explicit symmetric padding (``kernel_init``: default ``conv_init``)."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=conv_init if kernel_init is None else kernel_init,
        name=name,
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs (stride on ``conv1``), expansion 1."""

    planes: int
    stride: int = 1
    zero_init_residual: bool = False
    dtype: Any = jnp.float32

    expansion = 1

    @nn.compact
    def __call__(self, x, *, use_running_average: bool):
        out_channels = self.planes * self.expansion
        y = _conv(self.planes, 3, self.stride, 1, self.dtype, "conv1")(x)
        y = nn.relu(_bn(use_running_average, self.dtype, "bn1")(y))
        y = _conv(self.planes, 3, 1, 1, self.dtype, "conv2")(y)
        y = _bn(use_running_average, self.dtype, "bn2", self.zero_init_residual)(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_channels:
            shortcut = _conv(out_channels, 1, self.stride, 0, self.dtype, "downsample_conv")(x)
            shortcut = _bn(use_running_average, self.dtype, "downsample_bn")(shortcut)
        return nn.relu(y + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here: v1.5) -> 1x1 convs, expansion 4."""

    planes: int
    stride: int = 1
    zero_init_residual: bool = False
    dtype: Any = jnp.float32

    expansion = 4

    @nn.compact
    def __call__(self, x, *, use_running_average: bool):
        out_channels = self.planes * self.expansion
        y = _conv(self.planes, 1, 1, 0, self.dtype, "conv1")(x)
        y = nn.relu(_bn(use_running_average, self.dtype, "bn1")(y))
        y = _conv(self.planes, 3, self.stride, 1, self.dtype, "conv2")(y)
        y = nn.relu(_bn(use_running_average, self.dtype, "bn2")(y))
        y = _conv(out_channels, 1, 1, 0, self.dtype, "conv3")(y)
        y = _bn(use_running_average, self.dtype, "bn3", self.zero_init_residual)(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_channels:
            shortcut = _conv(out_channels, 1, self.stride, 0, self.dtype, "downsample_conv")(x)
            shortcut = _bn(use_running_average, self.dtype, "downsample_bn")(shortcut)
        return nn.relu(y + shortcut)


# depth -> (block class, blocks per stage), as torchvision.
ARCHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    50: (Bottleneck, (3, 4, 6, 3)),
}
STAGE_PLANES = (64, 128, 256, 512)


def stage_module_names(depth: int, stage: int) -> list[str]:
    """Top-level parameter names of one stage: ``['conv1', 'bn1']`` for 0, ``layer{s}_{i}`` else."""
    if stage == 0:
        return ["conv1", "bn1"]
    return [f"layer{stage}_{i}" for i in range(ARCHS[depth][1][stage - 1])]


def _check_options(depth: int, frozen_stages: int) -> None:
    if depth not in ARCHS:
        raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(ARCHS)}")
    if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= 4:
        raise ValueError(
            f"frozen_stages must be an int in [-1, 4] (-1 none, 0 stem, k stem + layer1..layerk), got {frozen_stages!r}"
        )


class ResNet(nn.Module):
    """The ResNet trunk: NHWC images [B, H, W, in_channels] -> feature map [B, H/32, W/32, 512*expansion]."""

    depth: int = 50
    frozen_stages: int = -1
    norm_eval: bool = False
    zero_init_residual: bool = False
    in_channels: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        _check_options(self.depth, self.frozen_stages)
        if x.ndim != 4:
            raise ValueError(
                f"resnet{self.depth} expects NHWC images [B, H, W, C], got shape {x.shape}; use model.name='mlp' "
                "for feature vectors [B, D]"
            )
        if self.in_channels is not None and x.shape[-1] != self.in_channels:
            raise ValueError(
                f"resnet{self.depth} was built for {self.in_channels} input channels (NHWC), got shape {x.shape}; "
                "if the images are NCHW, transpose them to NHWC"
            )
        block_cls, stage_sizes = ARCHS[self.depth]

        def running_average(stage: int) -> bool:
            return (not train) or self.norm_eval or stage <= self.frozen_stages

        x = jnp.asarray(x, self.dtype)
        x = _conv(64, 7, 2, 3, self.dtype, "conv1")(x)
        x = nn.relu(_bn(running_average(0), self.dtype, "bn1")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        if self.frozen_stages >= 0:
            x = jax.lax.stop_gradient(x)
        for stage, (planes, blocks) in enumerate(zip(STAGE_PLANES, stage_sizes), start=1):
            for i in range(blocks):
                x = block_cls(
                    planes=planes,
                    stride=2 if (i == 0 and stage > 1) else 1,
                    zero_init_residual=self.zero_init_residual,
                    dtype=self.dtype,
                    name=f"layer{stage}_{i}",
                )(x, use_running_average=running_average(stage))
            if stage <= self.frozen_stages:
                x = jax.lax.stop_gradient(x)
        return x


def _defaults(name: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = name
    c.frozen_stages = 1  # -1 none, 0 stem, k >= 1 stem + layer1..layerk (mmcv)
    c.norm_eval = True  # every backbone BatchNorm uses running statistics, also in training
    c.neck = "pfc"  # "pfc" (GAP -> Linear -> BN1d -> Dropout) | "gap"
    c.neck_dim = 256  # pfc output width
    c.neck_dropout = 0.5  # pfc dropout
    c.zero_init_residual = False  # zero the last BN scale of each residual block
    # torchvision ImageNet weights for the backbone (a state-dict file: .pth or .safetensors, e.g.
    # resnet50-0676ba61.pth); "" = random initialisation.  Loaded once, at the start of a fresh run.
    c.pretrained = ""
    c.head = "linear"  # "linear" (N(0, 0.01) init, bias 0) | "cosine" (normalised, LDAM)
    return c


def _build(depth: int, model_cfg, num_classes: int, input_shape: tuple, dtype: Any = jnp.float32) -> nn.Module:
    cfg = resolve_model_config(model_cfg, _defaults(f"resnet{depth}"))
    num_classes = check_num_classes(num_classes)
    _, _, channels = check_input_shape(input_shape, 3, f"resnet{depth} takes NHWC images, input_shape (H, W, C)")
    dtype = resolve_compute_dtype(dtype)
    _check_options(depth, cfg.frozen_stages)
    if cfg.neck not in NECKS:
        raise ValueError(f"unknown neck {cfg.neck!r}; choose one of {', '.join(NECKS)}")
    trunk = ResNet(
        depth=depth,
        frozen_stages=int(cfg.frozen_stages),
        norm_eval=bool(cfg.norm_eval),
        zero_init_residual=bool(cfg.zero_init_residual),
        in_channels=channels,
        dtype=dtype,
    )
    neck = make_neck(cfg.neck, features=cfg.neck_dim, dropout=float(cfg.neck_dropout), dtype=dtype)
    return Classifier(backbone=Backbone(trunk=trunk, neck=neck), head=make_head(cfg.head, num_classes, dtype))


def frozen_module_names(depth: int, frozen_stages: int) -> set[str]:
    """Top-level ResNet module names frozen by ``frozen_stages``."""
    _check_options(depth, frozen_stages)
    return {name for stage in range(frozen_stages + 1) for name in stage_module_names(depth, stage)}


def _trainable_mask(depth: int, model_cfg, params) -> Any:
    """False exactly for parameters under ``backbone/trunk/<frozen module>`` (found anywhere in a path)."""
    cfg = resolve_model_config(model_cfg, _defaults(f"resnet{depth}"))
    frozen = frozen_module_names(depth, cfg.frozen_stages)
    return trunk_trainable_mask(params, frozen, f"{cfg.name} frozen_stages={cfg.frozen_stages}")


def defaults18() -> ml_collections.ConfigDict:
    return _defaults("resnet18")


def defaults50() -> ml_collections.ConfigDict:
    return _defaults("resnet50")


def build18(model_cfg, num_classes: int, input_shape: tuple, dtype: Any = jnp.float32, vocab_size: int = 0) -> nn.Module:
    """ResNet-18 (BasicBlock) + neck + ``LinearHead`` for NHWC images of shape ``input_shape``."""
    return _build(18, model_cfg, num_classes, input_shape, dtype)


def build50(model_cfg, num_classes: int, input_shape: tuple, dtype: Any = jnp.float32, vocab_size: int = 0) -> nn.Module:
    """ResNet-50 (Bottleneck) + neck + ``LinearHead`` for NHWC images of shape ``input_shape``."""
    return _build(50, model_cfg, num_classes, input_shape, dtype)


def trainable_mask18(model_cfg, params) -> Any:
    return _trainable_mask(18, model_cfg, params)


def trainable_mask50(model_cfg, params) -> Any:
    return _trainable_mask(50, model_cfg, params)
