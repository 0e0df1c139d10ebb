"""Prepared copies of sources: tensorflow-datasets builders that write array_record files, read through grain.

``prepare(source, prepared_dir)`` turns a :class:`~ltjax.data.sources.Source` (the user's files as read
by a dataset module) into array_record files with a ``tfds.core.GeneratorBasedBuilder``, then opens them
as random-access splits.  TensorFlow is never imported: images are stored as their original encoded
bytes (JPEG/PNG as on disk, no re-encoding) and decoded by :mod:`ltjax.data.images` in the pipeline.

Layout: ``<prepared_dir>/<dataset name>/fp_<fingerprint>/1.0.0/`` (``dataset_info.json``,
``features.json``, ``metadata.json`` and ``<name>-<split>.array_record-000NN-of-000MM``), where the
fingerprint (:meth:`Source.fingerprint`) covers the classes, ids, labels and, for images, each file's
name and size, so a changed annotation or image gives a new copy instead of silently reusing an old
one.  ``prepared_dir`` empty means ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.

Records: ``{"id": text, "labels": uint8 [C], "image": encoded image}`` (image sources) or
``{"id": text, "labels": uint8 [C], "text": text}`` (text sources), in source order
(``disable_shuffling``; keys are the example positions).  The same files are readable without ltjax
(``tfds.builder_from_directory(path).as_data_source()``, or ``tfds.load`` where TensorFlow is installed).

Writing is atomic (tfds writes into an ``incomplete.*`` folder and renames it when every split is
complete), so a killed preparation leaves nothing half-written that a later run would read.  With
several JAX processes, process 0 prepares and every process waits at a barrier before reading (the
folder must be on a file system all hosts see).
"""
from __future__ import annotations

import io
import os
import re
import types

import numpy as np

from ltjax.errors import MissingDependencyError  # noqa: F401 (re-exported)

FORMAT_VERSION = "1.0.0"
_MAX_LISTED = 5


def _tfds():
    try:
        import tensorflow_datasets as tfds  # TensorFlow itself is not needed
    except ImportError as e:
        raise MissingDependencyError(
            f"data.storage='array_record' writes datasets with tensorflow-datasets, which is not importable "
            f"({e}). Install it with `pip install tensorflow-datasets array-record` (no TensorFlow needed), "
            "or read the original files in place with --config.data.storage=files"
        ) from None
    return tfds


def default_prepared_dir(prepared_dir: str = "") -> str:
    if prepared_dir:
        return os.path.abspath(os.path.expanduser(str(prepared_dir)))
    env = os.environ.get("TFDS_DATA_DIR")
    return os.path.abspath(os.path.expanduser(env or os.path.join("~", "tensorflow_datasets")))


def builder_name(dataset_name: str) -> str:
    """A valid tensorflow-datasets name (``[a-z][a-z0-9_]*``) for a dataset name."""
    name = re.sub(r"[^a-z0-9_]+", "_", str(dataset_name).lower()).strip("_")
    if not name or not name[0].isalpha():
        name = "ds_" + name
    return name


# ---------------------------------------------------------------------------------------------------
# the builder
# ---------------------------------------------------------------------------------------------------


def _make_builder_class(source):
    """A ``GeneratorBasedBuilder`` subclass writing ``source`` (not registered in tfds' global registry)."""
    tfds = _tfds()
    num_classes = len(source.class_names)

    class SourceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(FORMAT_VERSION)
        RELEASE_NOTES = {FORMAT_VERSION: "ltjax prepared copy of a user-provided source"}

        def _info(self):
            content = (
                {"image": tfds.features.Image(shape=(None, None, 3))}
                if source.kind == "image"
                else {"text": tfds.features.Text()}
            )
            features = tfds.features.FeaturesDict(
                {"id": tfds.features.Text(), "labels": tfds.features.Tensor(shape=(num_classes,), dtype=np.uint8),
                 **content}
            )
            meta = tfds.core.MetadataDict()
            meta["ltjax"] = {
                "dataset": source.name,
                "kind": source.kind,
                "class_names": list(source.class_names),
                "sizes": {k: len(v) for k, v in source.splits.items()},
                "info": _jsonable(source.info),
            }
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"ltjax prepared copy of {source.name} ({source.kind}, {num_classes} classes)",
                features=features,
                metadata=meta,
                disable_shuffling=True,  # records keep the source order (keys = positions)
            )

        def _split_generators(self, dl_manager):
            return {name: self._generate_examples(name) for name in source.splits}

        def _generate_examples(self, split_name):
            split = source.splits[split_name]
            labels = np.asarray(split.labels, dtype=np.uint8)
            for i, (ex_id, item) in enumerate(zip(split.ids, split.items)):
                record = {"id": ex_id, "labels": labels[i]}
                if source.kind == "image":
                    with open(item, "rb") as f:  # the encoded file as is; no TensorFlow, no re-encoding
                        record["image"] = io.BytesIO(f.read())
                else:
                    record["text"] = item
                yield i, record

    fp = source.fingerprint({"format": FORMAT_VERSION})
    cls = types.new_class(
        "LtjaxSource", (SourceBuilder,), {"skip_registration": True},
        lambda ns: ns.update({
            "name": builder_name(source.name),
            "BUILDER_CONFIGS": [tfds.core.BuilderConfig(name=f"fp_{fp}", description="source fingerprint")],
        }),
    )
    return cls


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _check_image_files(source) -> None:
    from ltjax.errors import DatasetFilesError

    missing = [p for s in source.splits.values() for p in s.items if not os.path.isfile(p)]
    if missing:
        shown = "\n".join(f"  {p}" for p in missing[:_MAX_LISTED])
        more = f"\n  ... and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise DatasetFilesError(
            f"{source.name}: {len(missing)} image file(s) missing, cannot prepare the array_record copy:\n"
            f"{shown}{more}\nCheck data.root and that the image archives are fully extracted."
        )


