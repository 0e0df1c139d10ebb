"""Partial labels on a long tail (COMIC's PLT setting): hide a seeded fraction of the training positives.

``data.missing_ratio`` = r > 0 hides ``round(r * P)`` of the P positive (example, class) pairs of the
**training split only**; a hidden positive reads as 0 (unlabeled), as in COMIC's PLT-VOC / PLT-COCO.
The validation and test splits keep every label.  Which pairs are hidden depends only on the training
label matrix, r, ``data.missing_seed`` and ``data.missing_min_observed`` -- not on ``config.seed``, the
method or the model -- so every method of a comparison sees the same partial labels.

Drawing: the positive pairs are visited in one seeded random order and hidden in that order until the
quota is reached, skipping a pair only when hiding it would leave its class with fewer than
``data.missing_min_observed`` (default 1) observed positives.  With 0 the hidden set is a uniform sample
without replacement of exactly ``round(r * P)`` pairs; with the default 1 no class vanishes from the
training labels (a class without an observed positive has n_c = 0, which breaks every n_c-based loss:
class-balanced weights, DB's log(N / n_c - 1), MFM's log n_c, the reverse sampler), and a pair is skipped
only in classes with very few positives.  A quota that cannot be met under that floor is an error.

The dataset the pipeline sees (``apply_missing_labels``) has

* a training split whose ``labels`` / examples hold the observed labels and whose examples also carry
  ``"hidden"`` [C] (1 where a positive was hidden), so a method can count true and false label recalls
  (``hidden_mask`` / ``hidden_pairs`` / ``full_labels`` on the split);
* metadata recomputed from the **observed** labels: n_c, and therefore the head / medium / tail groups, as
  COMIC's PLT tables define them; ``meta.info["partial_labels"]`` records r, the seed, the counts and
  that rule, and the evaluation report repeats it.

``write_hidden(workdir, dataset)`` stores the hidden pairs with the run (``hidden_labels.npz``).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from ltjax.errors import ConfigError

HIDDEN_FILE = "hidden_labels.npz"
GROUP_RULE = ("n_c and the head / medium / tail groups are counted on the observed (partial) training labels, "
              "as in COMIC's PLT tables")


def hide_positives(labels: np.ndarray, ratio: float, seed: int, min_observed: int = 1) -> np.ndarray:
    """The hidden (example, class) pairs [K, 2] (module docstring), sorted by example then class."""
    labels = np.asarray(labels)
    if not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"data.missing_ratio must lie in [0, 1) (the fraction of training positives hidden), got {ratio}")
    if int(min_observed) < 0:
        raise ConfigError(f"data.missing_min_observed must be >= 0, got {min_observed}")
    pairs = np.argwhere(labels > 0)  # row-major: sorted by example, then class
    quota = int(round(float(ratio) * len(pairs)))
    if quota == 0:
        return np.zeros((0, 2), np.int64)
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x4D15]).permutation(len(pairs))
    if int(min_observed) == 0:
        chosen = order[:quota]
    else:
        left = labels.astype(bool).sum(axis=0).astype(np.int64)
        classes = pairs[order, 1]
        chosen = []
        for idx, c in zip(order, classes):
            if left[c] > min_observed:
                left[c] -= 1
                chosen.append(idx)
                if len(chosen) == quota:
                    break
        if len(chosen) < quota:
            raise ConfigError(
                f"data.missing_ratio={ratio} asks to hide {quota} of {len(pairs)} training positives, but only "
                f"{len(chosen)} can be hidden while every class keeps data.missing_min_observed={min_observed} "
                "observed positive(s); lower the ratio or set data.missing_min_observed=0")
        chosen = np.asarray(chosen)
    return pairs[np.sort(chosen)]


class PartialLabelSplit:
    """A training split with some positives hidden: examples carry the observed ``labels`` and ``hidden``.

    Every other attribute is the wrapped split's (patients, paths, ...)."""

    def __init__(self, base, hidden_pairs: np.ndarray):
        self._base = base
        full = np.asarray(base.labels)
        self.full_labels = full
        self.hidden_pairs = np.asarray(hidden_pairs, np.int64).reshape(-1, 2)
        mask = np.zeros(full.shape, np.float32)
        mask[self.hidden_pairs[:, 0], self.hidden_pairs[:, 1]] = 1.0
        self.hidden_mask = mask
        observed = full.astype(np.float32).copy()
        observed[mask > 0] = 0.0
        self.labels = observed.astype(full.dtype)

    def __len__(self) -> int:
        return len(self._base)

    def __getitem__(self, index: int) -> dict:
        example = dict(self._base[index])
        i = int(index)
        example["labels"] = self.labels[i]
        example["hidden"] = self.hidden_mask[i]
        return example

    def __getattr__(self, name: str) -> Any:  # only called for attributes not set above
        if name.startswith("__") or name == "_base":  # (unpickling: _base is not set yet)
            raise AttributeError(name)
        if name == "get_batch" and not hasattr(self._base, "get_batch"):
            raise AttributeError(name)
        if name == "get_batch":
            return self._get_batch
        return getattr(self._base, name)

    def _get_batch(self, indices: np.ndarray) -> dict:
        out = dict(self._base.get_batch(indices))
        out["labels"] = self.labels[indices]
        out["hidden"] = self.hidden_mask[indices]
        return out


