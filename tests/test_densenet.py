"""Tests for ltjax.models.densenet: torchvision's DenseNet in Flax, its weights, freezing.

The end-to-end test writes a random torchvision-layout state dict of a tiny DenseNet (the key list and
OIHW shapes are written out here from torchvision's ``DenseNet`` definition, independently of the
module's mapping) to a ``.safetensors`` file, in torchvision's current key spelling and in the old one
of ``densenet121-a639ec97.pth`` (``denselayer1.norm.1.weight``), loads it through ``model.pretrained``
and compares the trunk's feature map, the features and the logits with a numpy forward computed directly
from the torch-layout arrays (NCHW activations, OIHW kernels, eval-mode BatchNorm, floor pooling).
The image is 37 x 33: the odd sizes along the way (19/17, 10/9, 5/4) exercise the padding and floor
conventions of the stem's max pool and the transitions' average pool.
"""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_pretrained import _write_safetensors

from ltjax.models import (build_model, densenet, load_configured_pretrained, load_pretrained, model_defaults,
                          trainable_mask)

NUM_CLASSES = 5
IMG = (37, 33, 3)
# a tiny DenseNet: 3 blocks (2, 1, 2 layers), growth 4, 9 initial features (an odd transition: 17 -> 8), bn_size 2
TINY = dict(block_config=(2, 1, 2), growth_rate=4, num_init_features=9, bn_size=2)


def _cfg(**overrides):
    cfg = model_defaults("densenet121")
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def _tiny_cfg(**overrides):
    return _cfg(**{**TINY, **overrides})


def _key(k):
    return str(getattr(k, "key", k))


