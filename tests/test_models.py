"""Tests for ltjax.models: registry, shapes/dtypes, torchvision structure, freezing, norm_eval, init.

Random initialisation compiles one RNG kernel per distinct parameter shape (tens of seconds for a
ResNet on CPU), so most ResNet tests fill the ``jax.eval_shape`` of the variables with numpy
random values (``_random_variables``); the real initialisers are exercised once end to end
(``test_real_init_resnet18``) and on the standalone neck / head / block modules.  Images are
34x34: the odd map sizes along the way (17, 9, 5, 3) exercise the padding conventions.
"""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax.models import MODELS, BasicBlock, Bottleneck, LinearHead, PFCNeck, build_model, model_defaults, trainable_mask

NUM_CLASSES = 5
IMG = (34, 34, 3)


def _cfg(name, **overrides):
    cfg = model_defaults(name)
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def _normal(seed, shape):
    return jnp.asarray(np.random.RandomState(seed).normal(size=shape), jnp.float32)


def _images(seed, batch=2):
    return _normal(seed, (batch, *IMG))


def _key_rbg(seed):
    """An rbg PRNG key: its kernels compile much faster than threefry's on CPU (one per shape)."""
    return jax.random.key(seed, impl="rbg")


def _init(model, x):
    return model.init({"params": _key_rbg(0), "dropout": _key_rbg(1)}, x, train=False)


def _shapes(model, input_shape, batch=1):
    x = jnp.zeros((batch, *input_shape), jnp.float32)
    return jax.eval_shape(lambda: _init(model, x))


def _key(k):
    return str(getattr(k, "key", k))


