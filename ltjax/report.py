"""Presentation of ``ltjax.metrics.evaluate`` reports: text/Markdown tables, multi-run summaries, plots.

This module owns how results are shown, never how they are computed: ``format_table`` renders one
report (mAP total | head | medium | tail, in percent), ``summarize_runs`` / ``format_summary_table``
aggregate several runs (e.g. three seeds) into mean ± std, and ``plot_ap_vs_frequency`` draws the
per-class AP against the training frequency.  All numbers in reports are fractions; tables show
percent with two decimals.
"""
from __future__ import annotations

import math
import pathlib
import re
from typing import Sequence

import numpy as np

__all__ = ["format_table", "summarize_runs", "format_summary_table", "plot_ap_vs_frequency"]

_SCALAR_LABELS = {"auc_macro": "AUC", "micro_f1": "micro-F1", "macro_f1": "macro-F1", "mACC": "mACC"}
_NA = "n/a"


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _require(report: dict, keys: Sequence[str], what: str = "report") -> None:
    if not isinstance(report, dict):
        raise TypeError(f"{what} must be a dict as returned by ltjax.metrics.evaluate, got {type(report).__name__}")
    missing = [k for k in keys if k not in report]
    if missing:
        raise KeyError(f"{what} lacks the keys {missing}; pass the dict returned by ltjax.metrics.evaluate")