def apply_missing_labels(dataset, data_cfg):
    """``dataset`` with ``data.missing_ratio`` of its training positives hidden (module docstring); the
    dataset itself when the ratio is 0."""
    ratio = float(data_cfg.get("missing_ratio", 0.0))
    if ratio == 0.0:
        return dataset
    from ltjax.data.base import groups_from_config

    seed = int(data_cfg.get("missing_seed", 0))
    floor = int(data_cfg.get("missing_min_observed", 1))
    train = dataset.split("train")
    pairs = hide_positives(train.labels, ratio, seed, floor)
    split = PartialLabelSplit(train, pairs)
    counts = split.labels.astype(bool).sum(axis=0).astype(np.int64)
    full_counts = np.asarray(train.labels).astype(bool).sum(axis=0)
    info = dict(dataset.meta.info)
    info["partial_labels"] = {
        "missing_ratio": ratio, "missing_seed": seed, "min_observed": floor,
        "positives": int(full_counts.sum()), "hidden": int(len(pairs)),
        "examples_without_observed_label": int(((split.labels > 0).sum(axis=1) == 0).sum()
                                               - ((np.asarray(train.labels) > 0).sum(axis=1) == 0).sum()),
        "groups": GROUP_RULE, "hidden_file": HIDDEN_FILE,
    }
    meta = dataclasses.replace(dataset.meta, class_counts=counts,
                               groups=groups_from_config(counts, data_cfg.groups), info=info)
    return dataclasses.replace(dataset, meta=meta, splits={**dataset.splits, "train": split})


def hidden_split(dataset) -> PartialLabelSplit | None:
    split = dataset.splits.get("train")
    return split if isinstance(split, PartialLabelSplit) else None


def write_hidden(workdir: str, dataset) -> str | None:
    """Store the run's hidden pairs (``hidden_labels.npz``: ``example``, ``class``, ``missing_ratio``,
    ``missing_seed``; atomically); ``None`` when the dataset has no hidden labels."""
    split = hidden_split(dataset)
    if split is None:
        return None
    info = dataset.meta.info["partial_labels"]
    path = os.path.join(workdir, HIDDEN_FILE)
    tmp = path + ".tmp.npz"
    np.savez(tmp, example=split.hidden_pairs[:, 0], **{"class": split.hidden_pairs[:, 1]},
             missing_ratio=np.float64(info["missing_ratio"]), missing_seed=np.int64(info["missing_seed"]),
             info=np.asarray(json.dumps(info)))
    os.replace(tmp, path)
    return path


def read_hidden(path: str) -> np.ndarray:
    """The [K, 2] (example, class) pairs of a run's ``hidden_labels.npz`` (or of its workdir)."""
    if os.path.isdir(path):
        path = os.path.join(path, HIDDEN_FILE)
    with np.load(path) as z:
        return np.stack([z["example"], z["class"]], axis=1)
