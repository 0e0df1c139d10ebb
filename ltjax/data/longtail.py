"""Long-tailed subsets of a multi-label dataset: the DB-loss construction (REFERENCE section 1).

``make_longtail_subset(labels, max_count, min_count=1, pareto_shape=6, seed=0)`` picks a subset of the
rows of a [N, C] label matrix whose per-class counts follow a Pareto profile:

1. targets: the Pareto pdf with shape b (pdf(x) = b / x^(b+1), x >= 1) at C points
   linspace(ppf(0), ppf(0.99)) = linspace(1, 100^(1/b)), scaled as pdf * (max - min) / b + min and
   truncated to int (so the first target is ``max_count``), assigned to the classes in visiting order;
2. visiting order: classes by descending sum_{j != i} P(i | j), the co-occurrence conditional
   probabilities P(i | j) = #(i and j) / #j of the full matrix (classes that co-occur with many
   others come first, while the subset is still free to grow);
3. for each class in turn, random rows are added (from rows having the class, not yet selected) or
   removed (from selected rows having the class) until the class's count in the subset equals its
   target, or no candidate is left.

The original lists were made with Python's ``random``; this uses numpy's Generator, so the same
seed does not give the same list, only the same construction.
"""
from __future__ import annotations

import numpy as np


def pareto_targets(num_classes: int, max_count: int, min_count: int = 1, pareto_shape: float = 6.0) -> np.ndarray:
    """Target counts [C] (int64, non-increasing) of step 1."""
    if num_classes < 1 or max_count < min_count or min_count < 0:
        raise ValueError(
            f"need num_classes >= 1 and 0 <= min_count <= max_count, got {num_classes}, {min_count}, {max_count}"
        )
    b = float(pareto_shape)
    x = np.linspace(1.0, 100.0 ** (1.0 / b), num_classes)
    pdf = b / x ** (b + 1.0)
    return (pdf * (max_count - min_count) / b + min_count).astype(np.int64)


def cooccurrence_order(labels: np.ndarray) -> np.ndarray:
    """Classes by descending sum_{j != i} P(i | j) (step 2); ties by class index."""
    y = (np.asarray(labels) > 0).astype(np.float64)
    joint = y.T @ y  # [C, C] counts of (i and j)
    counts = np.diag(joint).copy()
    cond = np.divide(joint, counts[None, :], out=np.zeros_like(joint), where=counts[None, :] > 0)  # P(i | j)
    np.fill_diagonal(cond, 0.0)
    score = cond.sum(axis=1)
    return np.lexsort((np.arange(len(score)), -score))


def make_longtail_subset(labels, max_count: int, min_count: int = 1, pareto_shape: float = 6.0, seed: int = 0):
    """Row indices (sorted) of a long-tailed subset of ``labels`` [N, C] (see the module docstring).

    Returns ``(indices, targets)`` with ``targets[c]`` the target count of class c.
    """
    y = np.asarray(labels) > 0
    if y.ndim != 2 or y.shape[0] == 0:
        raise ValueError(f"labels must be a non-empty [N, C] multi-hot matrix, got shape {np.shape(labels)}")
    rng = np.random.default_rng(seed)
    order = cooccurrence_order(y)
    targets = np.zeros(y.shape[1], np.int64)
    targets[order] = pareto_targets(y.shape[1], max_count, min_count, pareto_shape)
    selected = np.zeros(y.shape[0], bool)
    for c in order:
        have = y[:, c]
        current = int((selected & have).sum())
        if current < targets[c]:
            pool = np.flatnonzero(have & ~selected)
            take = rng.permutation(pool)[: targets[c] - current]
            selected[take] = True
        elif current > targets[c]:
            pool = np.flatnonzero(have & selected)
            drop = rng.permutation(pool)[: current - targets[c]]
            selected[drop] = False
    return np.flatnonzero(selected), targets