def _flat(tree):
    """{'a/b/c': leaf} for a nested dict."""
    return {"/".join(_key(k) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _random_variables(model, input_shape=IMG, seed=0):
    """Variables with the model's structure and random values: kaiming-scaled kernels, BN affine
    around (1, 0) and running stats with var in [0.5, 2] (so eval-mode BatchNorm is not the identity)."""
    rng = np.random.RandomState(seed)

    def fill(path, leaf):
        name, shape = _key(path[-1]), leaf.shape
        if name == "kernel":
            value = rng.normal(0.0, math.sqrt(2.0 / (shape[-1] * math.prod(shape[:-2]))), shape)
        elif name == "scale":
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "var":
            value = rng.uniform(0.5, 2.0, shape)
        else:  # bias, mean
            value = rng.uniform(-0.3, 0.3, shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, _shapes(model, input_shape))


def _intermediates(model, variables, x):
    _, state = model.apply(variables, x, train=False, capture_intermediates=True)
    return state["intermediates"]["backbone"]["trunk"]


# ---------------------------------------------------------------------------------- registry / config


def test_registry_defaults_and_config_errors():
    assert {"mlp", "resnet18", "resnet50"} <= set(MODELS.names())
    cfg = model_defaults("resnet50")
    assert cfg.name == "resnet50"
    assert (cfg.frozen_stages, cfg.norm_eval, cfg.neck, cfg.neck_dim, cfg.neck_dropout, cfg.zero_init_residual) == (
        1, True, "pfc", 256, 0.5, False)
    mcfg = model_defaults("mlp")
    assert (tuple(mcfg.hidden), mcfg.dropout, mcfg.activation, mcfg.norm) == ((256,), 0.0, "relu", "none")
    with pytest.raises(KeyError, match="resnet50"):
        model_defaults("resnet5")
    with pytest.raises(ValueError, match="frozen_stage'.*valid fields"):
        build_model({"name": "resnet18", "frozen_stage": 2}, NUM_CLASSES, (32, 32, 3))
    with pytest.raises(ValueError, match="unknown mlp activation 'tanh'"):
        build_model(_cfg("mlp", activation="tanh"), NUM_CLASSES, (8,))
    with pytest.raises(ValueError, match="unknown mlp norm 'group'"):
        build_model(_cfg("mlp", norm="group"), NUM_CLASSES, (8,))
    with pytest.raises(ValueError, match="unknown neck 'attn'"):
        build_model(_cfg("resnet18", neck="attn"), NUM_CLASSES, (32, 32, 3))
    with pytest.raises(ValueError, match="frozen_stages"):
        build_model(_cfg("resnet18", frozen_stages=5), NUM_CLASSES, (32, 32, 3))
    with pytest.raises(ValueError, match="compute dtype"):
        build_model(_cfg("mlp"), NUM_CLASSES, (8,), dtype=jnp.float16)
    with pytest.raises(ValueError, match="without the batch axis"):
        build_model(_cfg("resnet18"), NUM_CLASSES, (2, 32, 32, 3))
    with pytest.raises(ValueError, match="num_classes"):
        build_model(_cfg("mlp"), 0, (8,))
    # a missing field takes its default; the module is the same as with the full config
    assert build_model({"name": "resnet18"}, NUM_CLASSES, (32, 32, 3)) == build_model(
        model_defaults("resnet18"), NUM_CLASSES, (32, 32, 3))


def test_bad_input_rank_raises_clear_error():
    image = build_model(_cfg("resnet18"), NUM_CLASSES, (32, 32, 3))
    with pytest.raises(ValueError, match=r"NHWC images \[B, H, W, C\].*model.name='mlp'"):
        image.init(jax.random.key(0), jnp.zeros((2, 3072)), train=False)
    with pytest.raises(ValueError, match="transpose them to NHWC"):
        image.init(jax.random.key(0), jnp.zeros((2, 3, 32, 32)), train=False)
    vec = build_model(_cfg("mlp"), NUM_CLASSES, (12,))
    with pytest.raises(ValueError, match=r"feature vectors \[B, D\].*flatten"):
        vec.init(jax.random.key(0), jnp.zeros((2, 4, 3)), train=False)
    with pytest.raises(ValueError, match="built for 12 input features"):
        vec.init(jax.random.key(0), jnp.zeros((2, 13)), train=False)


# ---------------------------------------------------------------------------------- shapes / dtypes


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("name,input_shape", [("mlp", (10,)), ("resnet18", IMG), ("resnet50", IMG)])
def test_output_shapes_and_dtypes(name, input_shape, dtype):
    model = build_model(_cfg(name), NUM_CLASSES, input_shape, dtype=dtype)
    variables = _shapes(model, input_shape, batch=2)
    for leaf in jax.tree.leaves(variables):
        assert leaf.dtype == jnp.float32  # params and batch_stats stay float32 whatever the compute dtype
    assert ("batch_stats" in variables) == name.startswith("resnet")
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    mutable = ["batch_stats"] if "batch_stats" in variables else []
    train_out, updates = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=mutable, rngs={"dropout": _key_rbg(4)}), variables, x)
    for o in (out, train_out):
        chex.assert_shape(o["logits"], (2, NUM_CLASSES))
        chex.assert_shape(o["features"], (2, 256))
        assert o["logits"].dtype == jnp.float32
        assert o["features"].dtype == dtype
    assert set(updates) == set(mutable)
    chex.assert_trees_all_equal_shapes_and_dtypes(updates, {k: variables[k] for k in mutable})


def test_mlp_runs_in_bfloat16_close_to_float32():
    x = _normal(2, (4, 10))
    f32 = build_model(_cfg("mlp", norm="layer"), NUM_CLASSES, (10,))
    bf16 = build_model(_cfg("mlp", norm="layer"), NUM_CLASSES, (10,), dtype="bfloat16")
    variables = _init(f32, x)
    a, b = f32.apply(variables, x, train=False), bf16.apply(variables, x, train=False)
    assert b["logits"].dtype == jnp.float32 and b["features"].dtype == jnp.bfloat16
    rel = jnp.linalg.norm(a["features"] - b["features"].astype(jnp.float32)) / jnp.linalg.norm(a["features"])
    assert 0 < rel < 0.02, rel  # bf16 rounding, not a different computation