def _pct(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return _NA
    return f"{100.0 * float(x):.2f}"


def _pct_pm(stat: dict) -> str:
    mean, std = stat["mean"], stat["std"]
    if mean is None:
        return _NA
    if std is None:
        return _pct(mean)
    return f"{_pct(mean)} ± {_pct(std)}"


def _ranking_keys(report: dict) -> list[str]:
    """The P@k and nDCG@k keys of a report, P@k first, each in increasing k."""
    def ks(prefix):
        return sorted(int(k[len(prefix):]) for k in report if re.fullmatch(re.escape(prefix) + r"\d+", k))

    return [f"P@{k}" for k in ks("P@")] + [f"nDCG@{k}" for k in ks("nDCG@")]


def _scalar_keys(report: dict) -> list[str]:
    return [k for k in _SCALAR_LABELS if k in report] + _ranking_keys(report)


def _markdown_table(header: list[str], row: list[str]) -> list[str]:
    widths = [max(len(h), len(c)) for h, c in zip(header, row)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return [line(header), rule, line(row)]


def _header(group_names, group_sizes) -> list[str]:
    return ["mAP total"] + [f"{g} ({group_sizes[g]})" for g in group_names]


# ------------------------------------------------------------------------------------------------
# one report
# ------------------------------------------------------------------------------------------------
def format_table(report: dict, title: str | None = None) -> str:
    """A fixed-width table (also valid Markdown) of one ``evaluate`` report, in percent.

    Columns: mAP total | <group> (<number of classes>) for each group (head, medium, tail).  Below
    it one line with AUC, micro/macro F1 (at the report's threshold), P@k and nDCG@k, and a line
    naming the classes excluded for having no test positive, if any.  Undefined values read "n/a".
    """
    _require(report, ["mAP", "group_mAP", "group_sizes"])
    groups = list(report["group_mAP"])
    lines = [f"**{title}**", ""] if title else []
    lines += _markdown_table(_header(groups, report["group_sizes"]), [_pct(report["mAP"])] + [_pct(report["group_mAP"][g]) for g in groups])
    scalars = [f"{_SCALAR_LABELS.get(k, k)} {_pct(report[k])}" for k in _scalar_keys(report)]
    if scalars:
        t = report.get("threshold")
        threshold = "" if t is None else (f" (F1 threshold {t:g})" if isinstance(t, (int, float)) else
                                          f" (per-class F1 thresholds, median {float(np.median(t)):.3g})")
        lines += ["", ", ".join(scalars) + threshold]
    excluded = report.get("excluded_classes") or []
    if excluded:
        lines += ["", f"Excluded (no test positives, {len(excluded)}): " + ", ".join(map(str, excluded))]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# several runs
# ------------------------------------------------------------------------------------------------
def _stat(values: list, name: str) -> dict:
    present = [v is not None for v in values]
    if not any(present):
        return {"mean": None, "std": None, "values": list(values)}
    if not all(present):
        raise ValueError(
            f"{name} is undefined (None) in some runs but not in others: {values}; the runs do not share "
            f"one test set / class split, so they cannot be averaged"
        )
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return {"mean": float(arr.mean()), "std": std, "values": [float(v) for v in arr]}


def summarize_runs(reports: Sequence[dict]) -> dict:
    """Mean and spread over runs (e.g. seeds) of the headline numbers of ``evaluate`` reports.

    Returns {"num_runs", "group_sizes", "group_rule", "mAP", "group_mAP": {group: stat}, and one stat
    per scalar metric ("auc_macro", "micro_f1", "macro_f1", "mACC", "P@k", "nDCG@k")}, each stat being
    {"mean", "std", "values"}.  ``std`` is the SAMPLE standard deviation (ddof=1) across runs, and
    None for a single run.  A metric undefined (None) in every run has mean None; undefined in only
    some runs, or runs with different class groups or metric sets, raise ValueError.
    """
    reports = list(reports)
    if not reports:
        raise ValueError("summarize_runs needs at least one report")
    for i, r in enumerate(reports):
        _require(r, ["mAP", "group_mAP", "group_sizes"], what=f"report {i}")
    first = reports[0]
    for i, r in enumerate(reports[1:], start=1):
        if r["group_sizes"] != first["group_sizes"] or list(r["group_mAP"]) != list(first["group_mAP"]):
            raise ValueError(
                f"report {i} has class groups {r['group_sizes']} but report 0 has {first['group_sizes']}; "
                f"only runs on the same class split can be summarised together"
            )
        if _scalar_keys(r) != _scalar_keys(first):
            raise ValueError(
                f"report {i} has metrics {_scalar_keys(r)} but report 0 has {_scalar_keys(first)}; evaluate all "
                f"runs with the same top_k"
            )
    summary = {
        "num_runs": len(reports),
        "group_sizes": dict(first["group_sizes"]),
        "group_rule": first.get("group_rule"),
        "mAP": _stat([r["mAP"] for r in reports], "mAP"),
        "group_mAP": {g: _stat([r["group_mAP"][g] for r in reports], f"group mAP {g!r}") for g in first["group_mAP"]},
    }
    for key in _scalar_keys(first):
        summary[key] = _stat([r[key] for r in reports], key)
    return summary


def format_summary_table(summary: dict, title: str | None = None) -> str:
    """The ``format_table`` layout for a ``summarize_runs`` summary: "mean ± std" in percent.

    A footer line states the number of runs and that std is the sample standard deviation.
    """
    _require(summary, ["num_runs", "mAP", "group_mAP", "group_sizes"], what="summary")
    groups = list(summary["group_mAP"])
    lines = [f"**{title}**", ""] if title else []
    row = [_pct_pm(summary["mAP"])] + [_pct_pm(summary["group_mAP"][g]) for g in groups]
    lines += _markdown_table(_header(groups, summary["group_sizes"]), row)
    scalars = [f"{_SCALAR_LABELS.get(k, k)} {_pct_pm(summary[k])}" for k in _scalar_keys(summary)]
    if scalars:
        lines += ["", ", ".join(scalars)]
    n = summary["num_runs"]
    spread = "mean ± sample std (ddof=1)" if n > 1 else "a single run, no std"
    lines += ["", f"{n} run{'s' if n != 1 else ''}: {spread}, in percent"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# plot
# ------------------------------------------------------------------------------------------------
_THRESHOLD_RULE = re.compile(r"head n_c >= ([0-9.eE+-]+), medium ([0-9.eE+-]+) <= n_c")


def plot_ap_vs_frequency(report: dict, path, title: str | None = None) -> pathlib.Path:
    """Write a PNG of per-class AP (y, percent) against training frequency n_train (x, log scale).

    Points are coloured by group (legend with the group sizes); dashed vertical lines mark the group
    thresholds when the groups are threshold-based; the title gives the total mAP.  Classes without
    a test positive (AP undefined) are omitted.  If some plotted class has n_train = 0 the x axis is
    symmetric-log (linear below 1) so it can be shown.  Uses matplotlib's Agg canvas directly, so no
    display and no global backend change.  Returns the path written.
    """
    _require(report, ["mAP", "group_mAP", "group_sizes", "per_class"])
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rows = [r for r in report["per_class"] if r.get("ap") is not None]
    any_zero = any(r["n_train"] <= 0 for r in rows)
    colors = {"head": "tab:blue", "medium": "tab:orange", "tail": "tab:green"}
    for i, g in enumerate(report["group_mAP"]):
        pts = [r for r in rows if r["group"] == g]
        if not pts:
            continue
        ax.scatter(
            [r["n_train"] for r in pts],
            [100.0 * r["ap"] for r in pts],
            s=18,
            alpha=0.8,
            color=colors.get(g, f"C{i + 3}"),
            label=f"{g} ({report['group_sizes'].get(g, len(pts))} classes, mAP {_pct(report['group_mAP'][g])}%)",
        )
    if any_zero:
        ax.set_xscale("symlog", linthresh=1.0)
    else:
        ax.set_xscale("log")
    match = _THRESHOLD_RULE.search(str(report.get("group_rule", "")))
    if match and rows:
        for x in sorted({float(match.group(1)), float(match.group(2))}):
            ax.axvline(x, linestyle="--", color="0.5", linewidth=1.0)
    if not rows:
        ax.text(0.5, 0.5, "no class has a test positive", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("training examples per class n_train (log scale)")
    ax.set_ylabel("AP (%)")
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    heading = f"per-class AP vs training frequency, mAP {_pct(report['mAP'])}%"
    ax.set_title(f"{title}\n{heading}" if title else heading)
    if rows:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
