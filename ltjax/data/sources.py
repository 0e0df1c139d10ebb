"""Raw datasets as *sources*, and how a source becomes a :class:`~ltjax.data.base.Dataset`.

A dataset module (VOC-LT, COCO-LT, ChestX-ray14, ODIR-5K, text corpora, bring-your-own manifests) only
reads the user's files into a :class:`Source`: per split the example ids, the items (image file paths,
or the documents themselves) and the [N, C] multi-hot labels, plus the class names and provenance.
:func:`dataset_from_source` does the rest, the same way for every dataset:

* ``data.storage = "array_record"`` (default): the source is written once, through a
  tensorflow-datasets builder (:mod:`ltjax.data.prepared`; no TensorFlow), into array_record files under
  ``data.prepared_dir``; the splits then read those files (random access, through grain).  The prepared
  copy is keyed by a fingerprint of the source, so changed annotations or images give a new copy.
* ``data.storage = "files"``: the splits read the original files in place (images) or hold the
  documents in memory (text).

Then the metadata (n_c, N, head/medium/tail groups from the TRAINING labels) and the example transforms
for the source's kind: images -> :mod:`ltjax.data.images` (decode, DB augmentations, optional cache);
text -> :mod:`ltjax.data.text` (tokenise, vocabulary from the training documents, pad/truncate).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import ml_collections
import numpy as np

from ltjax.data.base import Dataset, make_meta

KINDS = ("image", "text")
STORAGES = ("array_record", "files")


@dataclasses.dataclass(frozen=True, eq=False)
class SourceSplit:
    """One split of a source: ``ids[i]`` (unique str), ``items[i]`` (image path or document), ``labels[i]``."""

    ids: tuple[str, ...]
    items: tuple[str, ...]
    labels: np.ndarray  # float32 [N, C] multi-hot
    groups: tuple[str, ...] | None = None  # the group of each example (a patient), for group-aware carving

    def __post_init__(self):
        if self.groups is not None:
            if len(self.groups) != len(self.ids):
                raise ValueError(f"groups has {len(self.groups)} entries for {len(self.ids)} examples")
            object.__setattr__(self, "groups", tuple(str(g) for g in self.groups))
        labels = np.array(self.labels, dtype=np.float32, copy=True)
        if labels.ndim != 2:
            raise ValueError(f"labels must be a [N, C] multi-hot matrix, got shape {labels.shape}")
        if not (len(self.ids) == len(self.items) == len(labels)):
            raise ValueError(
                f"ids, items and labels disagree on the number of examples: "
                f"{len(self.ids)}, {len(self.items)}, {len(labels)}"
            )
        if not np.isin(labels, (0.0, 1.0)).all():
            raise ValueError("labels must be multi-hot (only 0 and 1)")
        ids = tuple(str(i) for i in self.ids)
        if len(set(ids)) != len(ids):
            raise ValueError("example ids must be unique within a split")
        labels.setflags(write=False)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "items", tuple(str(x) for x in self.items))
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.ids)


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """A dataset as read from the user's files, before storage, metadata and transforms."""

    name: str  # registered dataset name, e.g. "voc_lt"
    kind: str  # "image" | "text"
    class_names: tuple[str, ...]
    splits: dict  # split name -> SourceSplit; "train" and "test" required, "val" optional
    info: dict = dataclasses.field(default_factory=dict)  # provenance / protocol (JSON-serialisable)
    # images: False when a horizontal flip changes what an image shows (mirrored digits); then neither
    # pipeline flips (data.flip_prob is ignored and the dataset's info says so)
    hflip_preserves_labels: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"source kind must be one of {KINDS}, got {self.kind!r}")
        for required in ("train", "test"):
            if required not in self.splits:
                raise ValueError(f"source {self.name!r} has no {required!r} split (splits: {', '.join(self.splits)})")
        for split_name, split in self.splits.items():
            if split.labels.shape[1] != len(self.class_names):
                raise ValueError(
                    f"source {self.name!r}, split {split_name!r}: labels have {split.labels.shape[1]} columns "
                    f"but there are {len(self.class_names)} class names"
                )
        object.__setattr__(self, "class_names", tuple(self.class_names))

    def fingerprint(self, extra: dict | None = None) -> str:
        """sha256 (hex, 16 chars) of everything a prepared copy depends on: kind, classes, ids, labels,
        items (for images: the path relative to the common root plus the file's size) and ``extra``."""
        h = hashlib.sha256()
        h.update(json.dumps([self.name, self.kind, list(self.class_names), extra or {}], sort_keys=True).encode())
        for split_name in sorted(self.splits):
            split = self.splits[split_name]
            h.update(split_name.encode() + b"\0")
            h.update("\0".join(split.ids).encode())
            h.update(np.ascontiguousarray(split.labels, dtype=np.uint8).tobytes())
            if self.kind == "image":
                for p in split.items:
                    try:
                        size = os.path.getsize(p)
                    except OSError:
                        size = -1
                    h.update(f"{os.path.basename(p)}:{size}\0".encode())
            else:
                for doc in split.items:
                    h.update(hashlib.sha256(doc.encode("utf-8")).digest())
        return h.hexdigest()[:16]