def test_resnet_bfloat16_computes_the_same_function():
    f32 = build_model(_cfg("resnet18", neck="gap"), NUM_CLASSES, IMG, dtype=jnp.float32)
    bf16 = build_model(_cfg("resnet18", neck="gap"), NUM_CLASSES, IMG, dtype="bfloat16")
    x = _images(5)
    variables = _random_variables(f32)
    a = f32.apply(variables, x, train=False)
    b = jax.jit(lambda v, x: bf16.apply(v, x, train=False))(variables, x)  # one compile beats per-op bf16 kernels
    assert b["logits"].dtype == jnp.float32 and b["features"].dtype == jnp.bfloat16
    chex.assert_tree_all_finite(b)
    rel = jnp.linalg.norm(a["features"] - b["features"].astype(jnp.float32)) / jnp.linalg.norm(a["features"])
    assert 0 < rel < 0.05, rel


def test_real_init_resnet18():
    """The real initialisers end to end (jit + rbg key: compiling threefry per shape is slow on CPU)."""
    model = build_model(_cfg("resnet18", zero_init_residual=True), 100, IMG)
    x = _images(6)
    variables = jax.jit(lambda x: model.init(_key_rbg(0), x, train=False))(x)
    p = _flat(variables["params"])
    # torchvision conv init: kaiming normal, fan_out, gain sqrt(2)
    k = np.asarray(p["backbone/trunk/layer4_1/conv2/kernel"])
    assert abs(k.std() - math.sqrt(2 / (9 * 512))) < 0.02 * math.sqrt(2 / (9 * 512))
    # BN scale 1 except the last BN of each residual block (zero_init_residual); BN bias 0
    for path, leaf in p.items():
        if path.startswith("backbone/trunk") and path.endswith("scale"):
            want = 0.0 if path.split("/")[-2] == "bn2" and "/layer" in path else 1.0
            np.testing.assert_array_equal(leaf, want, err_msg=path)
        if path.startswith("backbone/trunk") and path.endswith("bias"):
            np.testing.assert_array_equal(leaf, 0.0, err_msg=path)
    # head N(0, 0.01), bias 0; PFC fc kaiming fan_out (std sqrt(2 / 256)), bias 0
    assert abs(np.asarray(p["head/fc/kernel"]).std() - 0.01) < 1e-3
    np.testing.assert_array_equal(p["head/fc/bias"], 0.0)
    assert abs(np.asarray(p["backbone/neck/fc/kernel"]).std() - math.sqrt(2 / 256)) < 3e-3
    np.testing.assert_array_equal(p["backbone/neck/fc/bias"], 0.0)
    stats = _flat(variables["batch_stats"])
    for path, leaf in stats.items():
        np.testing.assert_array_equal(leaf, 1.0 if path.endswith("var") else 0.0, err_msg=path)
    # zero-initialised residual branches: layer1_1 (no downsample) returns relu(input) = its input
    inter = _intermediates(model, variables, x)
    chex.assert_trees_all_equal(inter["layer1_1"]["__call__"][0], inter["layer1_0"]["__call__"][0])
    out = model.apply(variables, x, train=False)
    chex.assert_shape(out["logits"], (2, 100))
    chex.assert_tree_all_finite(out)


@pytest.mark.parametrize("block,last_bn,planes", [(BasicBlock, "bn2", 8), (Bottleneck, "bn3", 4)])
def test_zero_init_residual_block_is_identity(block, last_bn, planes):
    m = block(planes=planes, zero_init_residual=True)
    x = jax.nn.relu(_normal(8, (2, 5, 5, planes * m.expansion)))
    variables = m.init(_key_rbg(0), x, use_running_average=True)
    scales = {k.split("/")[0]: v for k, v in _flat(variables["params"]).items() if k.endswith("scale")}
    assert "downsample_bn" not in scales  # same channels, stride 1: no downsample
    for name, scale in scales.items():
        np.testing.assert_array_equal(scale, 0.0 if name == last_bn else 1.0, err_msg=name)
    chex.assert_trees_all_equal(m.apply(variables, x, use_running_average=True), x)


# ---------------------------------------------------------------------------------- torchvision structure


