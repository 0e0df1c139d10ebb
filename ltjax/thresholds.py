"""Decision thresholds tuned on a validation split (``eval.thresholds``), saved with the run.

* ``"fixed"`` (default): ``eval.threshold`` for every class (0.5 on probabilities).
* ``"val_f1"``: per class, the threshold that maximises that class's F1 on the validation split (predict
  positive when score >= t; t is one of the class's validation scores; among equal F1 the larger t, fewer
  false alarms).  A class without a positive in the validation split keeps ``eval.threshold``.
* ``"val_f1_global"``: one threshold for all classes, the one (among the validation scores) that maximises
  the macro-F1 over the classes with a validation positive.

The evaluation tunes them on the validation split with the weights it reports, writes
``WORKDIR/thresholds.json`` and uses them for F1, mACC and the ODIR scores on ``eval.split``;
``ltjax.predict`` applies them.  The test split is never used to choose them.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ltjax.errors import ConfigError

MODES = ("fixed", "val_f1", "val_f1_global")
FILE = "thresholds.json"


def check_mode(mode: str, splits) -> str:
    mode = str(mode)
    if mode not in MODES:
        raise ConfigError(f"eval.thresholds = {mode!r} is not valid; choose one of: {', '.join(MODES)}")
    if mode != "fixed" and "val" not in splits:
        raise ConfigError(
            f"eval.thresholds = {mode!r} tunes the thresholds on a validation split, and this dataset has none "
            "(splits: " + ", ".join(splits) + "); carve one with --config.data.val_from_train=0.1")
    return mode


def _best_f1_cut(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(best F1, its threshold) of one class over the thresholds t in its scores (positive: score >= t)."""
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order].astype(np.int64)
    last = np.r_[s[1:] != s[:-1], True]  # the last position of each run of tied scores
    tp = np.cumsum(y)[last]
    npred = (np.arange(1, len(s) + 1))[last]
    f1 = 2 * tp / (npred + y.sum())
    best = int(np.flatnonzero(f1 == f1.max())[0])  # scores descend: the first best has the larger threshold
    return float(f1[best]), float(s[last][best])


def tune(scores, labels, mode: str, default: float) -> np.ndarray:
    """Per-class thresholds [C] for ``mode`` from validation ``scores`` / ``labels``."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels) > 0
    c = s.shape[1]
    out = np.full(c, float(default))
    if mode == "fixed":
        return out
    has_pos = y.any(axis=0)
    if mode == "val_f1":
        for k in np.flatnonzero(has_pos):
            out[k] = _best_f1_cut(s[:, k], y[:, k])[1]
        return out
    # one threshold for every class: the macro-F1 (classes with a validation positive) at each candidate
    candidates = np.unique(s)
    if len(candidates) > 512:  # quantiles of the scores: the optimum is flat at this resolution
        candidates = np.unique(np.quantile(s, np.linspace(0, 1, 512)))
    yk = y[:, has_pos]
    sk = s[:, has_pos]
    best_f1, best_t = -1.0, float(default)
    for t in candidates[::-1]:
        pred = sk >= t
        tp = (pred & yk).sum(axis=0)
        f1 = 2 * tp / (pred.sum(axis=0) + yk.sum(axis=0))
        if f1.mean() > best_f1:
            best_f1, best_t = float(f1.mean()), float(t)
    out[:] = best_t
    return out


def save(workdir: str, thresholds: np.ndarray, mode: str, class_names, step: int) -> str:
    path = os.path.join(workdir, FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"mode": mode, "split": "val", "step": int(step), "class_names": list(class_names),
                   "thresholds": [float(t) for t in thresholds]}, f, indent=1)
    os.replace(tmp, path)
    return path


def load(workdir: str, class_names) -> np.ndarray | None:
    """The run's tuned thresholds, or None when it has none (``eval.thresholds = "fixed"``)."""
    path = os.path.join(workdir, FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rec = json.load(f)
    if list(rec["class_names"]) != list(class_names):
        raise ConfigError(f"{path} was tuned for other classes than this run's; delete it and re-evaluate")
    return np.asarray(rec["thresholds"], np.float64)
