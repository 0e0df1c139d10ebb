"""Seeded multi-label stratified splits, and the validation split every dataset can carve from its training
data (``data.val_from_train``).

:func:`stratified_split` runs iterative stratification (Sechidis, Tsoumakas and Vlahavas, ECML 2011) through
the maintained ``iterative-stratification`` package (``MultilabelStratifiedShuffleSplit``), on *units*: an
example, or with ``groups`` a whole group (a patient) whose label vector is the union of its examples', so
no group spans both parts.  Iterative stratification distributes each label's units in proportion but, for a
label with only a few units, a small part can still end up without one; a repair pass then moves, for each
label with at least 2 units that one part lacks, the unit of that label carrying the fewest other labels
(ties: a seeded order) to that part, repeated until no label lacks a side (or nothing can move without
emptying another label's side).  So every class with at least 2 units has at least one on each side.

:func:`stratified_partition` makes several parts by successive cuts (test from everything, then val from
the rest, ...); it is the default test / val splitter of ``medical.py`` (ChestX-ray14's patient-level split
and its official split's val carve-out, ODIR-5K) and ``custom.py``, and an option of ``reports.py``
(``data.split_method``): each cut leaves every class with at least 2 units in its pool on both sides.

:func:`carve_validation` applies it to a built dataset: with ``data.val_from_train`` = f > 0 and no ``val``
split, the training split becomes (train minus val, val) with a fraction f of the training units in val,
seeded by ``data.val_seed``; n_c, N and the head / medium / tail groups are recomputed from the remaining
training labels, and ``meta.info["validation"]`` records the rule.  The groups come from the training
split's ``groups`` (patients where a dataset knows them: ``custom`` with ``data.group_column``, the report
datasets, ChestX-ray14 and ODIR-5K).  A text dataset's vocabulary was built from the whole training split
before the carve (document words only, never labels).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ltjax.errors import ConfigError


def stratified_split(labels, fraction: float, seed: int, groups: Sequence[Any] | None = None, *,
                     field: str = "data.val_from_train"):
    """``(train rows, val rows)`` (sorted int64 indices) with about ``fraction`` of the units in val.
    ``field`` names the setting in error messages."""
    y = np.asarray(labels) > 0
    n = len(y)
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{field} must lie strictly between 0 and 1, got {fraction}")
    if groups is None:
        unit_of_row = np.arange(n)
        units = y
    else:
        keys, unit_of_row = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        units = np.zeros((len(keys), y.shape[1]), bool)
        np.logical_or.at(units, unit_of_row, y)
    n_units = len(units)
    if n_units < 2:
        raise ConfigError(f"{n_units} unit(s) (examples or groups): too few to split in two by {field}; "
                          f"lower {field} or provide more data")
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=float(fraction), random_state=int(seed))
    in_val = np.zeros(n_units, bool)
    target = units.astype(int)
    if target.shape[1] < 2:  # the package wants a multilabel indicator: >= 2 columns (a zero column is inert)
        target = np.concatenate([target, np.zeros((n_units, 2 - target.shape[1]), int)], axis=1)
    _, val_units = next(splitter.split(np.zeros((n_units, 1)), target))
    in_val[val_units] = True
    _repair(units, in_val, np.random.default_rng(int(seed)).permutation(n_units))
    rows_val = in_val[unit_of_row]
    return np.flatnonzero(~rows_val).astype(np.int64), np.flatnonzero(rows_val).astype(np.int64)


def name_matrix(name_lists) -> np.ndarray:
    """[N, K] float32 multi-hot of each row's label names over the sorted distinct names (K >= 1), for
    splitting rows whose class list is not decided yet."""
    names = sorted({n for row in name_lists for n in row})
    col = {n: j for j, n in enumerate(names)}
    y = np.zeros((len(name_lists), max(1, len(names))), np.float32)
    for i, row in enumerate(name_lists):
        for n in row:
            y[i, col[n]] = 1.0
    return y


def stratified_partition(labels, fractions: Sequence[tuple[str, float]], rest: str, seed: int,
                         groups: Sequence[Any] | None = None, *, field: str = "data.split_fractions"
                         ) -> dict[str, np.ndarray]:
    """Row indices (sorted int64) per split: each ``(name, fraction)`` in turn takes about ``fraction`` of ALL
    the units by :func:`stratified_split` of the units not yet assigned (so every class with >= 2 units left
    lands on both sides of each cut); ``rest`` gets the units left.  A fraction of 0 gives an empty split.
    With ``groups`` the result depends on the labels, the groups and ``seed``, not on the order of the rows
    (the groups are taken in sorted id order); without, the units are the rows in their order."""
    y = np.asarray(labels) > 0
    n = len(y)
    if groups is None:
        unit_key = None
    else:
        unit_key = np.asarray([str(g) for g in groups])
    pool = np.arange(n)
    left = 1.0
    out: dict[str, np.ndarray] = {}
    for k, (name, fraction) in enumerate(fractions):
        fraction = float(fraction)
        if fraction <= 0.0:
            out[name] = np.zeros(0, np.int64)
            continue
        share = fraction / left
        if not 0.0 < share < 1.0:
            raise ConfigError(f"{field}: the fractions must sum to less than 1, got {[f for _, f in fractions]}")
        keep, take = stratified_split(y[pool], share, int(seed) + k,
                                      None if unit_key is None else unit_key[pool], field=field)
        out[name] = np.sort(pool[take]).astype(np.int64)
        _warn_if_off(name, fraction, pool[take], n, unit_key, field)
        pool = pool[keep]
        left -= fraction
    out[rest] = np.sort(pool).astype(np.int64)
    return out


def _warn_if_off(name: str, fraction: float, rows: np.ndarray, n: int, unit_key, field: str) -> None:
    """A warning when placing every class on both sides moved a part far from its fraction (small data)."""
    if unit_key is None:
        got, total = len(rows), n
    else:
        got, total = len(set(unit_key[rows].tolist())), len(set(unit_key.tolist()))
    want = fraction * total
    if abs(got - want) > max(2.0, 0.25 * want):
        import warnings

        unit = "groups" if unit_key is not None else "examples"
        warnings.warn(
            f"the stratified {name} split holds {got} of {total} {unit} ({got / total:.0%}) for {field} "
            f"{fraction:g}: putting every class with >= 2 {unit} on both sides needed that many on this small or "
            "sparse dataset; the label-blind split option of data.split_method meets the fraction exactly",
            stacklevel=3)


def _repair(units: np.ndarray, in_val: np.ndarray, order: np.ndarray, max_rounds: int = 100) -> None:
    """Move units so that every label with >= 2 units has one on each side (module docstring)."""
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    n_labels = units.sum(axis=1)
    for _ in range(max_rounds):
        moved = False
        for c in np.flatnonzero(units.sum(axis=0) >= 2):
            members = np.flatnonzero(units[:, c])
            for side in (True, False):  # val lacks c, then train lacks c
                if np.any(in_val[members] == side):
                    continue
                counts_other = units[in_val != side].sum(axis=0)  # the side the unit would leave

                def safe(u):  # leaving keeps every label of u on its old side (where it has >= 2 there)
                    return all(counts_other[k] >= 2 for k in np.flatnonzero(units[u]) if units[:, k].sum() >= 2)

                candidates = sorted(members, key=lambda u: (not safe(u), n_labels[u], rank[u]))
                in_val[candidates[0]] = side
                moved = True
        if not moved:
            return


class SubsetSplit:
    """Rows ``index`` of a split (a view: ``split[i]`` is ``base[index[i]]``), with its labels and, where the
    base has them, its groups and batch reads."""

    def __init__(self, base, index: np.ndarray):
        self._base = base
        self.index = np.asarray(index, np.int64)
        self.labels = np.asarray(base.labels)[self.index]
        groups = getattr(base, "groups", None)
        self.groups = None if groups is None else tuple(groups[i] for i in self.index)
        if hasattr(base, "inputs"):
            self.inputs = np.asarray(base.inputs)[self.index]
        if hasattr(base, "items"):
            self.items = tuple(base.items[i] for i in self.index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        return self._base[int(self.index[int(i)])]

    def __getattr__(self, name: str):
        if name == "get_batch" and hasattr(self.__dict__.get("_base"), "get_batch"):
            return lambda idx: self._base.get_batch(self.index[np.asarray(idx)])
        raise AttributeError(name)


def carve_validation(dataset, data_cfg):
    """``dataset`` with a stratified validation split carved from its training split (module docstring);
    the dataset itself when ``data.val_from_train`` is 0."""
    fraction = float(data_cfg.get("val_from_train", 0.0))
    if fraction == 0.0:
        return dataset
    if "val" in dataset.splits:
        raise ConfigError(
            f"dataset {dataset.meta.name!r} already has a 'val' split ({len(dataset.splits['val'])} examples); "
            "data.val_from_train only carves one for a dataset without: set it to 0 (or drop the dataset's own "
            "val split, e.g. data.val_fraction=0 / data.num_val=0)")
    from ltjax.data.base import groups_from_config

    seed = int(data_cfg.get("val_seed", 0))
    train = dataset.split("train")
    groups = getattr(train, "groups", None)
    rows_train, rows_val = stratified_split(train.labels, fraction, seed, groups)
    new_train, val = SubsetSplit(train, rows_train), SubsetSplit(train, rows_val)
    counts = (new_train.labels > 0).sum(axis=0).astype(np.int64)
    info = dict(dataset.meta.info)
    info["validation"] = {
        "rule": "iterative stratification (iterative-stratification package) of the training "
                f"{'groups' if groups is not None else 'examples'}, every class with >= 2 of them on both sides",
        "val_from_train": fraction, "val_seed": seed, "train": int(len(rows_train)), "val": int(len(rows_val)),
        "group_aware": groups is not None,
    }
    sizes = dict(info.get("sizes", {}))
    if sizes:
        sizes.update(train=int(len(rows_train)), val=int(len(rows_val)))
        info["sizes"] = sizes
    meta = dataclasses.replace(dataset.meta, class_counts=counts, num_train=int(len(rows_train)),
                               groups=groups_from_config(counts, data_cfg.groups), info=info)
    return dataclasses.replace(dataset, meta=meta, splits={**dataset.splits, "train": new_train, "val": val})
