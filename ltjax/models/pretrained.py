"""Pretrained ResNet weights from torchvision checkpoints, read without torch.

Three steps, each usable on its own:

``read_state_dict(path) -> {name: np.ndarray}``
    reads a ``.safetensors`` file or a torch zip-format checkpoint (``.pth`` / ``.pt``, what
    ``torch.save`` writes since torch 1.6).  The torch pickle is read by a restricted unpickler that
    only knows tensors (``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``), the torch
    storage types and ``collections.OrderedDict``; any other global (``os.system``, a pickled
    ``nn.Module``, ...) is refused before anything runs, so loading never executes pickle code.
    A checkpoint that wraps the state dict under ``'state_dict'`` or ``'model'`` is unwrapped and a
    DataParallel ``'module.'`` prefix is stripped.  float16 / bfloat16 tensors come back as float32;
    the other dtypes (float32/64, int8/16/32/64, uint8, bool) are kept.  Legacy (pre-1.6, non-zip)
    torch files are not supported: re-save them with a current torch or convert them to safetensors.

``torchvision_resnet_to_flax(state_dict, depth) -> (params_trunk, batch_stats_trunk)``
    renames torchvision's ResNet keys to the trees of ``ltjax.models.resnet.ResNet`` (see that
    module's docstring): ``layer2.0.downsample.0.weight`` [O, I, kh, kw] becomes
    ``layer2_0/downsample_conv/kernel`` [kh, kw, I, O], BN ``weight``/``bias`` become
    ``scale``/``bias`` in params and ``running_mean``/``running_var`` become ``mean``/``var`` in
    batch_stats.  ``num_batches_tracked`` and the ImageNet classifier ``fc.*`` are ignored (the
    long-tailed classifier's neck and head are new).  Missing or unexpected keys and shapes that do
    not match the architecture raise a ``ValueError`` listing them.

``load_pretrained_backbone(variables, path, depth) -> variables``
    a copy of a classifier's variables (``{'params': {'backbone': {'trunk': ...}, ...},
    'batch_stats': {...}}``) whose trunk params and batch_stats are the checkpoint's; the neck and
    head are left untouched, and every converted leaf is checked against the existing leaf's shape.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import zipfile
from typing import Any, Mapping

import numpy as np

from ltjax.models.resnet import ARCHS, STAGE_PLANES

SUPPORTED_FORMATS = (
    "'.safetensors' files and torch zip-format checkpoints ('.pth'/'.pt' written by torch.save since torch 1.6)"
)

# ---------------------------------------------------------------------------------- safetensors

_SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits, widened to float32 below
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def _bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32 (exact: bf16 is the top half of a float32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _widen(array: np.ndarray, is_bf16: bool) -> np.ndarray:
    if is_bf16:
        return _bf16_bits_to_f32(array)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > len(blob) - 8:
        raise ValueError(
            f"{path}: not a safetensors file (header length {header_len} exceeds the file size {len(blob)})"
        )
    try:
        header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a safetensors file (its header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (its header is not a JSON object)")
    data = memoryview(blob)[8 + header_len:]
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: malformed safetensors header entry for {name!r}: {info!r}") from None
        if dtype_name not in _SAFETENSORS_DTYPES:
            raise ValueError(
                f"{path}: tensor {name!r} has unsupported safetensors dtype {dtype_name!r}; supported: "
                f"{', '.join(_SAFETENSORS_DTYPES)}"
            )
        dtype = _SAFETENSORS_DTYPES[dtype_name]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not (0 <= begin <= end <= len(data)) or end - begin != nbytes:
            raise ValueError(
                f"{path}: tensor {name!r} ({dtype_name} {shape}) needs {nbytes} bytes but its data_offsets are "
                f"[{begin}, {end}] in a data section of {len(data)} bytes"
            )
        array = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
        out[name] = np.array(_widen(array, dtype_name == "BF16"))  # own, writable memory
    return out


# ---------------------------------------------------------------------------------- torch zip checkpoints

# torch storage type name -> (numpy dtype of the stored elements, is bfloat16)
_TORCH_STORAGES: dict[str, tuple[np.dtype, bool]] = {
    "DoubleStorage": (np.dtype("f8"), False),
    "FloatStorage": (np.dtype("f4"), False),
    "HalfStorage": (np.dtype("f2"), False),
    "BFloat16Storage": (np.dtype("u2"), True),
    "LongStorage": (np.dtype("i8"), False),
    "IntStorage": (np.dtype("i4"), False),
    "ShortStorage": (np.dtype("i2"), False),
    "CharStorage": (np.dtype("i1"), False),
    "ByteStorage": (np.dtype("u1"), False),
    "BoolStorage": (np.dtype("?"), False),
    "UntypedStorage": (np.dtype("u1"), False),
}


class _StorageType:
    """Marker standing in for a ``torch.*Storage`` class in the pickle."""

    def __init__(self, name: str):
        self.name = name
        self.dtype, self.is_bf16 = _TORCH_STORAGES[name]

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """A storage read from ``<prefix>/data/<key>``: flat elements, still in their stored dtype."""

    def __init__(self, array: np.ndarray, storage_type: _StorageType, key: str):
        self.array, self.type, self.key = array, storage_type, key


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None) -> np.ndarray:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"_rebuild_tensor_v2 got {type(storage).__name__} instead of a storage")
    size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(storage_offset)
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"bad tensor geometry: size {size}, stride {stride}, offset {offset}")
    flat = storage.array
    if 0 not in size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise pickle.UnpicklingError(
                f"tensor of size {size}, stride {stride}, offset {offset} reads past storage {storage.key!r} "
                f"of {flat.size} elements"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False
        )
    else:
        view = np.zeros(size, flat.dtype)
    return np.array(_widen(view, storage.type.is_bf16))  # contiguous copy: never aliases other tensors


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None) -> np.ndarray:
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles torch's data.pkl knowing only tensors, storages and OrderedDict; refuses all else."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str, path: str):
        super().__init__(file)
        self._archive, self._prefix, self._byteorder, self._path = archive, prefix, byteorder, path
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _TORCH_STORAGES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"{self._path}: refusing to load global '{module}.{name}' from the checkpoint's pickle; only torch "
            "tensors/storages and collections.OrderedDict are allowed (a state dict of tensors, optionally under "
            "'state_dict' or 'model'); pickled code or modules are never executed"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self._path}: unsupported persistent id {pid!r} (expected a torch storage)")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self._path}: storage {key!r} has unknown type {storage_type!r}")
        key = str(key)
        if key in self._storages:  # shared storage (views, tied weights)
            return self._storages[key]
        name = f"{self._prefix}data/{key}"
        try:
            raw = self._archive.read(name)
        except KeyError:
            raise ValueError(f"{self._path}: the checkpoint lacks storage file {name!r}") from None
        dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
        if len(raw) % dtype.itemsize:
            raise ValueError(f"{self._path}: storage {name!r} has {len(raw)} bytes, not a multiple of {dtype.itemsize}")
        array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
        if storage_type.name != "UntypedStorage" and array.size < int(numel):
            raise ValueError(f"{self._path}: storage {name!r} holds {array.size} elements, the pickle says {numel}")
        storage = _Storage(array, storage_type, key)
        self._storages[key] = storage
        return storage


def _read_torch_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError(
                f"{path}: a zip file but not a torch checkpoint (expected one '<prefix>/data.pkl', found {pkl}); "
                f"supported formats: {SUPPORTED_FORMATS}"
            )
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "little"
        if f"{prefix}byteorder" in names:
            byteorder = archive.read(f"{prefix}byteorder").decode("ascii").strip()
            if byteorder not in ("little", "big"):
                raise ValueError(f"{path}: unknown byteorder {byteorder!r}")
        unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pkl[0])), archive, prefix, byteorder, path)
        return unpickler.load()


# ---------------------------------------------------------------------------------- read_state_dict


def _to_state_dict(obj: Any, path: str) -> dict[str, np.ndarray]:
    """Unwrap ``{'state_dict': ...}`` / ``{'model': ...}``, check the values, strip 'module.'."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: the checkpoint holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(v, np.ndarray) or not isinstance(k, str))
    if bad:
        raise ValueError(
            f"{path}: not a state dict: these entries are not tensors (or have non-string names): {bad[:20]}"
            + (f" ... ({len(bad)} in all)" if len(bad) > 20 else "")
        )
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name in out:
            raise ValueError(f"{path}: key {name!r} appears both with and without the 'module.' prefix")
        out[name] = value
    return out


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file or a torch zip-format ``.pth``/``.pt`` as numpy arrays.

    Never imports torch and never executes pickled code.  float16/bfloat16 become float32.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained checkpoint {path!r} does not exist (or is not a file)")
    if zipfile.is_zipfile(path):
        return _to_state_dict(_read_torch_zip(path), path)
    if path.endswith(".safetensors"):
        return _to_state_dict(_read_safetensors(path), path)
    with open(path, "rb") as f:
        magic = f.read(2)
    hint = ""
    if magic[:1] == b"\x80":
        hint = (" (it looks like a legacy non-zip torch file: re-save it with torch.save(obj, path) on torch >= 1.6, "
                "or convert it to safetensors)")
    raise ValueError(f"{path}: unsupported checkpoint format{hint}; supported formats: {SUPPORTED_FORMATS}")


