"""Pretrained weights from torch checkpoints (torchvision ResNets, lukemelas EfficientNet-Lite0), read without torch.

Three steps, each usable on its own:

``read_state_dict(path) -> {name: np.ndarray}``
    reads a ``.safetensors`` file or a torch checkpoint (``.pth`` / ``.pt``) in either of torch's
    formats, told apart by the file's contents: the zip format (what ``torch.save`` writes since
    torch 1.6) and the legacy non-zip format (before 1.6, or ``_use_new_zipfile_serialization=False``).
    The legacy format is one stream of pickles: torch's magic number (0x1950a86a20f9469cfc6c), the
    protocol version (1001), a ``sys_info`` dict, the pickled object (tensors name their storages by
    persistent id ``('storage', storage type, key, location, numel, view_metadata)``), the list of
    storage keys, then for each key in that order its element count (int64, little-endian) and its raw
    little-endian bytes.  Tensors are rebuilt once those bytes have been read.  Either torch pickle
    is read by a restricted unpickler that only knows tensors (``torch._utils._rebuild_tensor_v2`` /
    ``_rebuild_tensor`` / ``_rebuild_parameter``), the torch storage types and
    ``collections.OrderedDict`` (the legacy header pickles may not name any global); any other global
    (``os.system``, a pickled ``nn.Module``, ...) is refused before anything runs, so loading never
    executes pickle code.  A checkpoint that wraps the state dict under ``'state_dict'`` or
    ``'model'`` is unwrapped and a DataParallel ``'module.'`` prefix is stripped.  float16 /
    bfloat16 tensors come back as float32; the other dtypes (float32/64, int8/16/32/64, uint8, bool)
    are kept.

``torchvision_resnet_to_flax(state_dict, depth) -> (params_trunk, batch_stats_trunk)``
    renames torchvision's ResNet keys to the trees of ``ltjax.models.resnet.ResNet`` (see that
    module's docstring): ``layer2.0.downsample.0.weight`` [O, I, kh, kw] becomes
    ``layer2_0/downsample_conv/kernel`` [kh, kw, I, O], BN ``weight``/``bias`` become
    ``scale``/``bias`` in params and ``running_mean``/``running_var`` become ``mean``/``var`` in
    batch_stats.  ``num_batches_tracked`` and the ImageNet classifier ``fc.*`` are ignored (the
    long-tailed classifier's neck and head are new).  Missing or unexpected keys and shapes that do
    not match the architecture raise a ``ValueError`` listing them.  (EfficientNet-Lite0's mapping is
    ``ltjax.models.efficientnet.lukemelas_to_flax``.)

``load_pretrained_backbone(variables, path, depth) -> variables``
    a copy of a classifier's variables (``{'params': {'backbone': {'trunk': ...}, ...},
    'batch_stats': {...}}``) whose trunk params and batch_stats are the checkpoint's; the neck and
    head are left untouched, and every converted leaf is checked against the existing leaf's shape
    (``replace_subtrees`` does this for any model).  ``ltjax.models.load_pretrained(model_name, variables,
    model.pretrained)`` picks the loader of a model: the ResNets' here, or one a model module
    registered in ``PRETRAINED_LOADERS`` (``efficientnet_lite0``); the training loop calls it.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Mapping

import numpy as np

from ltjax.models.resnet import ARCHS, STAGE_PLANES

SUPPORTED_FORMATS = (
    "'.safetensors' files, torch zip-format checkpoints ('.pth'/'.pt' written by torch.save since torch 1.6) and "
    "legacy non-zip torch checkpoints (torch.save before 1.6, or with _use_new_zipfile_serialization=False)"
)

# ---------------------------------------------------------------------------------- safetensors

# the safetensors dtypes ltjax reads (numpy's backend; float8 types are not among them)
_SAFETENSORS_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL")


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
    """Through the ``safetensors`` package (numpy backend, no torch); bfloat16 and float16 widen to float32,
    and a malformed file or an unsupported dtype is a ValueError that names the file."""
    from safetensors import SafetensorError, safe_open

    out: dict[str, np.ndarray] = {}
    try:
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():
                dtype_name = f.get_slice(name).get_dtype()
                if dtype_name not in _SAFETENSORS_DTYPES:
                    raise ValueError(
                        f"{path}: tensor {name!r} has unsupported safetensors dtype {dtype_name!r}; supported: "
                        f"{', '.join(_SAFETENSORS_DTYPES)}"
                    )
                array = f.get_tensor(name)
                if dtype_name in ("BF16", "F16"):
                    array = array.astype(np.float32)
                out[name] = np.array(array)  # own, writable memory
    except SafetensorError as e:
        raise ValueError(f"{path}: not a valid safetensors file ({e})") from None
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
    """A torch storage: flat elements in their stored dtype.

    In a zip checkpoint the data is read as soon as the pickle names the storage; in a legacy file the
    data follows the pickle, so ``array`` is None until then (``numel`` is what the pickle promised).
    A legacy storage *view* (``view_of`` set) is ``view_of.array[offset:offset + numel]``.
    """

    def __init__(self, array: np.ndarray | None, storage_type: _StorageType, key: str, numel: int = -1,
                 view_of: "_Storage | None" = None, offset: int = 0):
        self.array, self.type, self.key, self.numel = array, storage_type, key, numel
        self.view_of, self.offset = view_of, offset


def _check_geometry(storage: _Storage, storage_offset, size, stride) -> tuple[tuple, tuple, int]:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"a tensor was rebuilt from {type(storage).__name__} instead of a storage")
    try:
        size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(storage_offset)
    except (TypeError, ValueError):
        raise pickle.UnpicklingError(f"bad tensor geometry: size {size!r}, stride {stride!r}") from None
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"bad tensor geometry: size {size}, stride {stride}, offset {offset}")
    return size, stride, offset


def _materialize(storage: _Storage, offset: int, size: tuple, stride: tuple) -> np.ndarray:
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


class _PendingTensor:
    """A tensor of a legacy file whose storage bytes come after the pickle; materialised afterwards."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialize(self) -> np.ndarray:
        return _materialize(self.storage, self.offset, self.size, self.stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    size, stride, offset = _check_geometry(storage, storage_offset, size, stride)
    if storage.array is None:
        return _PendingTensor(storage, offset, size, stride)
    return _materialize(storage, offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    """torch < 1.0 pickled tensors with ``torch._utils._rebuild_tensor`` (no requires_grad / hooks)."""
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles a torch pickle knowing only tensors, storages and OrderedDict; refuses all else.

    Subclasses turn a storage's persistent id into a :class:`_Storage` (``_storage``)."""

    _pid_length = 5
    _format = "checkpoint"

    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor":
            return _rebuild_tensor
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
        if not (isinstance(pid, tuple) and len(pid) == self._pid_length and pid[0] == "storage"):
            raise pickle.UnpicklingError(
                f"{self._path}: unsupported persistent id {pid!r} in a {self._format} (expected a torch storage)"
            )
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self._path}: storage {key!r} has unknown type {storage_type!r}")
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"{self._path}: storage {key!r} has a bad element count {numel!r}")
        return self._storage(storage_type, key, numel, pid)

    def _storage(self, storage_type: _StorageType, key: str, numel: int, pid: tuple) -> _Storage:
        raise NotImplementedError


