"""Tests of ltjax.report: tables, multi-run summaries and the AP-vs-frequency plot."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from ltjax import metrics, report
from ltjax.data.groups import class_groups

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _report(mAP=0.78944, head=0.73219, medium=0.84181, tail=0.79304, auc=0.912345, p1=0.8, excluded=()):
    """A hand-made report with the keys evaluate() produces (values chosen to round unambiguously)."""
    return {
        "mAP": mAP,
        "group_mAP": {"head": head, "medium": medium, "tail": tail},
        "group_sizes": {"head": 6, "medium": 6, "tail": 8},
        "group_rule": "head n_c >= 100, medium 20 <= n_c < 100, tail n_c < 20",
        "excluded_classes": list(excluded),
        "per_class": [],
        "auc_macro": auc,
        "micro_f1": 0.5512,
        "macro_f1": 0.40225,
        "threshold": 0.5,
        "P@1": p1,
        "P@3": 0.61,
        "nDCG@1": p1,
        "nDCG@3": 0.7,
        "top_k": [1, 3],
        "num_examples": 100,
        "num_classes": 20,
    }


def _table_lines(text):
    return [line for line in text.splitlines() if line.startswith("|")]


def test_format_table_percentages_and_markdown_layout():
    text = report.format_table(_report(excluded=["cow", "sofa"]), title="VOC-LT")
    rows = _table_lines(text)
    assert len(rows) == 3
    assert len({len(r) for r in rows}) == 1  # fixed width
    assert all(r.endswith("|") for r in rows) and set(rows[1]) <= set("|-:")  # Markdown delimiter row
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    values = [c.strip() for c in rows[2].strip("|").split("|")]
    assert header == ["mAP total", "head (6)", "medium (6)", "tail (8)"]
    assert values == ["78.94", "73.22", "84.18", "79.30"]
    assert "VOC-LT" in text.splitlines()[0]
    assert "AUC 91.23" in text and "micro-F1 55.12" in text and "macro-F1 40.23" in text
    assert "F1 threshold 0.5" in text
    assert "P@1 80.00" in text and "P@3 61.00" in text and "nDCG@3 70.00" in text
    assert text.index("P@3") < text.index("nDCG@1")
    assert "Excluded" in text and "cow, sofa" in text
    assert "Excluded" not in report.format_table(_report())


def test_format_table_of_a_real_report_with_an_empty_group():
    rng = np.random.default_rng(0)
    scores = rng.random((30, 4)).astype(np.float32)
    labels = (rng.random((30, 4)) < 0.4).astype(int)
    labels[:, 3] = 0
    counts = np.array([500, 200, 150, 5])  # medium is empty; tail holds only the class without positives
    r = metrics.evaluate(scores, labels, class_groups(counts), counts, ["w", "x", "y", "z"], top_k=(1,))
    values = [c.strip() for c in _table_lines(report.format_table(r))[2].strip("|").split("|")]
    assert values[0] == f"{100 * r['mAP']:.2f}" and values[1] == f"{100 * r['group_mAP']['head']:.2f}"
    assert values[2:] == ["n/a", "n/a"]
    assert "medium (0)" in report.format_table(r) and "z" in report.format_table(r).splitlines()[-1]


def test_summarize_runs_mean_and_sample_std():
    runs = [_report(mAP=0.70, head=0.6, tail=0.5, p1=0.9), _report(mAP=0.72, head=0.65, tail=0.55, p1=0.8),
            _report(mAP=0.77, head=0.61, tail=0.52, p1=0.85)]
    s = report.summarize_runs(runs)
    assert s["num_runs"] == 3 and s["group_sizes"] == runs[0]["group_sizes"]
    for key, values in [("mAP", [0.70, 0.72, 0.77]), ("P@1", [0.9, 0.8, 0.85]), ("P@3", [0.61] * 3)]:
        assert s[key]["mean"] == pytest.approx(np.mean(values))
        assert s[key]["std"] == pytest.approx(np.std(values, ddof=1))
        assert s[key]["values"] == pytest.approx(values)
    assert s["group_mAP"]["head"]["mean"] == pytest.approx(np.mean([0.6, 0.65, 0.61]))
    assert s["group_mAP"]["head"]["std"] == pytest.approx(np.std([0.6, 0.65, 0.61], ddof=1))
    assert s["group_mAP"]["medium"]["std"] == pytest.approx(0.0)
    assert set(s) >= {"auc_macro", "micro_f1", "macro_f1", "nDCG@1", "nDCG@3"}

    text = report.format_summary_table(s, title="3 seeds")
    values = [c.strip() for c in _table_lines(text)[2].strip("|").split("|")]
    m, sd = np.mean([0.70, 0.72, 0.77]), np.std([0.70, 0.72, 0.77], ddof=1)
    assert values[0] == f"{100 * m:.2f} ± {100 * sd:.2f}"
    assert values[2] == "84.18 ± 0.00"
    assert f"P@1 {100 * np.mean([0.9, 0.8, 0.85]):.2f} ± " in text
    assert "3 runs" in text and "ddof=1" in text
    assert len({len(r) for r in _table_lines(text)}) == 1


def test_summarize_single_run_and_inconsistent_runs():
    single = report.summarize_runs([_report()])
    assert single["mAP"] == {"mean": pytest.approx(0.78944), "std": None, "values": [pytest.approx(0.78944)]}
    values = [c.strip() for c in _table_lines(report.format_summary_table(single))[2].strip("|").split("|")]
    assert values[0] == "78.94"
    assert "no std" in report.format_summary_table(single)

    other_groups = _report()
    other_groups["group_sizes"] = {"head": 7, "medium": 5, "tail": 8}
    with pytest.raises(ValueError, match="same class split"):
        report.summarize_runs([_report(), other_groups])
    with pytest.raises(ValueError, match="some runs but not in others"):
        report.summarize_runs([_report(), _report(tail=None)])
    all_none = report.summarize_runs([_report(tail=None), _report(tail=None)])
    assert all_none["group_mAP"]["tail"] == {"mean": None, "std": None, "values": [None, None]}
    fewer_k = _report()
    del fewer_k["P@3"], fewer_k["nDCG@3"]
    with pytest.raises(ValueError, match="same top_k"):
        report.summarize_runs([_report(), fewer_k])
    with pytest.raises(ValueError, match="at least one"):
        report.summarize_runs([])
    with pytest.raises(KeyError, match="lacks the keys"):
        report.format_table({"mAP": 0.5})


def test_plot_writes_png(tmp_path):
    rng = np.random.default_rng(1)
    scores = rng.random((60, 6)).astype(np.float32)
    labels = (rng.random((60, 6)) < 0.3).astype(int)
    labels[:, 5] = 0  # omitted from the plot
    counts = np.array([300, 120, 40, 25, 3, 1])
    r = metrics.evaluate(scores, labels, class_groups(counts), counts, list("abcdef"), top_k=(1,))
    out = report.plot_ap_vs_frequency(r, tmp_path / "sub" / "ap.png", title="toy")
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000

    r0 = copy.deepcopy(r)
    r0["per_class"][0]["n_train"] = 0  # zero training count -> symlog axis, still drawable
    data0 = report.plot_ap_vs_frequency(r0, tmp_path / "ap0.png").read_bytes()
    assert data0[:8] == PNG_SIGNATURE and data0 != data
