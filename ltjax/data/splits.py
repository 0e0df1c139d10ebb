"""The one seeded group-level splitter that every dataset without an official split uses.

A split assigns whole *units* (a patient, a report owner, one manifest row or one manifest group) so
that no unit spans two splits:

1. the units are put in a seeded order: ``"hash"`` sorts them by sha256("<seed>:<unit id>") (independent
   of the input order and of the other units; ``medical.py``, ``reports.py``) or ``"permutation"`` takes
   them in ``numpy.random.default_rng(seed).permutation`` order of first appearance (``custom.py``);
2. consecutive runs of that order fill the splits one after another, each until it holds its quota
   (counted in units or in rows); the units left over form the last split.

``group_split`` does both and returns each split's row indices in increasing order.
"""
from __future__ import annotations

import hashlib
from typing import Hashable, Sequence

import numpy as np

ORDERS = ("hash", "permutation")


def hashed_order(units, seed: int) -> list[str]:
    """The distinct unit ids (as text) ordered by sha256("<seed>:<id>") (ties, never seen, by id)."""
    unique = sorted(set(str(u) for u in units))
    return sorted(unique, key=lambda u: (hashlib.sha256(f"{int(seed)}:{u}".encode()).digest(), u))


def group_split(unit_of_row: Sequence[Hashable], quotas: Sequence[tuple[str, int]], rest: str, seed: int, *,
                order: str = "hash", count: str = "units") -> dict[str, np.ndarray]:
    """Row indices per split (increasing).  ``quotas``: ``(split name, quota)`` filled in turn along the
    seeded unit order, a split being full once it holds at least ``quota`` units (``count="units"``) or
    rows (``count="rows"``); ``rest`` gets every unit left.  A quota of 0 gives an empty split."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if count not in ("units", "rows"):
        raise ValueError(f"count must be 'units' or 'rows', got {count!r}")
    rows_of: dict = {}
    for i, u in enumerate(unit_of_row):
        rows_of.setdefault(str(u) if order == "hash" else u, []).append(i)
    keys = list(rows_of)
    if order == "hash":
        ordered = hashed_order(keys, seed)
    else:
        ordered = [keys[k] for k in np.random.default_rng(int(seed)).permutation(len(keys))]
    out, pos = {}, 0
    for name, quota in quotas:
        taken, held = [], 0
        while pos < len(ordered) and held < quota:
            rows = rows_of[ordered[pos]]
            taken += rows
            held += 1 if count == "units" else len(rows)
            pos += 1
        out[name] = np.asarray(sorted(taken), np.int64)
    out[rest] = np.asarray(sorted(i for u in ordered[pos:] for i in rows_of[u]), np.int64)
    return out