# ---------------------------------------------------------------------------------- torchvision -> flax


def _resnet_layout(depth: int, in_channels: int) -> tuple[dict, dict]:
    """The torchvision ResNet's convs and BNs: ``{torch_prefix: (flax_path, OIHW shape)}`` and
    ``{torch_prefix: (flax_path, channels)}``."""
    if depth not in ARCHS:
        raise ValueError(f"unsupported ResNet depth {depth!r}; choose one of {sorted(ARCHS)}")
    block_cls, stage_sizes = ARCHS[depth]
    bottleneck = block_cls.expansion == 4
    convs = {"conv1": (("conv1",), (64, in_channels, 7, 7))}
    bns = {"bn1": (("bn1",), 64)}
    channels = 64
    for stage, (planes, blocks) in enumerate(zip(STAGE_PLANES, stage_sizes), start=1):
        for i in range(blocks):
            t, f = f"layer{stage}.{i}", f"layer{stage}_{i}"
            out = planes * block_cls.expansion
            if bottleneck:
                shapes = [(planes, channels, 1, 1), (planes, planes, 3, 3), (out, planes, 1, 1)]
            else:
                shapes = [(planes, channels, 3, 3), (out, planes, 3, 3)]
            for j, shape in enumerate(shapes, start=1):
                convs[f"{t}.conv{j}"] = ((f, f"conv{j}"), shape)
                bns[f"{t}.bn{j}"] = ((f, f"bn{j}"), shape[0])
            stride = 2 if (i == 0 and stage > 1) else 1
            if stride != 1 or channels != out:
                convs[f"{t}.downsample.0"] = ((f, "downsample_conv"), (out, channels, 1, 1))
                bns[f"{t}.downsample.1"] = ((f, "downsample_bn"), out)
            channels = out
    return convs, bns


