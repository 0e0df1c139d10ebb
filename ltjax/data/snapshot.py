"""What a run keeps of its dataset, so that ``ltjax.predict`` works on a machine without the training data.

``WORKDIR/dataset_snapshot.json`` and ``WORKDIR/dataset_snapshot.npz`` (written by ``ltjax.train`` when a
run starts and by ``ltjax.evaluate`` for a run that lacks them; atomically, process 0):

* the metadata (classes, n_c, N, the head / medium / tail groups, input shape, kind and dtype, the
  vocabulary size, ``info``);
* every split's name and size, and the training labels: the phase plan and the samplers count steps from
  them, and some methods' initial state reads them (LDRNet's class frequencies, the pseudo-label store).
  A run with hidden positives (``data.missing_ratio``) keeps its training labels *before* the hiding,
  which ``ltjax.train`` re-applies from ``data.missing_seed`` exactly as it did (the hiding is a pure
  function of the labels and the seed);
* what the evaluation transform needs beyond the config: for a word-level text dataset its vocabulary
  (the tokens, the tokenizer, lower-casing, ``max_length``).  An image dataset's transform is rebuilt from
  ``config.data`` (resize, normalise), MiniLM's WordPiece from its pinned asset, and feature vectors have
  none.  A transform is only recorded when the one rebuilt from the record equals the dataset's own, so a
  dataset with another kind of transform has no snapshot transform and predict then needs its data.

The examples themselves are not kept: reading one from a snapshot split is an error that says so.
:func:`load` gives a :class:`~ltjax.data.base.Dataset` made of these parts for ``Experiment(config, dataset)``.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ltjax.data.base import Dataset, DatasetMeta
from ltjax.data.groups import ClassGroups
from ltjax.errors import SnapshotError

SNAPSHOT_JSON = "dataset_snapshot.json"
SNAPSHOT_NPZ = "dataset_snapshot.npz"
VERSION = 1


class LabelOnlySplit:
    """A split of a snapshot: its labels (the training split) or its size (the others), no examples."""

    def __init__(self, name: str, labels: np.ndarray):
        self.name = name
        self.labels = labels
        self.groups = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        raise SnapshotError(
            f"the {self.name!r} split of this run's dataset snapshot has labels but no examples: reading them "
            "needs the dataset itself (place its files where the run found them)")


def _transform_record(dataset: Dataset, data_cfg) -> dict | None:
    """The record from which :func:`_rebuild_transform` makes the dataset's eval transform again (None: it
    cannot; see the module docstring)."""
    kind = dataset.meta.input_kind
    t = dataset.eval_transform
    if kind == "features":
        record = {"kind": "features"} if t is None else None
    elif kind == "image":
        record = {"kind": "image"}
    elif kind == "text":
        from ltjax.data.text import TextTransform
        from ltjax.data.wordpiece import WordPieceTransform

        if isinstance(t, TextTransform):
            v = t.vocab
            record = {"kind": "text_words", "tokens": list(v.tokens), "tokenizer": v.tokenizer,
                      "lowercase": bool(v.lowercase), "max_length": int(t.max_length)}
        elif isinstance(t, WordPieceTransform):
            record = {"kind": "text_minilm", "max_length": int(t.max_length)}
        else:
            record = None
    else:
        record = None
    if record is None:
        return None
    try:
        rebuilt = _rebuild_transform(record, dataset.meta, data_cfg)
    except Exception:  # noqa: BLE001 (a transform that cannot be rebuilt is simply not recorded)
        return None
    return record if _same_transform(rebuilt, t) else None


def _same_transform(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if type(a) is not type(b):
        return False
    from ltjax.data.wordpiece import WordPieceTransform

    if isinstance(a, WordPieceTransform):  # the tokenizer object: one pinned MiniLM vocabulary
        return a.max_length == b.max_length and len(a.tokenizer) == len(b.tokenizer)
    return a == b


def _rebuild_transform(record: dict, meta: DatasetMeta, data_cfg):
    kind = record["kind"]
    if kind == "features":
        return None
    if kind == "image":
        from ltjax.data.images import ImageTransform

        return ImageTransform.from_config(data_cfg, train=False, hflip_preserves_labels=meta.hflip_preserves_labels)
    if kind == "text_words":
        from ltjax.data.text import TextTransform, Vocabulary

        vocab = Vocabulary(tuple(record["tokens"]), tokenizer=record["tokenizer"], lowercase=record["lowercase"])
        return TextTransform(vocab, int(record["max_length"]))
    if kind == "text_minilm":
        from ltjax.data.wordpiece import WordPieceTokenizer, WordPieceTransform

        return WordPieceTransform(WordPieceTokenizer.minilm(), int(record["max_length"]))
    raise SnapshotError(f"unknown transform record {kind!r} in a dataset snapshot (written by a newer ltjax?)")


def _training_labels(dataset: Dataset) -> np.ndarray:
    from ltjax.data.partial import hidden_split

    hidden = hidden_split(dataset)
    return np.asarray(hidden.full_labels if hidden is not None else dataset.split("train").labels)


def write(workdir: str, dataset: Dataset, data_cfg) -> bool:
    """Write the snapshot of ``dataset`` into ``workdir`` (atomically); False when the dataset has no
    evaluation transform a snapshot can rebuild (predict then needs the data; the labels are still kept)."""
    record = _transform_record(dataset, data_cfg)
    labels = _training_labels(dataset)
    splits = {name: len(s) for name, s in dataset.splits.items()}
    doc = {"version": VERSION, "meta": dataset.meta.to_dict(), "splits": splits, "transform": record}
    tmp = os.path.join(workdir, SNAPSHOT_NPZ + ".tmp.npz")
    packed = np.packbits(labels > 0, axis=1) if labels.size else np.zeros((len(labels), 0), np.uint8)
    np.savez_compressed(tmp, train_labels=packed, num_classes=np.asarray(labels.shape[1]))
    os.replace(tmp, os.path.join(workdir, SNAPSHOT_NPZ))
    tmp = os.path.join(workdir, SNAPSHOT_JSON + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, os.path.join(workdir, SNAPSHOT_JSON))
    return record is not None


def exists(workdir: str) -> bool:
    return all(os.path.isfile(os.path.join(workdir, n)) for n in (SNAPSHOT_JSON, SNAPSHOT_NPZ))


def _meta_from_dict(d: dict) -> DatasetMeta:
    names = tuple(d["class_names"])
    groups = ClassGroups(
        names=tuple(d["groups"]["groups"]),
        indices=tuple(np.asarray(v, np.int64) for v in d["groups"]["groups"].values()),
        num_classes=len(names), rule=d["groups"]["rule"])
    return DatasetMeta(
        name=d["name"], class_names=names, class_counts=np.asarray(d["class_counts"], np.int64),
        num_train=int(d["num_train"]), groups=groups, input_shape=tuple(d["input_shape"]),
        input_kind=d["input_kind"], info=d["info"], input_dtype=d["input_dtype"], vocab_size=int(d["vocab_size"]),
        hflip_preserves_labels=bool(d["hflip_preserves_labels"]))


def load(workdir: str, data_cfg) -> Dataset | None:
    """The snapshot of ``workdir`` as a Dataset (labels, no examples) with its rebuilt eval transform; None
    when the run has no snapshot or its snapshot has no transform."""
    if not exists(workdir):
        return None
    with open(os.path.join(workdir, SNAPSHOT_JSON)) as f:
        doc = json.load(f)
    if doc.get("transform") is None:
        return None
    meta = _meta_from_dict(doc["meta"])
    with np.load(os.path.join(workdir, SNAPSHOT_NPZ)) as z:
        c = int(z["num_classes"])
        train = np.unpackbits(z["train_labels"], axis=1, count=c).astype(np.float32)
    if c != meta.num_classes or len(train) != int(doc["splits"].get("train", -1)):
        raise SnapshotError(f"{workdir}: {SNAPSHOT_JSON} and {SNAPSHOT_NPZ} do not fit together "
                            f"({c} vs {meta.num_classes} classes); delete both and run ltjax.evaluate once")
    splits = {name: LabelOnlySplit(name, train if name == "train" else np.zeros((int(n), c), np.float32))
              for name, n in doc["splits"].items()}
    return Dataset(meta=meta, splits=splits, eval_transform=_rebuild_transform(doc["transform"], meta, data_cfg),
                   train_transform=None)


__all__ = ["SNAPSHOT_JSON", "SNAPSHOT_NPZ", "LabelOnlySplit", "SnapshotError", "exists", "load", "write"]