class _RestrictedUnpickler(_TorchUnpickler):
    """The zip format's data.pkl: a storage is the file ``<prefix>data/<key>`` of the archive."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str, path: str):
        super().__init__(file, path)
        self._archive, self._prefix, self._byteorder = archive, prefix, byteorder

    def _storage(self, storage_type: _StorageType, key: str, numel: int, pid: tuple) -> _Storage:
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
        if storage_type.name != "UntypedStorage" and array.size < numel:
            raise ValueError(f"{self._path}: storage {name!r} holds {array.size} elements, the pickle says {numel}")
        storage = _Storage(array, storage_type, key, numel)
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


# ---------------------------------------------------------------------------------- legacy torch files

# torch.serialization's legacy (pre-1.6, non-zip) format: these pickles, one after the other, in one stream
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


class _PlainUnpickler(pickle.Unpickler):
    """For the legacy file's header pickles and storage-key list: plain data only, no globals at all."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(
            f"{self._path}: refusing to load global '{module}.{name}' from a legacy torch file's header; pickled "
            "code is never executed"
        )

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"{self._path}: unexpected persistent id {pid!r} in a legacy torch file's header")


class _LegacyUnpickler(_TorchUnpickler):
    """The legacy format's main pickle: storages are named by key here and their bytes come later.

    Persistent id: ``('storage', storage type, root key, location, numel, view_metadata)`` where
    ``view_metadata`` is None or ``(view key, offset, size)`` (a slice of the root storage, torch < 1.0)."""

    _pid_length = 6
    _format = "legacy torch file"

    def _storage(self, storage_type: _StorageType, key: str, numel: int, pid: tuple) -> _Storage:
        root = self._storages.get(key)
        if root is None:
            root = self._storages[key] = _Storage(None, storage_type, key, numel)
        elif root.view_of is not None or root.type.name != storage_type.name or root.numel != numel:
            raise pickle.UnpicklingError(f"{self._path}: storage {key!r} is described inconsistently ({pid!r})")
        view_metadata = pid[5]
        if view_metadata is None:
            return root
        try:
            view_key, offset, size = str(view_metadata[0]), int(view_metadata[1]), int(view_metadata[2])
        except (TypeError, ValueError, IndexError):
            raise pickle.UnpicklingError(f"{self._path}: bad storage view metadata {view_metadata!r}") from None
        if offset < 0 or size < 0 or offset + size > numel:
            raise pickle.UnpicklingError(
                f"{self._path}: storage view {view_key!r} [{offset}, {offset + size}) lies outside storage {key!r} of "
                f"{numel} elements"
            )
        view = self._storages.get(view_key)
        if view is None:
            view = self._storages[view_key] = _Storage(None, storage_type, view_key, size, view_of=root, offset=offset)
        return view

    def roots(self) -> dict[str, _Storage]:
        return {k: s for k, s in self._storages.items() if s.view_of is None}

    def views(self) -> list[_Storage]:
        return [s for s in self._storages.values() if s.view_of is not None]