def _flat(tree):
    return {"/".join(_key(k) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _init(model, input_shape=IMG):
    x = jnp.zeros((1, *input_shape), jnp.float32)
    return jax.jit(lambda x: model.init({"params": jax.random.key(0, impl="rbg"),
                                         "dropout": jax.random.key(1, impl="rbg")}, x, train=False))(x)


# ---------------------------------------------------------------------------------- torchvision layout


def _torchvision_densenet_shapes(block_config, growth_rate, num_init_features, bn_size, num_classes=1000):
    """torchvision.models.DenseNet(...).state_dict() keys and shapes, written out from its definition."""
    shapes = {"features.conv0.weight": (num_init_features, 3, 7, 7)}

    def bn(prefix, c):
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{suffix}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("features.norm0", num_init_features)
    num_features = num_init_features
    for i, num_layers in enumerate(block_config):
        for j in range(num_layers):
            p = f"features.denseblock{i + 1}.denselayer{j + 1}"
            cin = num_features + j * growth_rate
            bn(f"{p}.norm1", cin)
            shapes[f"{p}.conv1.weight"] = (bn_size * growth_rate, cin, 1, 1)
            bn(f"{p}.norm2", bn_size * growth_rate)
            shapes[f"{p}.conv2.weight"] = (growth_rate, bn_size * growth_rate, 3, 3)
        num_features += num_layers * growth_rate
        if i != len(block_config) - 1:
            bn(f"features.transition{i + 1}.norm", num_features)
            shapes[f"features.transition{i + 1}.conv.weight"] = (num_features // 2, num_features, 1, 1)
            num_features //= 2
    bn("features.norm5", num_features)
    shapes["classifier.weight"] = (num_classes, num_features)
    shapes["classifier.bias"] = (num_classes,)
    return shapes


def _random_state_dict(seed=0, **arch):
    rng = np.random.RandomState(seed)
    sd = {}
    for key, shape in _torchvision_densenet_shapes(**(arch or TINY)).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = np.asarray(77, np.int64)
        elif len(shape) == 4:
            sd[key] = rng.normal(0, np.sqrt(2.0 / (shape[1] * shape[2] * shape[3])), shape).astype(np.float32)
        elif key.endswith("running_var"):
            sd[key] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif key.endswith(".weight") and not key.startswith("classifier"):  # BN gamma
            sd[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:  # BN beta, running_mean, classifier
            sd[key] = rng.uniform(-0.3, 0.3, shape).astype(np.float32)
    return sd


def _old_spelling(sd):
    """The key spelling of torchvision's 2017 checkpoints: 'denselayer1.norm.1.weight' for 'norm1'."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if len(parts) == 5 and parts[2].startswith("denselayer"):
            parts[3] = f"{parts[3][:-1]}.{parts[3][-1]}"  # norm1 -> norm.1, conv2 -> conv.2
        out[".".join(parts)] = value
    return out


def _save(path, sd):
    _write_safetensors(path, {k: ("I64" if v.dtype == np.int64 else "F32", v) for k, v in sd.items()})


# ---------------------------------------------------------------------------------- independent numpy forward (NCHW)


def _np_conv(x, w, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    _, _, kh, kw = w.shape
    ho, wo = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
            out += np.einsum("nihw,oi->nohw", patch, w[:, :, i, j])
    return out


def _np_bn(x, sd, prefix):
    c = lambda name: sd[f"{prefix}.{name}"][None, :, None, None]  # noqa: E731
    return (x - c("running_mean")) / np.sqrt(c("running_var") + 1e-5) * c("weight") + c("bias")


def _relu(x):
    return np.maximum(x, 0)


def _np_maxpool3s2p1(x):  # nn.MaxPool2d(kernel_size=3, stride=2, padding=1): padding never wins the max
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    ho, wo = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
    return np.max([x[:, :, i:i + 2 * ho:2, j:j + 2 * wo:2] for i in range(3) for j in range(3)], axis=0)


def _np_avgpool2(x):  # nn.AvgPool2d(kernel_size=2, stride=2): floor, an odd last row/column is dropped
    ho, wo = x.shape[2] // 2, x.shape[3] // 2
    x = x[:, :, :2 * ho, :2 * wo]
    return x.reshape(x.shape[0], x.shape[1], ho, 2, wo, 2).mean((3, 5))


def _np_densenet_features(sd, x, block_config):
    """torchvision DenseNet.forward up to (and including) F.relu(features(x))."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    h = _np_maxpool3s2p1(_relu(_np_bn(_np_conv(x, sd["features.conv0.weight"], 2, 3), sd, "features.norm0")))
    for i, num_layers in enumerate(block_config, start=1):
        feats = [h]
        for j in range(1, num_layers + 1):
            p = f"features.denseblock{i}.denselayer{j}"
            cat = np.concatenate(feats, axis=1)
            y = _np_conv(_relu(_np_bn(cat, sd, f"{p}.norm1")), sd[f"{p}.conv1.weight"], 1, 0)
            y = _np_conv(_relu(_np_bn(y, sd, f"{p}.norm2")), sd[f"{p}.conv2.weight"], 1, 1)
            feats.append(y)
        h = np.concatenate(feats, axis=1)
        if i != len(block_config):
            p = f"features.transition{i}"
            h = _np_avgpool2(_np_conv(_relu(_np_bn(h, sd, f"{p}.norm")), sd[f"{p}.conv.weight"], 1, 0))
    return _relu(_np_bn(h, sd, "features.norm5"))


# ---------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("spelling", ["current", "old"])
def test_tiny_densenet_safetensors_matches_numpy_forward_from_torch_layout(tmp_path, spelling):
    sd = _random_state_dict(0)
    written = sd if spelling == "current" else _old_spelling(sd)
    assert (spelling == "old") == ("features.denseblock1.denselayer2.norm.1.weight" in written)
    path = tmp_path / f"tiny_densenet_{spelling}.safetensors"
    _save(path, written)

    cfg = _tiny_cfg(neck="gap", pretrained=str(path))
    model = build_model(cfg, NUM_CLASSES, IMG)
    variables = _init(model)
    new = load_configured_pretrained(cfg, variables)  # the path a training run takes
    chex.assert_trees_all_equal_shapes_and_dtypes(new, variables)
    chex.assert_trees_all_equal(new["params"]["head"], variables["params"]["head"])  # the head is ours
    trunk_p, trunk_s = new["params"]["backbone"]["trunk"], new["batch_stats"]["backbone"]["trunk"]
    np.testing.assert_array_equal(trunk_p["denseblock3"]["denselayer2"]["conv2"]["kernel"],
                                  sd["features.denseblock3.denselayer2.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(trunk_s["transition1"]["norm"]["var"], sd["features.transition1.norm.running_var"])

    x_nchw = np.random.RandomState(3).normal(size=(2, 3, *IMG[:2]))
    out, state = jax.jit(lambda v, x: model.apply(v, x, train=False, capture_intermediates=True))(
        new, jnp.asarray(x_nchw.transpose(0, 2, 3, 1), jnp.float32))
    trunk = np.asarray(state["intermediates"]["backbone"]["trunk"]["__call__"][0])
    ref = _np_densenet_features(sd, x_nchw, TINY["block_config"])
    # 37x33 -> conv0 19x17 -> pool0 10x9 -> t1 5x4 -> t2 2x2; channels 9+2*4=17 -> 8 -> 12 -> 6 -> 6+2*4=14
    assert ref.shape == (2, 14, 2, 2) and np.abs(ref).max() > 0.1 and (ref == 0).any()
    np.testing.assert_allclose(trunk, ref.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    features = ref.mean((2, 3))
    np.testing.assert_allclose(out["features"], features, rtol=1e-4, atol=1e-4 * np.abs(features).max())
    head = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"]["head"]["fc"])
    logits = features @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())


def test_both_spellings_give_the_same_variables_and_pfc_neck_is_untouched():
    sd = _random_state_dict(1)
    model = build_model(_tiny_cfg(), NUM_CLASSES, IMG)  # default PFC neck
    variables = jax.tree.map(lambda s: jnp.full(s.shape, 0.5, s.dtype), jax.eval_shape(lambda: _init(model)))
    a = load_pretrained("densenet121", variables, sd, _tiny_cfg())
    b = load_pretrained("densenet121", variables, _old_spelling(sd), _tiny_cfg())
    chex.assert_trees_all_equal(a, b)
    # CheXNet's checkpoint: module.densenet121.features..., old spelling, a 14-way classifier.0 Sequential
    chexnet = {f"densenet121.{k}": v for k, v in _old_spelling(sd).items() if not k.startswith("classifier.")}
    chexnet["densenet121.classifier.0.weight"] = np.zeros((14, 7), np.float32)
    chex.assert_trees_all_equal(a, load_pretrained("densenet121", variables, chexnet, _tiny_cfg()))
    chex.assert_trees_all_equal(a["params"]["backbone"]["neck"], variables["params"]["backbone"]["neck"])
    chex.assert_trees_all_equal(a["batch_stats"]["backbone"]["neck"], variables["batch_stats"]["backbone"]["neck"])
    assert float(variables["params"]["backbone"]["trunk"]["norm0"]["scale"][0]) == 0.5  # input not modified
    # torchvision's renaming only touches dense layers: 'transition1.norm.weight' is already current
    renamed = densenet.rename_old_keys(_old_spelling(sd))
    assert set(renamed) == set(sd)


# ---------------------------------------------------------------------------------- DenseNet-121's structure


def test_densenet121_param_count_names_and_map_equal_torchvision():
    tv = _torchvision_densenet_shapes((6, 12, 24, 16), 32, 64, 4)
    tv_params = {k: s for k, s in tv.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert sum(math.prod(s) for s in tv_params.values()) == 7_978_856  # torchvision.models.densenet121()
    assert 7_978_856 - (1024 * 1000 + 1000) == 6_953_856
    model = build_model(model_defaults("densenet121"), NUM_CLASSES, (224, 224, 3))
    shapes = jax.eval_shape(lambda: _init(model, (224, 224, 3)))  # shapes only, no weights
    trunk = _flat(shapes["params"]["backbone"]["trunk"])
    assert sum(math.prod(a.shape) for a in trunk.values()) == 6_953_856
    # every torchvision tensor (but the classifier) has a Flax leaf of the transposed shape, and nothing else
    ours = {f"params/{k}": v.shape for k, v in trunk.items()}
    ours.update({f"batch_stats/{k}": v.shape for k, v in _flat(shapes["batch_stats"]["backbone"]["trunk"]).items()})
    expected = {}
    for key, shape in tv.items():
        *mods, leaf = key.split(".")
        if mods[0] == "classifier" or leaf == "num_batches_tracked":
            continue
        coll = "batch_stats" if leaf.startswith("running") else "params"
        name = {"weight": "kernel" if len(shape) == 4 else "scale", "bias": "bias", "running_mean": "mean",
                "running_var": "var"}[leaf]
        expected[f"{coll}/" + "/".join(mods[1:] + [name])] = (shape[2], shape[3], shape[1], shape[0]) if len(
            shape) == 4 else shape
    assert ours == expected
    # the trunk's spatial map, as the spatial methods (CSSFE's SpatialBackbone) see it
    from ltjax.methods.cssfe import SpatialBackbone

    spatial = SpatialBackbone(trunk=model.backbone.trunk)
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    fmap = jax.eval_shape(lambda v, x: spatial.apply(v, x, train=False),
                          {k: shapes[k]["backbone"] for k in ("params", "batch_stats")}, x)
    assert fmap.shape == (2, 7, 7, 1024)


# ---------------------------------------------------------------------------------- freezing / norm_eval


def _expected_frozen(frozen_stages, blocks=3):
    names = {"conv0", "norm0"} if frozen_stages >= 0 else set()
    for b in range(1, frozen_stages + 1):
        names |= {f"denseblock{b}", f"transition{b}" if b < blocks else "norm5"}
    return names


@pytest.mark.parametrize("frozen_stages", [-1, 0, 1, 3])
def test_trainable_mask_marks_exactly_the_frozen_stages(frozen_stages):
    cfg = _tiny_cfg(frozen_stages=frozen_stages)
    params = jax.eval_shape(lambda: _init(build_model(cfg, NUM_CLASSES, IMG)))["params"]
    mask = trainable_mask(cfg, params)
    chex.assert_trees_all_equal_structs(mask, params)
    flat = _flat(mask)
    frozen = {k for k, v in flat.items() if not v}
    want = {k for k in flat if k.startswith("backbone/trunk/") and k.split("/")[2] in _expected_frozen(frozen_stages)}
    assert frozen == want
    # stem: kernel + BN scale/bias (3); a dense layer: 2 kernels + 2 BNs (6); a transition: 3; norm5: 2
    assert len(frozen) == {-1: 0, 0: 3, 1: 3 + 2 * 6 + 3, 3: 3 + 5 * 6 + 2 * 3 + 2}[frozen_stages]
    if frozen_stages == 3:  # everything in the trunk
        assert frozen == {k for k in flat if k.startswith("backbone/trunk/")}
    if frozen_stages >= 0:
        with pytest.raises(ValueError, match=r"params lack .*conv0"):
            trainable_mask(cfg, {"head": params["head"]})


@pytest.mark.parametrize("frozen_stages", [1, 3])
def test_frozen_stages_get_zero_gradients_and_keep_their_batch_stats(frozen_stages):
    cfg = _tiny_cfg(frozen_stages=frozen_stages, norm_eval=False, drop_rate=0.2)
    model = build_model(cfg, NUM_CLASSES, IMG)
    variables = _init(model)
    x = jnp.asarray(np.random.RandomState(11).normal(size=(4, *IMG)), jnp.float32)
    w = jnp.asarray(np.random.RandomState(9).normal(size=(4, NUM_CLASSES)), jnp.float32)

    def loss(params):
        out, updates = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                                   rngs={"dropout": jax.random.key(10, impl="rbg")})
        return jnp.sum(out["logits"] * w), updates["batch_stats"]

    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))  # one compilation for the three calls
    (loss_value, stats), grads = value_and_grad(variables["params"])
    mask = _flat(trainable_mask(cfg, variables["params"]))
    frozen = _expected_frozen(frozen_stages)
    for path, g in _flat(grads).items():
        if mask[path]:
            assert np.any(np.asarray(g) != 0), f"trainable {path} got no gradient"
        else:
            assert path.split("/")[2] in frozen
            np.testing.assert_array_equal(g, 0.0, err_msg=path)
    # norm_eval=False: the frozen stages' BatchNorms still use (and keep) their running statistics
    old, new = _flat(variables["batch_stats"]["backbone"]["trunk"]), _flat(stats["backbone"]["trunk"])
    for path, value in new.items():
        changed = bool(np.any(np.asarray(value) != np.asarray(old[path])))
        assert changed == (path.split("/")[0] not in frozen), path
    # the frozen parameters do change the output, so their zero gradients come from the freeze
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: a * 1.5 if _key(p[2]) == "denseblock1" else a, variables["params"])
    assert value_and_grad(params)[0][0] != loss_value


def test_norm_eval_and_eval_mode():
    x = jnp.asarray(np.random.RandomState(12).normal(size=(2, *IMG)), jnp.float32)
    model = build_model(_tiny_cfg(frozen_stages=-1, norm_eval=True, neck="gap"), NUM_CLASSES, IMG)
    variables = _init(model)
    train_out, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    chex.assert_trees_all_equal(updates["batch_stats"], variables["batch_stats"])
    eval_out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    chex.assert_trees_all_close(train_out, eval_out, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------- errors


def test_wrong_files_and_state_dicts_give_clear_errors(tmp_path):
    tiny = _tiny_cfg()
    model = build_model(tiny, NUM_CLASSES, IMG)
    variables = jax.eval_shape(lambda: _init(model))
    sd = _random_state_dict(2)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_pretrained("densenet121", variables, str(tmp_path / "nowhere.pth"), tiny)
    npy = tmp_path / "w.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match=r"unsupported checkpoint format; supported formats: '.safetensors'"):
        load_pretrained("densenet121", variables, str(npy), tiny)
    # a ResNet checkpoint: every missing and unexpected key is named
    resnet = tmp_path / "resnet.safetensors"
    _save(resnet, {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "fc.bias": np.zeros(1000, np.float32)})
    with pytest.raises(ValueError, match=r"does not match torchvision's densenet\(block_config=\(2, 1, 2\).*"
                                         r"missing keys \(\d+\): .*features.conv0.weight.*unexpected keys \(2\): "
                                         r"conv1.weight, fc.bias"):
        load_pretrained("densenet121", variables, str(resnet), tiny)
    # a key missing, one extra (old spelling reported as written), a key in both spellings
    bad = dict(_old_spelling(sd))
    del bad["features.norm5.running_var"]
    bad["features.denseblock4.denselayer1.conv.1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"missing keys \(1\): features.norm5.running_var; unexpected keys \(1\): "
                                         r"features.denseblock4.denselayer1.conv.1.weight"):
        densenet.torchvision_densenet_to_flax(bad, **TINY)
    both = dict(sd)
    both["features.denseblock1.denselayer1.norm.2.bias"] = sd["features.denseblock1.denselayer1.norm2.bias"]
    with pytest.raises(ValueError, match=r"'features.denseblock1.denselayer1.norm2.bias' in both key spellings"):
        densenet.torchvision_densenet_to_flax(both, **TINY)
    # shapes: a wrong conv kernel; the tiny checkpoint into DenseNet-121
    wrong = dict(sd, **{"features.transition2.conv.weight": np.zeros((6, 12, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"features.transition2.conv.weight: checkpoint \[6, 12, 3, 3\] vs densenet"
                                         r".* \[6, 12, 1, 1\]"):
        densenet.torchvision_densenet_to_flax(wrong, **TINY)
    with pytest.raises(ValueError, match=r"torchvision's densenet121; missing keys .*denseblock1.denselayer3"):
        densenet.torchvision_densenet_to_flax(sd)
    # classifier.* of any shape and num_batches_tracked are ignored (a 14-class CheXNet-style head, none at all)
    chexnet = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    chexnet["classifier.weight"], chexnet["classifier.bias"] = np.zeros((14, 14), np.float32), np.zeros(14, np.float32)
    p1, s1, _ = densenet.torchvision_densenet_to_flax(chexnet, **TINY)
    p2, s2, _ = densenet.torchvision_densenet_to_flax({k: v for k, v in sd.items() if "classifier" not in k}, **TINY)
    chex.assert_trees_all_equal((p1, s1), (p2, s2))
    # the model's stem has 1 input channel, the checkpoint's 3
    gray = build_model(tiny, NUM_CLASSES, (37, 33, 1))
    gray_vars = jax.eval_shape(lambda: _init(gray, (37, 33, 1)))
    with pytest.raises(ValueError, match=r"params/backbone/trunk/conv0/kernel \(torch key 'features.conv0.weight'\): "
                                         r"checkpoint gives \[7, 7, 3, 9\].*the model has \[7, 7, 1, 9\]"):
        load_pretrained("densenet121", gray_vars, sd, tiny)


def test_config_errors():
    with pytest.raises(ValueError, match=r"frozen_stages must be an int in \[-1, 3\].*norm5"):
        build_model(_tiny_cfg(frozen_stages=4), NUM_CLASSES, IMG)
    with pytest.raises(ValueError, match=r"block_config must be a non-empty tuple of positive ints"):
        build_model(_cfg(block_config=(6, 0)), NUM_CLASSES, IMG)
    with pytest.raises(ValueError, match=r"growth_rate must be a positive int"):
        build_model(_cfg(growth_rate=0), NUM_CLASSES, IMG)
    with pytest.raises(ValueError, match=r"has no config field 'growth'"):
        build_model({"name": "densenet121", "growth": 4}, NUM_CLASSES, IMG)
    model = build_model(model_defaults("densenet121"), NUM_CLASSES, (24, 24, 3))
    with pytest.raises(ValueError, match=r"too small: transition3 would average-pool a 1x1 map"):
        jax.eval_shape(lambda: _init(model, (24, 24, 3)))