# ---------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------


class ArrayRecordSplit:
    """One prepared split: ``split[i] = {"inputs": encoded image bytes | UTF-8 text bytes, "labels": float32 [C]}``.

    Random access into the array_record files through a tfds ``ArrayRecordDataSource`` (what grain
    reads), opened lazily from the prepared folder, so the split pickles (for grain worker processes)
    as a path and reopens the files in the worker.  ``labels`` is the read-only [N, C] float32 matrix
    (for samplers and evaluation).
    """

    def __init__(self, data_path: str, split: str, labels: np.ndarray, input_key: str):
        self.data_path = str(data_path)
        self.split = split
        self.labels = labels
        self.input_key = input_key  # "image" | "text"
        self._source = None

    def _data_source(self):
        if self._source is None:
            tfds = _tfds()
            decoders = {"image": tfds.decode.SkipDecoding()} if self.input_key == "image" else None
            builder = tfds.builder_from_directory(self.data_path)
            self._source = builder.as_data_source(split=self.split, decoders=decoders)
        return self._source

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_source"] = None
        return state

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        record = self._data_source()[index]
        return {"inputs": record[self.input_key], "labels": self.labels[index]}

    def record(self, index: int) -> dict:
        """The stored record as written (id, labels, image bytes / text)."""
        return self._data_source()[int(index)]

    def num_records(self) -> int:
        return len(self._data_source())


def _barrier(name: str) -> None:
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def prepare(source, prepared_dir: str = "") -> tuple[dict, dict]:
    """Write ``source`` as array_record (unless already there) and open it.

    Returns ``(splits, where)``: split name -> :class:`ArrayRecordSplit`, and a JSON-able description
    (builder name, config, path, whether this call wrote it).
    """
    import jax

    tfds = _tfds()
    root = default_prepared_dir(prepared_dir)
    cls = _make_builder_class(source)
    config_name = cls.BUILDER_CONFIGS[0].name
    builder = cls(config=config_name, data_dir=root, file_format="array_record")
    wrote = False
    if jax.process_index() == 0 and not builder.is_prepared():
        if source.kind == "image":
            _check_image_files(source)
        os.makedirs(root, exist_ok=True)
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=root, download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
            )
            wrote = True
        except FileExistsError:
            # another run (e.g. run_table.py --jobs N) wrote the same copy first and renamed it into place
            # while this one was writing: the copies are identical (same fingerprint); use the finished one
            builder = cls(config=config_name, data_dir=root, file_format="array_record")
            if not builder.is_prepared():
                raise
    _barrier(f"ltjax-prepare-{cls.name}-{config_name}")
    if not wrote:
        builder = cls(config=config_name, data_dir=root, file_format="array_record")
        if not builder.is_prepared():
            raise FileNotFoundError(
                f"{source.name}: the prepared copy {builder.data_path} is not there after process 0 prepared it; "
                "data.prepared_dir must be a folder every process can read (a shared file system)"
            )
    key = "image" if source.kind == "image" else "text"
    splits = {}
    for name, split in source.splits.items():
        out = ArrayRecordSplit(str(builder.data_path), name, split.labels, key)
        if out.num_records() != len(split):
            raise ValueError(
                f"{source.name}: prepared split {name!r} at {builder.data_path} has {out.num_records()} records, "
                f"the source {len(split)}; delete that folder to rebuild it"
            )
        for i in sorted({0, len(split) - 1}) if len(split) else ():  # order check: records are in source order
            got = out.record(i)["id"]
            got = got.decode("utf-8") if isinstance(got, bytes) else str(got)
            if got != split.ids[i]:
                raise ValueError(
                    f"{source.name}: prepared split {name!r} at {builder.data_path} holds {got!r} at position "
                    f"{i}, the source {split.ids[i]!r}; delete that folder to rebuild it"
                )
        splits[name] = out
    where = {"builder": cls.name, "config": config_name, "path": str(builder.data_path), "written_now": wrote}
    return splits, where
