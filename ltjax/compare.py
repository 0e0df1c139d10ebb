"""Comparing methods honestly: mean +- std over seeds, paired bootstrap confidence intervals of the mAP
difference against a baseline (overall and per head / medium / tail group), and per-class AP against training
frequency for every method on one figure.  ``scripts/compare.py`` is the command line.

The paired bootstrap resamples the *test examples* (with replacement, the same indices for every method and
seed in a replicate), recomputes each run's per-class AP on the resample, averages the mAP over a method's
seeds, and takes the method-minus-baseline difference; the interval is the percentile interval of those
differences.  It answers "would this gap survive another draw of the test set", which the seed spread (the
``std`` column) does not.  A class with no positive in a resample is left out of that replicate's means (as
the evaluation leaves out a class without test positives).  Written here rather than with
``scipy.stats.bootstrap``: scipy is not a dependency, and the statistic needs whole [N, C] score matrices of
several runs resampled jointly with per-replicate class exclusion; the resampling itself is one line.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Sequence

import numpy as np

from ltjax.errors import UserError

from ltjax.training.loop import SCORES_FILE  # noqa: E402 (the file every evaluation writes)


class CompareError(ValueError, UserError):
    """Runs that cannot be compared (no evaluation, other test sets); the message says which and why."""


@dataclasses.dataclass
class Run:
    path: str
    scores: np.ndarray  # [N, C] float32
    labels: np.ndarray  # [N, C] uint8
    report: dict  # eval.json


@dataclasses.dataclass
class Method:
    name: str
    runs: list[Run]


# ---- loading -----------------------------------------------------------------------------------------


def run_dirs(path: str) -> list[str]:
    """A run folder (it holds ``eval.json``) or a method folder of ``seed_*`` runs (scripts/run_table.py)."""
    if os.path.isfile(os.path.join(path, "eval.json")):
        return [path]
    seeds = sorted(d for d in os.listdir(path) if os.path.isfile(os.path.join(path, d, "eval.json"))) \
        if os.path.isdir(path) else []
    if not seeds:
        raise CompareError(f"{path} holds no evaluated run (no eval.json in it or in a sub-folder); "
                           "pass run folders or method folders of seed_* runs")
    return [os.path.join(path, d) for d in seeds]


def _scores_of(run: str) -> tuple[np.ndarray, np.ndarray]:
    """The evaluated split's scores and labels: ``scores.npz`` (written by every evaluation), else computed
    once from the run's checkpoint exactly as ``ltjax.evaluate`` does (and saved when the folder is writable)."""
    path = os.path.join(run, SCORES_FILE)
    if os.path.exists(path):
        with np.load(path) as z:
            return z["scores"], z["labels"]
    from ltjax.predict import load_run
    from ltjax.training.loop import _reported_weights, write_scores

    exp, state, step = load_run(run, use_snapshot=False)  # scores the test split: needs its examples
    cfg = exp.config
    weights, _, _ = _reported_weights(exp, state)
    scores, labels = exp.predict(weights, state.batch_stats, str(cfg.eval.split), state.method_state)
    if os.access(run, os.W_OK):
        write_scores(path, scores, labels, exp.meta.class_names, split=str(cfg.eval.split), step=step)
    return np.asarray(scores, np.float32), np.asarray(labels, np.uint8)


def load_method(path: str, name: str | None = None) -> Method:
    runs = []
    for d in run_dirs(path):
        with open(os.path.join(d, "eval.json")) as f:
            report = json.load(f)
        scores, labels = _scores_of(d)
        runs.append(Run(d, scores, labels, report))
    return Method(name or os.path.basename(os.path.normpath(path)), runs)


def check_same_test_set(methods: Sequence[Method]) -> None:
    ref = methods[0].runs[0]
    for m in methods:
        for r in m.runs:
            same = r.labels.shape == ref.labels.shape and np.array_equal(r.labels, ref.labels)
            if not same or r.report.get("dataset") != ref.report.get("dataset"):
                raise CompareError(
                    f"{r.path} was evaluated on another test set than {ref.path} "
                    f"({r.report.get('dataset')} {r.labels.shape} vs {ref.report.get('dataset')} {ref.labels.shape} "
                    "or other labels); compare runs of one dataset and split")


# ---- statistics --------------------------------------------------------------------------------------


def class_ap(scores, labels) -> np.ndarray:
    """Per-class AP (NaN for a class without positives), as the evaluation computes it."""
    from ltjax import metrics

    return np.asarray(metrics.average_precision(np.asarray(scores, np.float32), np.asarray(labels, np.int32)),
                      np.float64)


