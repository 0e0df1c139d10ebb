"""The Mulan yeast data set (2,417 genes x 103 features, 14 functional classes), read from a pinned wheel.

The file ``river/datasets/yeast.csv.gz`` of ``river==0.26.1`` is obtained through :mod:`ltjax.assets`
(columns ``Att1..Att103`` then ``Class1..Class14``).  The data set is split here, reproducibly:
``numpy.random.default_rng(split_seed).permutation(2417)``; its first ``round(test_fraction * 2417)``
row indices form the test split, the rest the training split, each kept in file order.  The default
``test_fraction`` 917/2417 mirrors the sizes of Mulan's official 1,500 / 917 train/test split.
With ``standardize`` the features are z-scored with the TRAINING split's mean and standard deviation.

Dataset fields (``default_config()``) are read from ``config.data``; a field that is absent there takes
its default.
"""
from __future__ import annotations

import gzip

import ml_collections
import numpy as np

from ltjax import assets
from ltjax.data.base import DATASETS, ArraySplit, Dataset, make_meta

NAME = "yeast"
NUM_EXAMPLES = 2417
NUM_FEATURES = 103
NUM_CLASSES = 14
FEATURE_NAMES = tuple(f"Att{i}" for i in range(1, NUM_FEATURES + 1))
CLASS_NAMES = tuple(f"Class{i}" for i in range(1, NUM_CLASSES + 1))
OFFICIAL_TEST_SIZE = 917


def default_config() -> ml_collections.ConfigDict:
    """The yeast fields of ``config.data``."""
    c = ml_collections.ConfigDict()
    c.test_fraction = OFFICIAL_TEST_SIZE / NUM_EXAMPLES  # fraction of the 2,417 rows held out as test
    c.split_seed = 0  # seed of the numpy permutation that makes the split
    c.standardize = True  # z-score features with the training split's mean / std
    return c


def load_arrays(path=None) -> tuple[np.ndarray, np.ndarray]:
    """All 2,417 rows as ``(features float32 [N, 103], labels float32 [N, 14])``, in file order.

    ``path`` defaults to the file fetched by ``ltjax.assets.fetch("yeast")``.
    """
    path = assets.fetch(NAME) if path is None else path
    with gzip.open(path, "rt", encoding="utf-8") as f:
        header = f.readline().strip().split(",")
        expected = list(FEATURE_NAMES + CLASS_NAMES)
        if header != expected:
            raise ValueError(f"{path}: unexpected yeast columns; expected Att1..Att103, Class1..Class14, got {header}")
        table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape != (NUM_EXAMPLES, NUM_FEATURES + NUM_CLASSES):
        raise ValueError(f"{path}: expected a {NUM_EXAMPLES} x {NUM_FEATURES + NUM_CLASSES} table, got {table.shape}")
    features = table[:, :NUM_FEATURES].astype(np.float32)
    labels = table[:, NUM_FEATURES:].astype(np.float32)
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"{path}: the Class columns must hold only 0 and 1")
    return features, labels


def _field(data_cfg, defaults: ml_collections.ConfigDict, key: str):
    return data_cfg[key] if key in data_cfg else defaults[key]


def split_indices(num_examples: int, test_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, test_idx)``, each sorted: a ``default_rng(split_seed)`` permutation, test first."""
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"yeast: test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    num_test = int(round(float(test_fraction) * num_examples))
    if not 0 < num_test < num_examples:
        raise ValueError(
            f"yeast: test_fraction {test_fraction} leaves {num_test} of {num_examples} rows for test; "
            "choose a fraction that leaves rows in both splits"
        )
    perm = np.random.default_rng(int(split_seed)).permutation(num_examples)
    return np.sort(perm[num_test:]), np.sort(perm[:num_test])


def build(data_cfg) -> Dataset:
    """The yeast :class:`Dataset` with splits ``train`` and ``test`` (see the module docstring)."""
    defaults = default_config()
    test_fraction = float(_field(data_cfg, defaults, "test_fraction"))
    split_seed = int(_field(data_cfg, defaults, "split_seed"))
    standardize = bool(_field(data_cfg, defaults, "standardize"))

    features, labels = load_arrays()
    train_idx, test_idx = split_indices(len(labels), test_fraction, split_seed)
    x_train, y_train = features[train_idx], labels[train_idx]
    x_test, y_test = features[test_idx], labels[test_idx]
    for split, y in (("train", y_train), ("test", y_test)):
        missing = np.flatnonzero(y.sum(axis=0) == 0)
        if missing.size:
            names = ", ".join(CLASS_NAMES[c] for c in missing)
            raise ValueError(
                f"yeast: with split_seed={split_seed} and test_fraction={test_fraction:.4f} the {split} split has "
                f"no positive of {names}; choose another split_seed or test_fraction"
            )
    if standardize:
        mean = x_train.mean(axis=0, dtype=np.float64)
        std = x_train.std(axis=0, dtype=np.float64)
        std = np.where(std > 0, std, 1.0)  # a constant training feature is only centred
        x_train = ((x_train - mean) / std).astype(np.float32)
        x_test = ((x_test - mean) / std).astype(np.float32)

    asset = assets.ASSETS.get(NAME)
    info = {
        "source": f"Mulan yeast, file {asset.member} of {asset.requirement} (sha256 {asset.member_sha256})",
        "split_rule": (
            "numpy.random.default_rng(split_seed).permutation(N); the first round(test_fraction * N) indices "
            "are the test split, the rest the train split, each in file order"
        ),
        "split_seed": split_seed,
        "test_fraction": test_fraction,
        "standardize": "z-score with train mean/std" if standardize else "none",
        "sizes": {"train": int(len(train_idx)), "test": int(len(test_idx))},
    }
    meta = make_meta(
        NAME,
        CLASS_NAMES,
        y_train,
        data_cfg.groups,
        input_shape=(NUM_FEATURES,),
        input_kind="features",
        info=info,
    )
    return Dataset(meta=meta, splits={"train": ArraySplit(x_train, y_train), "test": ArraySplit(x_test, y_test)})


DATASETS.register(NAME)(build)