def _set(tree: dict, path: tuple, value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _format_keys(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:40])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > 40 else "")


def _convert(state_dict: Mapping[str, Any], depth: int) -> tuple[dict, dict, dict]:
    """(params, batch_stats, {flax '/'-path: torch key}) of the trunk."""
    stem = state_dict.get("conv1.weight")
    in_channels = int(np.shape(stem)[1]) if stem is not None and np.ndim(stem) == 4 else 3
    convs, bns = _resnet_layout(depth, in_channels)
    expected: dict[str, tuple[tuple, tuple, str]] = {}  # torch key -> (flax path, torch shape, collection)
    for t, (f, shape) in convs.items():
        expected[f"{t}.weight"] = (f + ("kernel",), shape, "params")
    for t, (f, c) in bns.items():
        expected[f"{t}.weight"] = (f + ("scale",), (c,), "params")
        expected[f"{t}.bias"] = (f + ("bias",), (c,), "params")
        expected[f"{t}.running_mean"] = (f + ("mean",), (c,), "batch_stats")
        expected[f"{t}.running_var"] = (f + ("var",), (c,), "batch_stats")
    ignored = {f"{t}.num_batches_tracked" for t in bns} | {"fc.weight", "fc.bias"}
    keys = set(state_dict)
    missing, unexpected = set(expected) - keys, keys - set(expected) - ignored
    if missing or unexpected:
        parts = [f"the state dict does not match torchvision's resnet{depth}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_format_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_format_keys(unexpected)}")
        parts.append(f"is it a torchvision ResNet checkpoint of depth {depth}?")
        raise ValueError("; ".join(parts))
    mismatched = []
    for key, (_, shape, _) in expected.items():
        got = tuple(np.shape(state_dict[key]))
        if got != shape:
            mismatched.append(f"{key}: checkpoint {list(got)} vs resnet{depth} {list(shape)}")
    if mismatched:
        raise ValueError(f"shape mismatch between the state dict and torchvision's resnet{depth}: " + "; ".join(mismatched))
    params: dict = {}
    batch_stats: dict = {}
    origin: dict[str, str] = {}
    for key, (fpath, shape, collection) in expected.items():
        value = np.asarray(state_dict[key], np.float32)
        if len(shape) == 4:
            value = np.ascontiguousarray(value.transpose(2, 3, 1, 0))  # OIHW -> HWIO
        _set(params if collection == "params" else batch_stats, fpath, value)
        origin[f"{collection}/" + "/".join(fpath)] = key
    return params, batch_stats, origin