def groups_of(report: dict) -> dict[str, np.ndarray]:
    """``{"total": classes in the mAP, group: its classes in the mAP}`` from an eval.json (its own rule)."""
    per = report["per_class"]
    included = np.array([c["ap"] is not None and c.get("num_test_pos", 1) > 0 for c in per])
    out = {"total": np.flatnonzero(included)}
    for g in report["group_mAP"]:
        out[g] = np.flatnonzero(included & np.array([c["group"] == g for c in per]))
    return out


def _means(ap: np.ndarray, groups: dict[str, np.ndarray]) -> np.ndarray:
    """[..., G]: the nan-mean of ``ap`` [..., C] over each group's classes (NaN when none has a value)."""
    out = []
    for idx in groups.values():
        sub = ap[..., idx]
        n = np.sum(~np.isnan(sub), axis=-1)
        out.append(np.where(n > 0, np.nansum(sub, axis=-1) / np.maximum(n, 1), np.nan))
    return np.stack(out, axis=-1)


def resample_indices(n: int, reps: int, seed: int) -> np.ndarray:
    """[reps, n] example indices drawn with replacement (numpy's default generator seeded by ``seed``)."""
    return np.random.default_rng(seed).integers(0, n, size=(reps, n))


def method_means(method: Method, groups, counts: np.ndarray | None = None) -> np.ndarray:
    """[G] (``counts`` None: the full test set) or [reps, G] (``counts``: :func:`resample_counts`): the group
    means averaged over the method's seeds."""
    per_run = []
    for r in method.runs:
        if counts is None:
            per_run.append(_means(class_ap(r.scores, r.labels), groups))
        else:
            per_run.append(_means(resampled_ap(r.scores, r.labels, counts), groups))
    return np.mean(per_run, axis=0)


def resample_counts(idx: np.ndarray) -> np.ndarray:
    """[n, reps] float32: how often each example is drawn in each resample ``idx[k]`` (exact: counts <= n)."""
    reps, n = idx.shape
    counts = np.zeros((n, reps), np.float32)
    np.add.at(counts, (idx.reshape(-1), np.repeat(np.arange(reps), n)), 1.0)
    return counts


