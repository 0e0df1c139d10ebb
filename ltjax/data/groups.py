"""Head / medium / tail class groups from per-class training counts n_c (REFERENCE section 1)."""
from __future__ import annotations

import dataclasses

import numpy as np

GROUP_NAMES = ("head", "medium", "tail")


@dataclasses.dataclass(frozen=True)
class ClassGroups:
    """A partition of the classes into named groups (by default head, medium, tail).

    ``indices[g]`` holds the sorted class indices of group ``names[g]``; a group may be empty.
    """

    names: tuple[str, ...]
    indices: tuple[np.ndarray, ...]
    num_classes: int
    rule: str  # a human-readable statement of how the groups were formed

    def __post_init__(self):
        if len(self.names) != len(self.indices):
            raise ValueError("ClassGroups: one index array per group name is required")
        seen = np.concatenate([np.asarray(i, dtype=np.int64) for i in self.indices]) if self.indices else np.zeros(0)
        if sorted(seen.tolist()) != list(range(self.num_classes)):
            raise ValueError("ClassGroups: the groups must partition the classes 0..C-1 exactly once")

    def __getitem__(self, name: str) -> np.ndarray:
        return self.indices[self.names.index(name)]

    def assignment(self) -> np.ndarray:
        """Group id of every class, shape [C]."""
        out = np.empty(self.num_classes, dtype=np.int32)
        for g, idx in enumerate(self.indices):
            out[idx] = g
        return out

    def sizes(self) -> dict[str, int]:
        return {n: int(len(i)) for n, i in zip(self.names, self.indices)}

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "groups": {n: [int(c) for c in i] for n, i in zip(self.names, self.indices)},
        }


def class_groups(
    counts,
    mode: str = "threshold",
    head_min: float = 100,
    tail_max: float = 20,
    quantiles: tuple[float, float] = (1 / 3, 2 / 3),
) -> ClassGroups:
    """Split classes into head / medium / tail by their training counts n_c.

    mode="threshold" (the DB-loss protocol): head n_c >= head_min, medium tail_max <= n_c < head_min,
    tail n_c < tail_max.  mode="quantile" (for datasets of other scales): classes sorted by n_c (ties
    broken by class index) and cut at the given fractions of the class list: the rarest
    ``quantiles[0]`` fraction is tail, the most frequent ``1 - quantiles[1]`` fraction is head.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"class counts must be a non-empty 1-D array, got shape {counts.shape}")
    if np.any(counts < 0):
        raise ValueError("class counts must be non-negative")
    num_classes = counts.shape[0]
    if mode == "threshold":
        if not tail_max <= head_min:
            raise ValueError(f"groups: need tail_max <= head_min, got tail_max={tail_max}, head_min={head_min}")
        head = np.flatnonzero(counts >= head_min)
        tail = np.flatnonzero(counts < tail_max)
        medium = np.flatnonzero((counts >= tail_max) & (counts < head_min))
        rule = f"head n_c >= {head_min:g}, medium {tail_max:g} <= n_c < {head_min:g}, tail n_c < {tail_max:g}"
    elif mode == "quantile":
        lo, hi = (float(q) for q in quantiles)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"groups: quantiles must satisfy 0 <= q_tail <= q_head <= 1, got {quantiles}")
        order = np.lexsort((np.arange(num_classes), counts))  # ascending n_c, ties by index
        n_tail = int(round(lo * num_classes))
        n_rest = int(round(hi * num_classes))
        tail = np.sort(order[:n_tail])
        medium = np.sort(order[n_tail:n_rest])
        head = np.sort(order[n_rest:])
        rule = f"quantile: rarest {lo:.3g} of classes tail, most frequent {1 - hi:.3g} head"
    else:
        raise ValueError(f"groups: unknown mode {mode!r}; valid modes: 'threshold', 'quantile'")
    return ClassGroups(GROUP_NAMES, (head, medium, tail), num_classes, rule)