def torchvision_resnet_to_flax(state_dict: Mapping[str, Any], depth: int) -> tuple[dict, dict]:
    """``(params_trunk, batch_stats_trunk)`` for ``ltjax.models.resnet.ResNet(depth)`` from a torchvision
    ResNet state dict (numpy arrays, float32; conv kernels HWIO).  ``fc.*`` and ``num_batches_tracked``
    are ignored; missing/unexpected keys and shape mismatches raise ``ValueError``."""
    params, batch_stats, _ = _convert(state_dict, depth)
    return params, batch_stats


# ---------------------------------------------------------------------------------- into a classifier


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _replace(tree: Mapping, path: tuple, value) -> dict:
    """A shallow copy of ``tree`` (as a plain dict) with ``tree[path[0]]...[path[-1]] = value``."""
    out = dict(tree)
    out[path[0]] = value if len(path) == 1 else _replace(tree[path[0]], path[1:], value)
    return out


def load_pretrained_backbone(variables: Mapping, path: str | os.PathLike | Mapping[str, Any], depth: int) -> Any:
    """A copy of a ResNet classifier's ``variables`` with the trunk's params and batch_stats taken from
    the torchvision checkpoint at ``path`` (or an already-read state dict); the neck and head keep their
    values.  Every converted leaf must have the existing leaf's shape and takes its dtype.  The
    result has the input's container type (a ``FrozenDict`` stays one)."""
    import jax.numpy as jnp

    import jax

    state_dict = path if isinstance(path, Mapping) else read_state_dict(path)
    params, batch_stats, origin = _convert(state_dict, depth)
    try:
        old_params = variables["params"]["backbone"]["trunk"]
        old_stats = variables["batch_stats"]["backbone"]["trunk"]
    except (KeyError, TypeError):
        raise ValueError(
            "variables must be a ResNet classifier's {'params': {'backbone': {'trunk': ...}}, 'batch_stats': "
            "{'backbone': {'trunk': ...}}} (built by ltjax.models.build_model with model.name 'resnet18'/'resnet50')"
        ) from None
    new_trees = {}
    for collection, old, new in (("params", old_params, params), ("batch_stats", old_stats, batch_stats)):
        old_flat, new_flat = _flatten(old), _flatten(new)
        missing, extra = set(old_flat) - set(new_flat), set(new_flat) - set(old_flat)
        if missing or extra:
            raise ValueError(
                f"the converted resnet{depth} {collection} do not match the model's backbone/trunk: "
                f"in the model only: {_format_keys(missing) or 'none'}; in the checkpoint only: "
                f"{_format_keys(extra) or 'none'}; was the model built as resnet{depth}?"
            )
        for key, value in new_flat.items():
            want = tuple(old_flat[key].shape)
            if tuple(value.shape) != want:
                torch_key = origin[f"{collection}/{key}"]
                raise ValueError(
                    f"shape mismatch for {collection}/backbone/trunk/{key} (torch key {torch_key!r}): checkpoint "
                    f"gives {list(value.shape)} (torch {list(np.shape(state_dict[torch_key]))}), the model has "
                    f"{list(want)}"
                )
        new_trees[collection] = {k: jnp.asarray(v, old_flat[k].dtype) for k, v in new_flat.items()}

    def unflatten(flat):
        tree: dict = {}
        for k, v in flat.items():
            _set(tree, tuple(k.split("/")), v)
        return tree

    out = jax.tree.map(lambda leaf: leaf, dict(variables))  # fresh containers: the input is never shared
    out = _replace(out, ("params", "backbone", "trunk"), unflatten(new_trees["params"]))
    out = _replace(out, ("batch_stats", "backbone", "trunk"), unflatten(new_trees["batch_stats"]))
    if type(variables) is not dict:
        try:
            from flax.core import FrozenDict

            if isinstance(variables, FrozenDict):
                return FrozenDict(out)
        except ImportError:  # pragma: no cover
            pass
    return out


__all__ = ["read_state_dict", "torchvision_resnet_to_flax", "load_pretrained_backbone", "SUPPORTED_FORMATS"]