def resampled_ap(scores, labels, counts: np.ndarray) -> np.ndarray:
    """[reps, C] per-class AP of each resample, from its draw counts ``counts`` [n, reps]
    (:func:`resample_counts`).

    A resample repeats examples, and copies of one example share its score, so the resample's AP equals the
    count-weighted AP in the full test set's own score order (sklearn's step-wise AP, tied scores one
    threshold): each class is sorted once; the drawn examples and the drawn positives are summed per
    stretch of that order ending at a group of tied scores that holds a positive, and their running sums
    give precision and recall at those thresholds for every resample at once.  So the bootstrap costs one
    pass over the counts per class instead of a sort of every materialised resample (padchest_reports' 13k
    test reports, 100 resamples of 6 runs: ~3 s against ~100 s); it equals AP of the materialised resample
    (tests/test_compare.py)."""
    s = np.asarray(scores, np.float32)
    y = np.asarray(labels) > 0
    n, reps = counts.shape
    out = np.full((reps, s.shape[1]), np.nan)
    for c in range(s.shape[1]):
        if not y[:, c].any():
            continue
        col = s[:, c] + np.float32(0.0)  # -0.0 and +0.0: one score
        order = np.argsort(-col, kind="stable")
        sorted_scores, pos = col[order], y[order, c]
        group = np.cumsum(np.append(False, sorted_scores[1:] != sorted_scores[:-1]))  # tie group of each row
        pos_groups = np.unique(group[pos])  # the thresholds where recall can rise
        ends = np.searchsorted(group, pos_groups, side="right")  # one past each such group's last row
        starts = np.append(0, ends[:-1])
        rows = counts[order[:ends[-1]]]  # [rows up to the last positive group, reps]
        drawn = np.cumsum(np.add.reduceat(rows, starts, axis=0), axis=0, dtype=np.float64)
        pos_rows = np.flatnonzero(pos)
        tp_seg = np.zeros((len(pos_groups), reps))
        np.add.at(tp_seg, np.searchsorted(pos_groups, group[pos_rows]), counts[order[pos_rows]])
        tp = np.cumsum(tp_seg, axis=0)
        total = tp[-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = np.sum(tp_seg * tp / np.where(drawn > 0, drawn, 1.0), axis=0) / total
        out[:, c] = np.where(total > 0, ap, np.nan)
    return out


def paired_bootstrap(method: Method, baseline: Method, groups, *, reps: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """``{group: {"diff", "low", "high", "p_le_0"}}``: the observed difference of the seed-averaged group mAP
    (method minus baseline), its paired-bootstrap percentile interval at ``level``, and the fraction of
    replicates with a difference <= 0."""
    n = method.runs[0].labels.shape[0]
    counts = resample_counts(resample_indices(n, reps, seed))
    d = method_means(method, groups, counts) - method_means(baseline, groups, counts)
    observed = method_means(method, groups) - method_means(baseline, groups)
    alpha = (1.0 - level) / 2
    out = {}
    for j, g in enumerate(groups):
        col = d[:, j][~np.isnan(d[:, j])]
        if col.size == 0:
            out[g] = {"diff": None, "low": None, "high": None, "p_le_0": None}
            continue
        lo, hi = np.quantile(col, [alpha, 1 - alpha])
        out[g] = {"diff": float(observed[j]), "low": float(lo), "high": float(hi),
                  "p_le_0": float(np.mean(col <= 0))}
    return out


# ---- report -----------------------------------------------------------------------------------------


def seed_stats(method: Method, groups) -> dict[str, tuple[float, float]]:
    """``{group: (mean, sample std)}`` over the method's seeds of the per-run group mAP."""
    vals = np.stack([_means(class_ap(r.scores, r.labels), groups) for r in method.runs])
    std = vals.std(axis=0, ddof=1) if len(vals) > 1 else np.zeros(vals.shape[1])
    return {g: (float(vals[:, j].mean()), float(std[j])) for j, g in enumerate(groups)}


def compare(methods: Sequence[Method], baseline: str, *, reps: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    names = [m.name for m in methods]
    if baseline not in names:
        raise CompareError(f"--baseline {baseline!r} is not one of the methods: {', '.join(names)}")
    check_same_test_set(methods)
    base = methods[names.index(baseline)]
    groups = groups_of(base.runs[0].report)
    out = {"baseline": baseline, "groups": {g: len(v) for g, v in groups.items()}, "reps": reps, "seed": seed,
           "level": level, "num_examples": int(base.runs[0].labels.shape[0]), "methods": {}}
    for m in methods:
        row = {"seeds": len(m.runs), "runs": [r.path for r in m.runs], "map": seed_stats(m, groups)}
        if m is not base:
            row["vs_baseline"] = paired_bootstrap(m, base, groups, reps=reps, seed=seed, level=level)
        out["methods"][m.name] = row
    return out


def markdown(result: dict) -> str:
    groups = list(result["groups"])
    label = {"total": "mAP"}
    head = ["method", "seeds"] + [f"{label.get(g, g)} ({result['groups'][g]})" for g in groups] + \
        [f"Δ {label.get(g, g)} vs {result['baseline']} [{int(100 * result['level'])}% CI]" for g in groups]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in result["methods"].items():
        cells = [name, str(row["seeds"])]
        cells += [f"{100 * row['map'][g][0]:.2f} ± {100 * row['map'][g][1]:.2f}" for g in groups]
        for g in groups:
            v = row.get("vs_baseline", {}).get(g)
            if v is None:
                cells.append("(baseline)" if "vs_baseline" not in row else "n/a")
            elif v["diff"] is None:
                cells.append("n/a")
            else:
                cells.append(f"{100 * v['diff']:+.2f} [{100 * v['low']:+.2f}, {100 * v['high']:+.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nmean ± sample std over seeds (percent); Δ: the seed-averaged difference against {result['baseline']} "
            f"and its paired-bootstrap percentile interval over the {result['num_examples']} test examples "
            f"({result['reps']} resamples, seed {result['seed']}).")
    return "\n".join(lines) + note + "\n"


def plot_ap_vs_frequency(methods: Sequence[Method], path: str) -> None:
    """Per-class AP (mean over seeds) against the training count, every method on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for m in methods:
        per = m.runs[0].report["per_class"]
        n_train = np.array([max(c["n_train"], 1) for c in per])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class without test positives: NaN, dropped
            ap = np.nanmean(np.stack([class_ap(r.scores, r.labels) for r in m.runs]), axis=0)
        keep = ~np.isnan(ap)
        x, y = n_train[keep], 100 * ap[keep]
        points = ax.scatter(x, y, s=10, alpha=0.45)
        # the trend: mean AP in log-spaced frequency bins
        edges = np.geomspace(x.min(), x.max() * 1.0001, min(8, len(x)) + 1)
        which = np.clip(np.digitize(x, edges) - 1, 0, len(edges) - 2)
        bins = [b for b in range(len(edges) - 1) if np.any(which == b)]
        ax.plot([np.exp(np.mean(np.log(x[which == b]))) for b in bins], [y[which == b].mean() for b in bins],
                color=points.get_facecolor()[0][:3], linewidth=1.8,
                label=f"{m.name} (mAP {np.nanmean(100 * ap[keep]):.2f}; line: mean per frequency bin)")
    ax.set_xscale("log")
    ax.set_xlabel("training examples of the class (log)")
    ax.set_ylabel("AP (%), mean over seeds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