def _resolve_pending(obj: Any) -> Any:
    """``obj`` with every :class:`_PendingTensor` (in dicts, lists, tuples) replaced by its array."""
    if isinstance(obj, _PendingTensor):
        return obj.materialize()
    if isinstance(obj, collections.OrderedDict):
        out = collections.OrderedDict((k, _resolve_pending(v)) for k, v in obj.items())
        out.__dict__.update(obj.__dict__)  # e.g. a state dict's _metadata
        return out
    if isinstance(obj, dict):
        return {k: _resolve_pending(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve_pending(v) for v in obj)
    return obj


def _is_legacy_torch(path: str) -> bool:
    """Whether the file starts with the legacy format's magic number (a pickled int)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:1] != b"\x80":
        return False
    try:
        return _PlainUnpickler(io.BytesIO(head), path).load() == LEGACY_MAGIC_NUMBER
    except Exception:  # noqa: BLE001 - anything unreadable is simply not this format
        return False


def _read_torch_legacy(path: str) -> Any:
    """Read a legacy (pre-1.6, non-zip) ``torch.save`` file; see ``read_state_dict``."""
    with open(path, "rb") as f:
        blob = f.read()
    stream = io.BytesIO(blob)

    def header(what: str):
        try:
            return _PlainUnpickler(stream, path).load()
        except pickle.UnpicklingError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated or garbled bytes
            raise ValueError(f"{path}: not a valid legacy non-zip torch file (cannot read its {what}: {e!r}); "
                             f"supported formats: {SUPPORTED_FORMATS}") from None

    magic = header("magic number")
    if magic != LEGACY_MAGIC_NUMBER:
        raise ValueError(f"{path}: not a valid legacy non-zip torch file (wrong magic number {magic!r}); supported "
                         f"formats: {SUPPORTED_FORMATS}")
    protocol = header("protocol version")
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"{path}: legacy torch file with unsupported protocol version {protocol!r} "
                         f"(expected {LEGACY_PROTOCOL_VERSION})")
    header("sys_info")  # {'protocol_version', 'little_endian', 'type_sizes'}: storages are little-endian anyway
    unpickler = _LegacyUnpickler(stream, path)
    try:
        obj = unpickler.load()
    except (EOFError, IndexError, struct.error) as e:
        raise ValueError(f"{path}: truncated or corrupt legacy torch file ({e!r})") from None
    keys = header("list of storage keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{path}: legacy torch file: the storage key list is not a list of strings: {keys!r:.200}")
    roots = unpickler.roots()
    if set(keys) != set(roots) or len(keys) != len(set(keys)):
        raise ValueError(f"{path}: legacy torch file: the storage keys {sorted(keys)[:20]} do not match the storages "
                         f"its pickle uses {sorted(roots)[:20]}")
    for key in keys:
        storage = roots[key]
        head = stream.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: legacy torch file is truncated before storage {key!r}")
        (count,) = struct.unpack("<q", head)
        if count != storage.numel:
            raise ValueError(f"{path}: storage {key!r} holds {count} elements, the pickle says {storage.numel}")
        dtype = storage.type.dtype.newbyteorder("<")
        raw = stream.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise ValueError(f"{path}: legacy torch file is truncated inside storage {key!r} "
                             f"({len(raw)} of {count * dtype.itemsize} bytes)")
        storage.array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    for view in unpickler.views():
        view.array = view.view_of.array[view.offset:view.offset + view.numel]
    return _resolve_pending(obj)


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
    """The tensors of a ``.safetensors`` file or a torch ``.pth``/``.pt`` (zip or legacy format) as numpy arrays.

    The format is taken from the file's contents: a zip archive is a current torch checkpoint, a pickle
    that starts with torch's legacy magic number a legacy one, a ``.safetensors`` name a safetensors
    file.  Never imports torch and never executes pickled code.  float16/bfloat16 become float32.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained checkpoint {path!r} does not exist (or is not a file)")
    if zipfile.is_zipfile(path):
        return _to_state_dict(_read_torch_zip(path), path)
    if _is_legacy_torch(path):
        return _to_state_dict(_read_torch_legacy(path), path)
    if path.endswith(".safetensors"):
        return _to_state_dict(_read_safetensors(path), path)
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic[:1] == b"\x80":
        raise ValueError(
            f"{path}: a pickle, but not a torch checkpoint: not a valid legacy non-zip torch file (it does not start "
            f"with torch's magic number) nor a zip archive; supported formats: {SUPPORTED_FORMATS}"
        )
    raise ValueError(f"{path}: unsupported checkpoint format; supported formats: {SUPPORTED_FORMATS}")


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
    expected = torch_expected(convs, bns)
    ignored = {f"{t}.num_batches_tracked" for t in bns} | {"fc.weight", "fc.bias"}
    check_state_dict(state_dict, expected, ignored, f"resnet{depth}",
                     f"is it a torchvision ResNet checkpoint of depth {depth}?")
    return place_tensors(state_dict, expected)


def torch_expected(convs: Mapping[str, tuple], bns: Mapping[str, tuple]) -> dict[str, tuple[tuple, tuple, str]]:
    """torch key -> (flax path, torch shape, collection) for conv layers ``{torch name: (flax path, OIHW
    shape)}`` and BatchNorm layers ``{torch name: (flax path, channels)}`` (weight / bias / running_mean /
    running_var -> scale / bias / mean / var)."""
    expected: dict[str, tuple[tuple, tuple, str]] = {}
    for t, (f, shape) in convs.items():
        expected[f"{t}.weight"] = (tuple(f) + ("kernel",), tuple(shape), "params")
    for t, (f, c) in bns.items():
        f = tuple(f)
        expected[f"{t}.weight"] = (f + ("scale",), (c,), "params")
        expected[f"{t}.bias"] = (f + ("bias",), (c,), "params")
        expected[f"{t}.running_mean"] = (f + ("mean",), (c,), "batch_stats")
        expected[f"{t}.running_var"] = (f + ("var",), (c,), "batch_stats")
    return expected


def check_state_dict(state_dict: Mapping[str, Any], expected: Mapping[str, tuple], ignored, label: str, hint: str,
                     spelled: Mapping[str, str] | None = None) -> None:
    """``ValueError`` naming the missing and unexpected keys (``hint`` says what the file should be) and every
    shape mismatch of ``state_dict`` against ``expected`` (:func:`torch_expected`; ``label`` names the
    architecture); ``spelled`` maps a key to the way the checkpoint spells it, for the messages."""
    spelled = spelled or {}
    keys = set(state_dict)
    missing, unexpected = set(expected) - keys, keys - set(expected) - set(ignored)
    if missing or unexpected:
        parts = [f"the state dict does not match torchvision's {label}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_format_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_format_keys(spelled.get(k, k) for k in unexpected)}")
        parts.append(hint)
        raise ValueError("; ".join(parts))
    mismatched = [f"{spelled.get(k, k)}: checkpoint {list(np.shape(state_dict[k]))} vs {label} {list(shape)}"
                  for k, (_, shape, _) in expected.items() if tuple(np.shape(state_dict[k])) != tuple(shape)]
    if mismatched:
        raise ValueError(f"shape mismatch between the state dict and torchvision's {label}: " + "; ".join(mismatched))


def place_tensors(state_dict: Mapping[str, Any], expected: Mapping[str, tuple], names: Mapping[str, str] | None = None):
    """(params, batch_stats, origin) trees from checked torch tensors: ``expected[key] = (flax path, shape,
    "params" | "batch_stats")``; 4-d conv kernels OIHW -> HWIO; ``origin`` maps each leaf to the checkpoint
    key it came from (``names[key]`` when the checkpoint spelled it differently)."""
    params: dict = {}
    batch_stats: dict = {}
    origin: dict[str, str] = {}
    for key, (fpath, shape, collection) in expected.items():
        value = np.asarray(state_dict[key], np.float32)
        if len(shape) == 4:
            value = np.ascontiguousarray(value.transpose(2, 3, 1, 0))  # OIHW -> HWIO
        _set(params if collection == "params" else batch_stats, fpath, value)
        origin[f"{collection}/" + "/".join(fpath)] = key if names is None else names[key]
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


def _unflatten(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for k, v in flat.items():
        _set(tree, tuple(k.split("/")), v)
    return tree


def replace_subtrees(
    variables: Mapping,
    updates: Mapping[tuple, Mapping],
    *,
    origin: Mapping[str, str],
    state_dict: Mapping[str, Any],
    model_label: str,
    structure_hint: str,
) -> Any:
    """A copy of ``variables`` whose subtrees at the paths of ``updates`` (e.g. ``('params', 'backbone',
    'trunk')``) are replaced by the converted trees (nested dicts of numpy arrays).

    Each converted subtree must have exactly the existing subtree's leaves, with the same shapes (each
    leaf takes the existing leaf's dtype); otherwise a ``ValueError`` names the differences.  ``origin``
    maps ``'/'``-joined leaf paths (``params/backbone/trunk/conv1/kernel``) to the checkpoint key they
    came from, for the messages; ``model_label`` names the architecture ('resnet18'), ``structure_hint``
    describes the expected variables when a path is missing.  Everything else is kept; the result has
    the input's container type (a ``FrozenDict`` stays one) and never shares containers with it.
    """
    import jax
    import jax.numpy as jnp

    olds = {}
    for path in updates:  # every target must exist before anything is compared
        old = variables
        try:
            for p in path:
                old = old[p]
        except (KeyError, TypeError):
            raise ValueError(f"variables must be {structure_hint}") from None
        olds[path] = old
    out = jax.tree.map(lambda leaf: leaf, dict(variables))  # fresh containers: the input is never shared
    for path, new in updates.items():
        old, where = olds[path], "/".join(path)
        old_flat, new_flat = _flatten(old), _flatten(new)
        missing, extra = set(old_flat) - set(new_flat), set(new_flat) - set(old_flat)
        if missing or extra:
            raise ValueError(
                f"the converted {model_label} {path[0]} do not match the model's {'/'.join(path[1:])}: "
                f"in the model only: {_format_keys(missing) or 'none'}; in the checkpoint only: "
                f"{_format_keys(extra) or 'none'}; was the model built as {model_label}?"
            )
        for key, value in new_flat.items():
            want = tuple(old_flat[key].shape)
            if tuple(np.shape(value)) != want:
                torch_key = origin.get(f"{where}/{key}", "?")
                torch_shape = list(np.shape(state_dict[torch_key])) if torch_key in state_dict else "?"
                raise ValueError(
                    f"shape mismatch for {where}/{key} (torch key {torch_key!r}): checkpoint gives "
                    f"{list(np.shape(value))} (torch {torch_shape}), the model has {list(want)}"
                )
        out = _replace(out, path, _unflatten({k: jnp.asarray(v, old_flat[k].dtype) for k, v in new_flat.items()}))
    if type(variables) is not dict:
        try:
            from flax.core import FrozenDict

            if isinstance(variables, FrozenDict):
                return FrozenDict(out)
        except ImportError:  # pragma: no cover
            pass
    return out


def load_pretrained_backbone(variables: Mapping, path: str | os.PathLike | Mapping[str, Any], depth: int) -> Any:
    """A copy of a ResNet classifier's ``variables`` with the trunk's params and batch_stats taken from
    the torchvision checkpoint at ``path`` (or an already-read state dict); the neck and head keep their
    values.  Every converted leaf must have the existing leaf's shape and takes its dtype.  The
    result has the input's container type (a ``FrozenDict`` stays one)."""
    state_dict = path if isinstance(path, Mapping) else read_state_dict(path)
    params, batch_stats, origin = _convert(state_dict, depth)
    trunk = ("backbone", "trunk")
    return replace_subtrees(
        variables,
        {("params", *trunk): params, ("batch_stats", *trunk): batch_stats},
        origin={k.replace("/", "/backbone/trunk/", 1): v for k, v in origin.items()},
        state_dict=state_dict,
        model_label=f"resnet{depth}",
        structure_hint=(
            "a ResNet classifier's {'params': {'backbone': {'trunk': ...}}, 'batch_stats': "
            "{'backbone': {'trunk': ...}}} (built by ltjax.models.build_model with model.name 'resnet18'/'resnet50')"
        ),
    )


# model name -> loader(variables, model.pretrained) -> variables; models register here (efficientnet.py)
PRETRAINED_LOADERS: dict[str, Any] = {}


__all__ = [
    "read_state_dict",
    "torchvision_resnet_to_flax",
    "load_pretrained_backbone",
    "replace_subtrees",
    "PRETRAINED_LOADERS",
    "SUPPORTED_FORMATS",
]