def source_defaults(kind: str) -> ml_collections.ConfigDict:
    """Config fields shared by every source-backed dataset of this ``kind`` (merged into config.data)."""
    c = ml_collections.ConfigDict()
    # "array_record": write the source once into array_record files (tensorflow-datasets builder, no
    # TensorFlow) and read those; "files": read the original files in place.
    c.storage = "array_record"
    c.prepared_dir = ""  # where prepared copies go; "" = $TFDS_DATA_DIR, else ~/tensorflow_datasets
    if kind == "image":
        from ltjax.data.images import image_defaults

        c.update(image_defaults())
    elif kind == "text":
        from ltjax.data.text import text_defaults

        c.update(text_defaults())
    else:
        raise ValueError(f"unknown source kind {kind!r}; choose one of {KINDS}")
    return c


def with_defaults(data_cfg, defaults: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """An unlocked copy of ``data_cfg`` with every absent field filled from ``defaults``."""
    out = ml_collections.ConfigDict(data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg))
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class ItemSplit:
    """A split read in place: ``split[i] = {"inputs": image path or document str, "labels": float32 [C]}``."""

    items: tuple[str, ...]
    labels: np.ndarray
    groups: tuple[str, ...] | None = None  # each example's group (a patient), when the source knows it

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        return {"inputs": self.items[index], "labels": self.labels[index]}


def dataset_from_source(source: Source, cfg) -> Dataset:
    """The :class:`Dataset` of ``source`` under ``cfg`` (config.data with the source defaults filled in)."""
    storage = str(cfg.storage)
    if storage not in STORAGES:
        raise ValueError(f"data.storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    info = dict(source.info)
    info["storage"] = storage
    if storage == "array_record":
        from ltjax.data import prepared

        splits, where = prepared.prepare(source, cfg.prepared_dir)
        info["prepared"] = where
    else:
        splits = {name: ItemSplit(s.items, s.labels, s.groups) for name, s in source.splits.items()}
    for name, s in source.splits.items():  # (group-aware validation carving: ltjax/data/stratify.py)
        if s.groups is not None and getattr(splits[name], "groups", None) is None:
            splits[name].groups = s.groups
    info["sizes"] = {name: len(s) for name, s in source.splits.items()}
    train_items = source.splits["train"].items
    if source.kind == "image":
        from ltjax.data.images import ImageTransform

        size = int(cfg.image_size)
        flips = bool(source.hflip_preserves_labels)
        train_t = ImageTransform.from_config(cfg, train=True, hflip_preserves_labels=flips)
        eval_t = ImageTransform.from_config(cfg, train=False, hflip_preserves_labels=flips)
        if not flips:
            info["horizontal_flip"] = (
                f"off: horizontal flips change {source.name}'s labels, so no pipeline flips its images "
                f"(data.flip_prob={float(cfg.flip_prob):g} ignored)"
            )
        input_shape, input_dtype, vocab_size = (size, size, 3), "float32", 0
    else:
        from ltjax.data.text import text_transforms

        setup = text_transforms(train_items, cfg)
        train_t, eval_t = setup.train_transform, setup.eval_transform
        input_shape, input_dtype, vocab_size = tuple(setup.input_shape), "int32", int(setup.vocab_size)
        info.update(setup.info)
    meta = make_meta(
        source.name, source.class_names, source.splits["train"].labels, cfg.groups, input_shape,
        input_kind=source.kind, info=info,
    )
    meta = dataclasses.replace(meta, input_dtype=input_dtype, vocab_size=vocab_size,
                               hflip_preserves_labels=bool(source.hflip_preserves_labels))
    return Dataset(meta=meta, splits=splits, train_transform=train_t, eval_transform=eval_t)
