"""Tests for ltjax.models.pretrained: reading torchvision checkpoints without torch, converting them.

The end-to-end test writes a random torchvision-layout resnet18 state dict (key list and OIHW
shapes generated here from the architecture, independently of the module's mapping) to a
safetensors file with a small numpy writer, loads it into a model from ``build_model`` and compares
the trunk output, features and logits with a numpy forward computed directly from the torch-layout
arrays (NCHW activations, OIHW kernels, eval-mode BatchNorm with the running statistics).  The zip
``.pth`` reader is checked on ``tests/data/tiny_state_dict.pth`` (written once by ``torch.save``;
its expected values are recorded below) and on hand-made pickles that must be refused.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import pickle
import struct
import zipfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax.models import build_model, model_defaults
from ltjax.models.pretrained import load_pretrained_backbone, read_state_dict, torchvision_resnet_to_flax

DATA = pathlib.Path(__file__).parent / "data"
IMG = (34, 34, 3)  # 34 -> 17 -> 9 -> 9 -> 5 -> 3 -> 2: odd sizes exercise the padding conventions
NUM_CLASSES = 5


# ---------------------------------------------------------------------------------- helpers


def _write_safetensors(path, tensors):
    """``tensors``: {name: (safetensors dtype, np.ndarray already in that dtype's bytes)}."""
    header, chunks, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def _torchvision_resnet18_shapes():
    """torchvision resnet18's state dict keys and shapes: BasicBlocks [2, 2, 2, 2], planes 64..512."""
    shapes = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, c):
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{suffix}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    inplanes = 64
    for layer, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
            bn(f"{p}.bn1", planes)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            if block == 0 and layer > 1:
                shapes[f"{p}.downsample.0.weight"] = (planes, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes)
            inplanes = planes
    shapes["fc.weight"] = (1000, 512)
    shapes["fc.bias"] = (1000,)
    return shapes


def _random_state_dict(seed=0):
    rng = np.random.RandomState(seed)
    sd = {}
    for key, shape in _torchvision_resnet18_shapes().items():
        if key.endswith("num_batches_tracked"):
            sd[key] = np.asarray(1234, np.int64)
        elif len(shape) == 4:
            sd[key] = rng.normal(0, np.sqrt(2.0 / (shape[0] * shape[2] * shape[3])), shape).astype(np.float32)
        elif key.endswith("running_var"):
            sd[key] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif key.endswith(".weight") and not key.startswith("fc"):  # BN gamma
            sd[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:  # BN beta, running_mean, fc
            sd[key] = rng.uniform(-0.3, 0.3, shape).astype(np.float32)
    return sd


def _save(path, sd):
    _write_safetensors(path, {k: ("I64" if v.dtype == np.int64 else "F32", v) for k, v in sd.items()})


# independent numpy forward in torch's layout: NCHW activations, OIHW kernels, zero padding


def _np_conv(x, w, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    _, _, kh, kw = w.shape
    ho, wo = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nihw,oi->nohw", x[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride], w[:, :, i, j])
    return out


def _np_bn(x, sd, prefix):
    c = lambda name: sd[f"{prefix}.{name}"][None, :, None, None]  # noqa: E731
    return (x - c("running_mean")) / np.sqrt(c("running_var") + 1e-5) * c("weight") + c("bias")


def _np_maxpool(x):
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    ho, wo = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
    return np.max([x[:, :, i:i + 2 * ho:2, j:j + 2 * wo:2] for i in range(3) for j in range(3)], axis=0)


def _np_resnet18_trunk(sd, x_nchw):
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    h = _np_maxpool(relu(_np_bn(_np_conv(x_nchw, sd["conv1.weight"], 2, 3), sd, "bn1")))
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            stride = 2 if (block == 0 and layer > 1) else 1
            y = relu(_np_bn(_np_conv(h, sd[f"{p}.conv1.weight"], stride, 1), sd, f"{p}.bn1"))
            y = _np_bn(_np_conv(y, sd[f"{p}.conv2.weight"], 1, 1), sd, f"{p}.bn2")
            if f"{p}.downsample.0.weight" in sd:
                h = _np_bn(_np_conv(h, sd[f"{p}.downsample.0.weight"], stride, 0), sd, f"{p}.downsample.1")
            h = relu(y + h)
    return h


def _model(neck="gap", input_shape=IMG, name="resnet18"):
    cfg = model_defaults(name)
    cfg.neck = neck
    return build_model(cfg, NUM_CLASSES, input_shape)


def _init(model, input_shape=IMG):
    x = jnp.zeros((1, *input_shape), jnp.float32)
    return jax.jit(lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False))(x)


# ---------------------------------------------------------------------------------- end to end


def test_safetensors_resnet18_matches_numpy_forward_from_torch_layout(tmp_path):
    sd = _random_state_dict()
    path = tmp_path / "resnet18.safetensors"
    _save(path, sd)
    loaded = read_state_dict(path)
    assert set(loaded) == set(sd)
    for k in sd:
        assert loaded[k].dtype == sd[k].dtype and loaded[k].shape == sd[k].shape, k
        np.testing.assert_array_equal(loaded[k], sd[k], err_msg=k)

    model = _model("gap")
    variables = _init(model)
    new = load_pretrained_backbone(variables, path, depth=18)
    # neck-less GAP + head untouched; the input variables are not modified
    chex.assert_trees_all_equal(new["params"]["head"], variables["params"]["head"])
    chex.assert_trees_all_equal_structs(new, variables)
    chex.assert_trees_all_equal_shapes_and_dtypes(new, variables)
    assert not np.array_equal(variables["params"]["backbone"]["trunk"]["conv1"]["kernel"],
                              new["params"]["backbone"]["trunk"]["conv1"]["kernel"])
    np.testing.assert_array_equal(new["batch_stats"]["backbone"]["trunk"]["layer2_0"]["downsample_bn"]["var"],
                                  sd["layer2.0.downsample.1.running_var"])

    x_nchw = np.random.RandomState(3).normal(size=(2, 3, *IMG[:2]))
    out, state = jax.jit(lambda v, x: model.apply(v, x, train=False, capture_intermediates=True))(
        new, jnp.asarray(x_nchw.transpose(0, 2, 3, 1), jnp.float32))
    trunk = np.asarray(state["intermediates"]["backbone"]["trunk"]["__call__"][0])
    ref = _np_resnet18_trunk(sd, x_nchw)  # [2, 512, 2, 2]
    assert ref.shape == (2, 512, 2, 2) and np.abs(ref).max() > 0.1
    np.testing.assert_allclose(trunk, ref.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    features = ref.mean((2, 3))
    np.testing.assert_allclose(out["features"], features, rtol=1e-4, atol=1e-4 * np.abs(features).max())
    head = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"]["head"]["fc"])
    logits = features @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())


def test_converter_trees_and_pfc_neck_untouched():
    sd = _random_state_dict(1)
    params, stats = torchvision_resnet_to_flax(sd, 18)
    np.testing.assert_array_equal(params["layer3_1"]["conv2"]["kernel"], sd["layer3.1.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["layer4_0"]["downsample_conv"]["kernel"][0, 0],
                                  sd["layer4.0.downsample.0.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(params["bn1"]["scale"], sd["bn1.weight"])
    np.testing.assert_array_equal(stats["layer1_1"]["bn2"]["mean"], sd["layer1.1.bn2.running_mean"])
    assert "fc" not in params and all(set(v) == {"mean", "var"} for v in jax.tree.leaves(
        stats, is_leaf=lambda t: isinstance(t, dict) and "mean" in t))
    # the default PFC neck: its params and BN statistics stay as they were, the trunk is the checkpoint's
    model = _model("pfc")
    variables = jax.eval_shape(lambda: _init(model))  # abstract leaves are enough for loading
    variables = jax.tree.map(lambda s: jnp.full(s.shape, 0.5, s.dtype), variables)
    new = load_pretrained_backbone(variables, sd, depth=18)
    chex.assert_trees_all_equal(new["params"]["backbone"]["neck"], variables["params"]["backbone"]["neck"])
    chex.assert_trees_all_equal(new["batch_stats"]["backbone"]["neck"], variables["batch_stats"]["backbone"]["neck"])
    chex.assert_trees_all_equal(new["params"]["backbone"]["trunk"], jax.tree.map(jnp.asarray, params))
    chex.assert_trees_all_equal(new["batch_stats"]["backbone"]["trunk"], jax.tree.map(jnp.asarray, stats))
    assert float(variables["params"]["backbone"]["trunk"]["bn1"]["scale"][0]) == 0.5  # input not modified


# ---------------------------------------------------------------------------------- dtypes


def test_safetensors_dtypes_and_module_prefix(tmp_path):
    f32 = np.array([[1.0, -2.5], [0.15625, 3.0e38]], np.float32)
    bf16_bits = (f32.view(np.uint32) >> 16).astype(np.uint16)  # these values are exact in bfloat16
    tensors = {
        "module.a": ("F16", np.array([1.5, -2.25, 65504.0], np.float16)),
        "module.b": ("BF16", bf16_bits),
        "c": ("F32", f32),
        "d": ("I64", np.array([-3, 2 ** 40], np.int64)),
        "e": ("I32", np.array([[7, -8]], np.int32)),
        "f": ("U8", np.array([0, 255], np.uint8)),
        "g": ("BOOL", np.array([True, False])),
        "h": ("F32", np.zeros((0, 4), np.float32)),
    }
    path = tmp_path / "t.safetensors"
    _write_safetensors(path, tensors)
    sd = read_state_dict(str(path))
    assert set(sd) == {"a", "b", "c", "d", "e", "f", "g", "h"}
    assert sd["a"].dtype == np.float32 and sd["a"].tolist() == [1.5, -2.25, 65504.0]
    assert sd["b"].dtype == np.float32
    bf = f32.copy()
    bf[1, 1] = np.uint32(int(bf16_bits[1, 1]) << 16).view(np.float32)  # 3e38 truncated to bfloat16
    np.testing.assert_array_equal(sd["b"], bf)
    np.testing.assert_array_equal(sd["c"], f32)
    assert sd["d"].dtype == np.int64 and sd["d"].tolist() == [-3, 2 ** 40]
    assert sd["e"].dtype == np.int32 and sd["e"].tolist() == [[7, -8]]
    assert sd["f"].dtype == np.uint8 and sd["f"].tolist() == [0, 255]
    assert sd["g"].dtype == np.bool_ and sd["g"].tolist() == [True, False]
    assert sd["h"].shape == (0, 4)
    sd["c"][0, 0] = 9.0  # arrays own writable memory


def test_safetensors_unsupported_dtype_and_bad_offsets(tmp_path):
    path = tmp_path / "bad.safetensors"
    _write_safetensors(path, {"x": ("F8_E4M3", np.zeros(2, np.uint8))})
    with pytest.raises(ValueError, match=r"'x' has unsupported safetensors dtype 'F8_E4M3'; supported: .*BF16"):
        read_state_dict(path)
    _write_safetensors(path, {"x": ("F32", np.zeros(3, np.float16))})  # 6 bytes for 3 float32
    with pytest.raises(ValueError, match=r"bad.safetensors: not a valid safetensors file .*invalid shape, data type, or offset"):
        read_state_dict(path)


# ---------------------------------------------------------------------------------- torch zip .pth


def test_torch_zip_fixture_gives_the_recorded_arrays():
    sd = read_state_dict(DATA / "tiny_state_dict.pth")  # {'state_dict': {'module.<k>': ...}, 'epoch': 7, ...}
    w = np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5 - 1
    expected = {
        "w": w,
        "w_t": w.T,  # non-contiguous view of w's storage
        "row": w[1, 1:3],  # storage offset 5
        "col": w[:, 2],  # stride 4, offset 2
        "half": np.array([1.5, -2.25, 65504.0], np.float32),
        "bf16": np.array([[1.0, -3.5], [0.15625, 2.0 ** 100]], np.float32),
        "long": np.array([-3, 2 ** 40], np.int64),
        "int": np.array([[1, 3], [-2, 4]], np.int32),  # transposed int32
        "bool": np.array([True, False, True]),
        "byte": np.array([0, 255, 7], np.uint8),
        "num_batches_tracked": np.array(42, np.int64),
        "empty": np.zeros((0, 3), np.float32),
        "param": np.array([0.25, 0.5], np.float32),  # an nn.Parameter (torch._utils._rebuild_parameter)
    }
    assert set(sd) == set(expected)
    for key, want in expected.items():
        assert sd[key].dtype == want.dtype and sd[key].shape == want.shape, key
        np.testing.assert_array_equal(sd[key], want, err_msg=key)
    # views of one shared storage come back as independent arrays
    sd["w"][0, 0] = 100.0
    assert sd["w_t"][0, 0] == -1.0


def _zip_checkpoint(path, pkl_bytes, extra=None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl_bytes)
        z.writestr("archive/version", "3\n")
        for name, data in (extra or {}).items():
            z.writestr(name, data)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_forbidden_pickle_globals_are_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    _zip_checkpoint(path, pickle.dumps({"state_dict": {"w": _Evil(marker)}}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global '(os|posix|nt)\.system'.*never executed"):
        read_state_dict(path)
    assert not marker.exists()
    # a pickled nn.Module (torch.save(model)) is refused the same way
    _zip_checkpoint(path, b"\x80\x02ctorch.nn.modules.linear\nLinear\n)\x81.")
    with pytest.raises(pickle.UnpicklingError, match=r"'torch.nn.modules.linear.Linear'"):
        read_state_dict(path)


def test_torch_zip_model_wrapper_and_storage_errors(tmp_path):
    # hand-made data.pkl: {'model': {'module.x': _rebuild_tensor_v2(storage '0' float32 x 4, 1, (2,), (2,))}}
    def pkl(storage_key="0", size=(2,), stride=(2,), offset=1):
        k = lambda n: "K" + chr(n)  # noqa: E731  (BININT1)
        text = (
            "\x80\x02}X\x05\x00\x00\x00model}X\x08\x00\x00\x00module.x"
            "ctorch._utils\n_rebuild_tensor_v2\n("
            f"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00{storage_key}X\x03\x00\x00\x00cpu"
            f"{k(4)}tQ{k(offset)}({''.join(map(k, size))}t({''.join(map(k, stride))}t"
            "\x89ccollections\nOrderedDict\n)RtRss."
        )
        return text.encode("latin-1")

    data = np.array([1.0, 2.0, 3.0, 4.0], np.float32).tobytes()
    path = tmp_path / "m.pt"
    _zip_checkpoint(path, pkl(), {"archive/data/0": data, "archive/byteorder": "little"})
    sd = read_state_dict(path)
    assert list(sd) == ["x"] and sd["x"].tolist() == [2.0, 4.0]
    _zip_checkpoint(path, pkl(offset=2), {"archive/data/0": data})
    with pytest.raises(pickle.UnpicklingError, match="reads past storage '0' of 4 elements"):
        read_state_dict(path)
    _zip_checkpoint(path, pkl(storage_key="7"), {"archive/data/0": data})
    with pytest.raises(ValueError, match="lacks storage file 'archive/data/7'"):
        read_state_dict(path)


# ---------------------------------------------------------------------------------- errors


def test_file_and_format_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        read_state_dict(tmp_path / "nowhere.pth")
    legacy = tmp_path / "old.pth"
    legacy.write_bytes(b"\x80\x02\x8a\x0alegacy torch")
    with pytest.raises(ValueError, match=r"legacy non-zip torch file.*supported formats: '.safetensors'.*zip"):
        read_state_dict(legacy)
    npy = tmp_path / "w.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match=r"unsupported checkpoint format; supported formats: '.safetensors'"):
        read_state_dict(npy)
    notorch = tmp_path / "a.zip"
    with zipfile.ZipFile(notorch, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ValueError, match=r"not a torch checkpoint.*data.pkl"):
        read_state_dict(notorch)
    trunc = tmp_path / "t.safetensors"
    trunc.write_bytes(struct.pack("<Q", 10 ** 6) + b"{}")
    with pytest.raises(ValueError, match="t.safetensors: not a valid safetensors file .*invalid header length"):
        read_state_dict(trunc)


def test_missing_unexpected_keys_and_shape_mismatch():
    sd = _random_state_dict(2)
    bad = dict(sd)
    del bad["layer3.1.bn2.running_var"]
    bad["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"missing keys \(1\): layer3.1.bn2.running_var; "
                                         r"unexpected keys \(1\): layer5.0.conv1.weight"):
        torchvision_resnet_to_flax(bad, 18)
    with pytest.raises(ValueError, match=r"missing keys.*layer1.0.conv3.weight.*depth 50"):
        torchvision_resnet_to_flax(sd, 50)
    bad = dict(sd, **{"layer2.0.conv1.weight": np.zeros((128, 64, 1, 1), np.float32)})
    with pytest.raises(ValueError, match=r"layer2.0.conv1.weight: checkpoint \[128, 64, 1, 1\] vs resnet18 \[128, 64, 3, 3\]"):
        torchvision_resnet_to_flax(bad, 18)
    with pytest.raises(ValueError, match="unsupported ResNet depth 34"):
        torchvision_resnet_to_flax(sd, 34)
    # fc and num_batches_tracked may be absent
    trimmed = {k: v for k, v in sd.items() if not (k.startswith("fc.") or k.endswith("num_batches_tracked"))}
    params, _ = torchvision_resnet_to_flax(trimmed, 18)
    assert params["conv1"]["kernel"].shape == (7, 7, 3, 64)


def test_load_into_a_model_that_does_not_fit():
    sd = _random_state_dict(3)
    gray = _model("gap", input_shape=(34, 34, 1))  # a 1-channel stem vs the checkpoint's RGB stem
    variables = jax.eval_shape(lambda: _init(gray, (34, 34, 1)))
    with pytest.raises(ValueError, match=r"params/backbone/trunk/conv1/kernel \(torch key 'conv1.weight'\): checkpoint "
                                         r"gives \[7, 7, 3, 64\] \(torch \[64, 3, 7, 7\]\), the model has \[7, 7, 1, 64\]"):
        load_pretrained_backbone(variables, sd, depth=18)
    r50 = jax.eval_shape(lambda: _init(_model("gap", name="resnet50")))
    with pytest.raises(ValueError, match=r"in the model only: .*layer1_0/conv3/kernel.*was the model built as resnet18"):
        load_pretrained_backbone(r50, sd, depth=18)
    mlp = build_model(model_defaults("mlp"), NUM_CLASSES, (8,))
    mlp_vars = mlp.init(jax.random.key(0), jnp.zeros((1, 8)), train=False)
    with pytest.raises(ValueError, match=r"ResNet classifier's .*batch_stats"):
        load_pretrained_backbone(mlp_vars, sd, depth=18)