def test_backbone_param_counts_equal_torchvision():
    # torchvision totals minus the 1000-way fc (weight 512|2048 x 1000 + bias 1000)
    assert 11_689_512 - (512 * 1000 + 1000) == 11_176_512
    assert 25_557_032 - (2048 * 1000 + 1000) == 23_508_032
    for name, expected, width in [("resnet18", 11_176_512, 512), ("resnet50", 23_508_032, 2048)]:
        shapes = _shapes(build_model(_cfg(name), NUM_CLASSES, IMG), IMG)
        trunk = shapes["params"]["backbone"]["trunk"]
        assert sum(math.prod(a.shape) for a in jax.tree.leaves(trunk)) == expected
        # PFC neck Linear(width -> 256) + BN1d(256); head Linear(256 -> C)
        neck = shapes["params"]["backbone"]["neck"]
        assert sum(math.prod(a.shape) for a in jax.tree.leaves(neck)) == width * 256 + 256 + 2 * 256
        chex.assert_shape(shapes["params"]["head"]["fc"]["kernel"], (256, NUM_CLASSES))


def _torchvision_state_dict_shapes(depth):
    """The state dict of torchvision.models.resnet{depth}() without fc, written out from its definition."""
    bottleneck = depth == 50
    blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
    expansion = 4 if bottleneck else 1
    sd = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, c):
        sd.update({f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")})

    bn("bn1", 64)
    inplanes = 64
    for s, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for i in range(n):
            p = f"layer{s}.{i}"
            stride = 2 if (i == 0 and s > 1) else 1
            if bottleneck:
                convs = [(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            else:
                convs = [(planes, inplanes, 3), (planes, planes, 3)]
            for j, (o, c, k) in enumerate(convs, start=1):
                sd[f"{p}.conv{j}.weight"] = (o, c, k, k)
                bn(f"{p}.bn{j}", o)
            if stride != 1 or inplanes != planes * expansion:
                sd[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    return sd


def _torch_key_to_ours(key, shape):
    """The 'simple name mapping' a converter would use: torchvision key -> (collection, path, shape)."""
    *mods, leaf = key.split(".")
    if mods[0].startswith("layer"):
        sub = mods[2] if mods[2] != "downsample" else ("downsample_conv" if mods[3] == "0" else "downsample_bn")
        path = [f"{mods[0]}_{mods[1]}", sub]
    else:
        path = mods
    conv = "conv" in path[-1]
    collection = "batch_stats" if leaf.startswith("running") else "params"
    name = {"weight": "kernel" if conv else "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}[leaf]
    ours_shape = (shape[2], shape[3], shape[1], shape[0]) if len(shape) == 4 else shape
    return collection, "/".join(path + [name]), ours_shape


@pytest.mark.parametrize("depth,n_conv", [(18, 20), (50, 53)])
def test_names_mirror_torchvision_state_dict(depth, n_conv):
    shapes = _shapes(build_model(_cfg(f"resnet{depth}"), NUM_CLASSES, IMG), IMG)
    ours = {
        coll: {k: v.shape for k, v in _flat(shapes[coll]["backbone"]["trunk"]).items()}
        for coll in ("params", "batch_stats")
    }
    expected = {"params": {}, "batch_stats": {}}
    for key, shape in _torchvision_state_dict_shapes(depth).items():
        coll, path, ours_shape = _torch_key_to_ours(key, shape)
        expected[coll][path] = ours_shape
    assert ours == expected
    assert sum(k.endswith("/kernel") for k in ours["params"]) == n_conv  # convs, no biases anywhere
    assert sum(k.endswith("/scale") for k in ours["params"]) == n_conv  # one BN per conv
    assert not any(k.endswith("/bias") and "conv" in k for k in ours["params"])


@pytest.mark.parametrize("depth", [18, 50])
def test_stage_sizes_and_stride_placement_at_224(depth):
    model = build_model(_cfg(f"resnet{depth}"), NUM_CLASSES, (224, 224, 3))
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    variables = _shapes(model, (224, 224, 3))
    inter = jax.eval_shape(lambda v, x: _intermediates(model, v, x), variables, x)
    out = lambda *path: _reduce_get(inter, path)["__call__"][0].shape  # noqa: E731
    e = 4 if depth == 50 else 1
    assert out("conv1") == (1, 112, 112, 64)
    last = {18: (1, 1, 1, 1), 50: (2, 3, 5, 2)}[depth]
    for s, (hw, c) in enumerate(zip((56, 28, 14, 7), (64, 128, 256, 512)), start=1):
        assert out(f"layer{s}_{last[s - 1]}") == (1, hw, hw, c * e)
    # stride of a stage: on conv2 (3x3) of a Bottleneck, on conv1 (3x3) of a BasicBlock; the 1x1
    # downsample carries it too.  Input of layer2 is 56x56.
    if depth == 50:
        assert out("layer2_0", "conv1") == (1, 56, 56, 128)
        assert out("layer2_0", "conv2") == (1, 28, 28, 128)
        assert out("layer1_0", "downsample_conv") == (1, 56, 56, 256)  # channel change, stride 1
    else:
        assert out("layer2_0", "conv1") == (1, 28, 28, 128)
        assert "downsample_conv" not in inter["layer1_0"]
    assert out("layer2_0", "downsample_conv") == (1, 28, 28, 128 * e)


def _reduce_get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


# independent numpy forward of the stem and first blocks (torch semantics: symmetric padding)


def _np_conv(x, w, stride, pad):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = w.shape[:2]
    ho, wo = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += x[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :] @ w[i, j]
    return out


def _np_bn(x, p, s):
    return (x - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]


def _np_maxpool(x):
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    ho, wo = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    return np.max([x[:, i:i + 2 * ho:2, j:j + 2 * wo:2] for i in range(3) for j in range(3)], axis=0)


def _np_block(x, p, s, stride, bottleneck):
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    if bottleneck:
        y = relu(_np_bn(_np_conv(x, p["conv1"]["kernel"], 1, 0), p["bn1"], s["bn1"]))
        y = relu(_np_bn(_np_conv(y, p["conv2"]["kernel"], stride, 1), p["bn2"], s["bn2"]))
        y = _np_bn(_np_conv(y, p["conv3"]["kernel"], 1, 0), p["bn3"], s["bn3"])
    else:
        y = relu(_np_bn(_np_conv(x, p["conv1"]["kernel"], stride, 1), p["bn1"], s["bn1"]))
        y = _np_bn(_np_conv(y, p["conv2"]["kernel"], 1, 1), p["bn2"], s["bn2"])
    if "downsample_conv" in p:
        x = _np_bn(_np_conv(x, p["downsample_conv"]["kernel"], stride, 0), p["downsample_bn"], s["downsample_bn"])
    return relu(y + x)


@pytest.mark.parametrize("depth", [18, 50])
def test_stem_and_blocks_match_independent_numpy_forward(depth):
    model = build_model(_cfg(f"resnet{depth}", neck="gap"), NUM_CLASSES, IMG)
    x = _images(7)
    variables = _random_variables(model)
    inter = _intermediates(model, variables, x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"]["backbone"]["trunk"])
    s = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["batch_stats"]["backbone"]["trunk"])
    h = np.maximum(_np_bn(_np_conv(np.asarray(x, np.float64), p["conv1"]["kernel"], 2, 3), p["bn1"], s["bn1"]), 0)
    assert h.shape[1:3] == (17, 17)
    h = _np_maxpool(h)
    assert h.shape[1:3] == (9, 9)
    bottleneck = depth == 50
    names = [f"layer1_{i}" for i in range(3 if bottleneck else 2)] + ["layer2_0"]
    for name in names:
        h = _np_block(h, p[name], s[name], 2 if name == "layer2_0" else 1, bottleneck)
        chex.assert_trees_all_close(np.asarray(inter[name]["__call__"][0]), h, rtol=1e-4, atol=1e-4)
    assert h.shape[1:3] == (5, 5)
    # the trunk output is the 2x2 map of layer4 (34 -> 17 -> 9 -> 9 -> 5 -> 3 -> 2)
    chex.assert_shape(inter["__call__"][0], (2, 2, 2, 512 * (4 if bottleneck else 1)))


# ---------------------------------------------------------------------------------- freezing / norm_eval


def _expected_frozen(depth, frozen_stages):
    blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
    names = {"conv1", "bn1"} if frozen_stages >= 0 else set()
    for s in range(1, frozen_stages + 1):
        names |= {f"layer{s}_{i}" for i in range(blocks[s - 1])}
    return names


@pytest.mark.parametrize("frozen_stages", [-1, 0, 1, 4])
def test_trainable_mask_marks_exactly_the_frozen_stages(frozen_stages):
    cfg = _cfg("resnet18", frozen_stages=frozen_stages)
    params = _shapes(build_model(cfg, NUM_CLASSES, IMG), IMG)["params"]
    mask = trainable_mask(cfg, params)
    chex.assert_trees_all_equal_structs(mask, params)
    flat = _flat(mask)
    frozen = {k for k, v in flat.items() if not v}
    want = {k for k in flat if k.startswith("backbone/trunk/") and k.split("/")[2] in _expected_frozen(18, frozen_stages)}
    assert frozen == want
    assert len(frozen) == {-1: 0, 0: 3, 1: 3 + 2 * 6, 4: 60}[frozen_stages]  # conv kernel + BN scale/bias per conv
    if frozen_stages >= 0:  # a tree without the backbone (e.g. the head alone): a clear error, no silent mask
        with pytest.raises(ValueError, match=r"params lack .*conv1"):
            trainable_mask(cfg, {"head": params["head"]})


def test_mlp_trainable_mask_is_all_true():
    cfg = _cfg("mlp", hidden=(4,), norm="batch")
    params = _init(build_model(cfg, NUM_CLASSES, (6,)), jnp.zeros((2, 6)))["params"]
    mask = trainable_mask(cfg, params)
    chex.assert_trees_all_equal_structs(mask, params)
    assert all(jax.tree.leaves(mask)) and len(jax.tree.leaves(mask)) == 6


def test_frozen_stages_get_exactly_zero_gradients():
    x = _images(11)
    cfg = _cfg("resnet18", frozen_stages=1)
    model = build_model(cfg, NUM_CLASSES, IMG)
    variables = _random_variables(model)
    w = _normal(9, (x.shape[0], NUM_CLASSES))

    def loss(params):
        out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                             rngs={"dropout": _key_rbg(10)})
        return jnp.sum(out["logits"] * w)

    grads = jax.grad(loss)(variables["params"])
    mask = _flat(trainable_mask(cfg, variables["params"]))
    for path, g in _flat(grads).items():
        if mask[path]:
            assert np.any(np.asarray(g) != 0), f"trainable {path} got no gradient"
        else:
            np.testing.assert_array_equal(g, 0.0, err_msg=path)
    assert sum(not m for m in mask.values()) == 15
    # the frozen parameters do change the output, so their zero gradients come from the freeze
    for name in ("conv1", "layer1_1"):
        params = jax.tree_util.tree_map_with_path(
            lambda p, a: a * 1.5 if _key(p[2]) == name else a, variables["params"])
        assert loss(params) != loss(variables["params"]), name


def _train_stats(cfg, x):
    model = build_model(cfg, NUM_CLASSES, x.shape[1:])
    variables = _random_variables(model)
    (out, updates) = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": _key_rbg(0)})
    _, state = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"],
                           capture_intermediates=True, rngs={"dropout": _key_rbg(0)})
    return model, variables, out, updates["batch_stats"], state["intermediates"]


def test_norm_eval_freezes_backbone_batch_stats_but_not_the_pfc_neck():
    x = _images(12)
    model, variables, _, stats, inter = _train_stats(_cfg("resnet18", frozen_stages=-1, norm_eval=True), x)
    chex.assert_trees_all_equal(stats["backbone"]["trunk"], variables["batch_stats"]["backbone"]["trunk"])
    # neck BN: running stat <- 0.9 * old + 0.1 * batch mean of the neck's fc output
    fc_out = inter["backbone"]["neck"]["fc"]["__call__"][0]
    old = variables["batch_stats"]["backbone"]["neck"]["bn"]["mean"]
    chex.assert_trees_all_close(stats["backbone"]["neck"]["bn"]["mean"], 0.9 * old + 0.1 * fc_out.mean(0), atol=1e-6)
    # with norm_eval (and a GAP neck, no dropout) training computes exactly what evaluation computes
    gap = build_model(_cfg("resnet18", frozen_stages=-1, neck="gap"), NUM_CLASSES, IMG)
    gap_vars = _random_variables(gap)
    train_out, _ = gap.apply(gap_vars, x, train=True, mutable=["batch_stats"])
    chex.assert_trees_all_equal(train_out, gap.apply(gap_vars, x, train=False))


@pytest.mark.parametrize("frozen_stages", [-1, 1])
def test_norm_eval_false_updates_unfrozen_batch_stats_only(frozen_stages):
    x = _images(13)
    _, variables, _, stats, _ = _train_stats(_cfg("resnet18", frozen_stages=frozen_stages, norm_eval=False), x)
    old = _flat(variables["batch_stats"]["backbone"]["trunk"])
    new = _flat(stats["backbone"]["trunk"])
    frozen = _expected_frozen(18, frozen_stages)
    for path, value in new.items():
        changed = bool(np.any(np.asarray(value) != np.asarray(old[path])))
        assert changed == (path.split("/")[0] not in frozen), path


# ---------------------------------------------------------------------------------- dropout / neck / head


def test_mlp_dropout_only_in_training_and_deterministic_per_key():
    p = 0.5
    model = build_model(_cfg("mlp", hidden=(64,), dropout=p), NUM_CLASSES, (7,))
    x = _normal(14, (8, 7))
    variables = _init(model, x)
    ev = model.apply(variables, x, train=False)["features"]
    chex.assert_trees_all_equal(ev, model.apply(variables, x, train=False)["features"])
    k1, k2 = _key_rbg(20), _key_rbg(21)
    t1 = model.apply(variables, x, train=True, rngs={"dropout": k1})["features"]
    chex.assert_trees_all_equal(t1, model.apply(variables, x, train=True, rngs={"dropout": k1})["features"])
    t2 = model.apply(variables, x, train=True, rngs={"dropout": k2})["features"]
    assert np.any(np.asarray(t1) != np.asarray(t2))
    # each training feature is either dropped or the eval value scaled by 1 / (1 - p)
    kept = np.asarray(t1) != 0
    np.testing.assert_allclose(np.asarray(t1)[kept], np.asarray(ev)[kept] / (1 - p), rtol=1e-6)
    dropped = (~kept) & (np.asarray(ev) != 0)
    assert 0.3 < dropped.sum() / (np.asarray(ev) != 0).sum() < 0.7


def test_pfc_neck_batchnorm_and_dropout_in_training():
    p = 0.5
    model = build_model(_cfg("resnet18", neck_dim=64, neck_dropout=p), NUM_CLASSES, IMG)
    x = _images(15)
    variables = _random_variables(model)
    key = _key_rbg(22)
    out, state = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"],
                             capture_intermediates=True, rngs={"dropout": key})
    fc_out = np.asarray(state["intermediates"]["backbone"]["neck"]["fc"]["__call__"][0], np.float64)
    bn = variables["params"]["backbone"]["neck"]["bn"]
    normed = (fc_out - fc_out.mean(0)) / np.sqrt(fc_out.var(0) + 1e-5) * np.asarray(bn["scale"]) + np.asarray(bn["bias"])
    feats = np.asarray(out["features"])
    kept = feats != 0
    np.testing.assert_allclose(feats[kept], normed[kept] / (1 - p), rtol=1e-3, atol=1e-4)
    assert 0.3 < 1 - kept.mean() < 0.7
    # the neck's fc input is the global average of the trunk map (ReLU output, no ReLU after the neck)
    fmap = state["intermediates"]["backbone"]["trunk"]["__call__"][0]
    gap = fmap.mean((1, 2))
    neck_fc = variables["params"]["backbone"]["neck"]["fc"]
    chex.assert_trees_all_close(fc_out, np.asarray(gap @ neck_fc["kernel"] + neck_fc["bias"]), rtol=1e-4, atol=1e-5)
    assert np.any(feats < 0)
    same, _ = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})
    chex.assert_trees_all_equal(same, out)
    other, _ = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": _key_rbg(23)})
    assert np.any(np.asarray(other["features"]) != feats)
    ev1 = model.apply(variables, x, train=False)
    chex.assert_trees_all_equal(ev1, model.apply(variables, x, train=False))


def test_head_and_neck_init():
    head = LinearHead(300)
    params = head.init(_key_rbg(16), jnp.zeros((1, 512)))["params"]["fc"]
    kernel = np.asarray(params["kernel"])
    chex.assert_shape(kernel, (512, 300))
    assert abs(kernel.std() - 0.01) < 3e-4
    assert abs(kernel.mean()) < 2e-4
    np.testing.assert_array_equal(params["bias"], 0.0)
    neck = PFCNeck(features=256)
    variables = neck.init(_key_rbg(17), jnp.zeros((2, 3, 3, 2048)), train=False)
    fc = variables["params"]["fc"]
    chex.assert_shape(fc["kernel"], (2048, 256))
    assert abs(np.asarray(fc["kernel"]).std() - math.sqrt(2 / 256)) < 0.02 * math.sqrt(2 / 256)
    np.testing.assert_array_equal(fc["bias"], 0.0)
    chex.assert_trees_all_equal(variables["params"]["bn"], {"scale": jnp.ones(256), "bias": jnp.zeros(256)})


# ---------------------------------------------------------------------------------- MLP vs numpy


def _np_gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def test_mlp_matches_numpy_forward_layernorm_gelu():
    model = build_model(_cfg("mlp", hidden=(8, 6), activation="gelu", norm="layer"), NUM_CLASSES, (5,))
    x = _normal(17, (3, 5))
    variables = _init(model, x)
    rng = np.random.RandomState(1)  # non-trivial LayerNorm affine
    variables = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.asarray(rng.normal(1.0, 0.3, a.shape), jnp.float32) if path[-1].key == "scale" else a,
        variables)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    h = np.asarray(x, np.float64)
    for i in range(2):
        h = h @ p["backbone"]["trunk"][f"dense_{i}"]["kernel"] + p["backbone"]["trunk"][f"dense_{i}"]["bias"]
        ln = p["backbone"]["trunk"][f"norm_{i}"]
        h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5) * ln["scale"] + ln["bias"]
        h = _np_gelu(h)
    logits = h @ p["head"]["fc"]["kernel"] + p["head"]["fc"]["bias"]
    out = model.apply(variables, x, train=False)
    chex.assert_trees_all_close(out["features"], h, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(out["logits"], logits, rtol=1e-5, atol=1e-6)


def test_mlp_matches_numpy_forward_batchnorm_relu_training():
    model = build_model(_cfg("mlp", hidden=(6,), activation="relu", norm="batch"), NUM_CLASSES, (4,))
    x = _normal(18, (5, 4))
    variables = _init(model, x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"]["backbone"]["trunk"])
    z = np.asarray(x, np.float64) @ p["dense_0"]["kernel"] + p["dense_0"]["bias"]
    h = np.maximum((z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5), 0)  # scale 1, bias 0 at init
    out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    chex.assert_trees_all_close(out["features"], h, rtol=1e-5, atol=1e-6)
    stats = updates["batch_stats"]["backbone"]["trunk"]["norm_0"]
    chex.assert_trees_all_close(stats["mean"], 0.1 * z.mean(0), rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(stats["var"], 0.9 + 0.1 * z.var(0), rtol=1e-5, atol=1e-7)
    # evaluation uses the running statistics (mean 0, var 1 at init): x / sqrt(1 + eps)
    ev = model.apply(variables, x, train=False)["features"]
    chex.assert_trees_all_close(ev, np.maximum(z / np.sqrt(1 + 1e-5), 0), rtol=1e-5, atol=1e-6)


def test_cosine_head_outputs_cosines_independent_of_feature_scale():
    from ltjax.models.heads import CosineHead, make_head

    head = CosineHead(5)
    f = jax.random.normal(jax.random.key(1), (4, 7))
    variables = head.init(jax.random.key(0), f)
    w = np.asarray(variables["params"]["kernel"])
    assert w.shape == (7, 5) and w.min() >= -1 and w.max() <= 1
    out = np.asarray(head.apply(variables, f))
    fn = np.asarray(f) / np.linalg.norm(np.asarray(f), axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    np.testing.assert_allclose(out, fn @ wn, atol=1e-5)
    np.testing.assert_allclose(np.asarray(head.apply(variables, 37.0 * f)), out, atol=1e-5)
    assert np.abs(out).max() <= 1 + 1e-6
    with pytest.raises(ValueError, match="model.head"):
        make_head("arcface", 5)
