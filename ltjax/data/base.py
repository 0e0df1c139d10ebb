"""The dataset abstraction every method and the evaluator use: splits of examples plus metadata."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import numpy as np

from ltjax.data.groups import ClassGroups, class_groups
from ltjax.registry import Registry


class Split(Protocol):
    """A random-access split (also a grain ``RandomAccessDataSource``).

    ``split[i]`` returns ``{"inputs": np.ndarray, "labels": np.ndarray [C] float32 multi-hot}``;
    ``split.labels`` is the whole [N, C] label matrix (for samplers and the evaluator).
    """

    labels: np.ndarray

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """A split held in memory as two arrays."""

    inputs: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.labels.ndim != 2:
            raise ValueError(f"labels must be a [N, C] multi-hot matrix, got shape {self.labels.shape}")
        if len(self.inputs) != len(self.labels):
            raise ValueError(
                f"inputs and labels disagree on the number of examples: {len(self.inputs)} vs {len(self.labels)}"
            )
        if not np.isin(self.labels, (0, 1)).all():
            raise ValueError("labels must be multi-hot (only 0 and 1)")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"inputs": self.inputs[index], "labels": self.labels[index]}

    def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Many examples at once (one gather per array), stacked along a new first axis."""
        return {"inputs": self.inputs[indices], "labels": self.labels[indices]}


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
    name: str
    class_names: tuple[str, ...]
    class_counts: np.ndarray  # n_c: number of training examples containing class c, shape [C]
    num_train: int  # N: number of training examples
    groups: ClassGroups
    input_shape: tuple[int, ...]  # shape of one example's inputs
    input_kind: str = "features"  # "features" | "image" | "text"
    info: dict = dataclasses.field(default_factory=dict)  # provenance, split rule, ...
    input_dtype: str = "float32"  # dtype of a transformed example's inputs ("int32" for token ids)
    vocab_size: int = 0  # text datasets: number of token ids (0 = not text)
    # images: whether a horizontal flip keeps an image's labels true (False for mirrored glyphs, text, ...);
    # when False no pipeline flips it, whatever data.flip_prob says
    hflip_preserves_labels: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "class_counts": [int(c) for c in self.class_counts],
            "num_train": int(self.num_train),
            "groups": self.groups.to_dict(),
            "input_shape": list(self.input_shape),
            "input_kind": self.input_kind,
            "input_dtype": self.input_dtype,
            "vocab_size": int(self.vocab_size),
            "hflip_preserves_labels": bool(self.hflip_preserves_labels),
            "info": self.info,
        }


@dataclasses.dataclass(frozen=True)
class Dataset:
    meta: DatasetMeta
    splits: dict[str, Split]  # at least "train" and "test"
    # Per-example transforms applied by the pipeline (e.g. decode + resize + augment images):
    # train_transform(example, rng: np.random.Generator) -> example, with rng seeded from
    # (config.seed, stream position); eval_transform(example) -> example, deterministic.
    train_transform: Callable[[dict, np.random.Generator], dict] | None = None
    eval_transform: Callable[[dict], dict] | None = None

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise KeyError(f"dataset {self.meta.name!r} has no split {name!r}; splits: {', '.join(self.splits)}")
        return self.splits[name]


# A builder takes the dataset config (an ml_collections.ConfigDict: config.data) and returns a Dataset.
DATASETS: Registry[Callable[[Any], Dataset]] = Registry("dataset")


def groups_from_config(counts: np.ndarray, groups_cfg) -> ClassGroups:
    """Class groups from ``config.data.groups`` (mode, head_min, tail_max, quantiles)."""
    return class_groups(
        counts,
        mode=groups_cfg.mode,
        head_min=groups_cfg.head_min,
        tail_max=groups_cfg.tail_max,
        quantiles=tuple(groups_cfg.quantiles),
    )


def make_meta(name, class_names, train_labels, groups_cfg, input_shape, input_kind="features", info=None):
    """Metadata computed from the training label matrix (n_c, N, groups)."""
    counts = np.asarray(train_labels).sum(axis=0).astype(np.int64)
    return DatasetMeta(
        name=name,
        class_names=tuple(class_names),
        class_counts=counts,
        num_train=int(len(train_labels)),
        groups=groups_from_config(counts, groups_cfg),
        input_shape=tuple(input_shape),
        input_kind=input_kind,
        info=dict(info or {}),
    )
