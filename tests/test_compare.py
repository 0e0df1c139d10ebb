"""ltjax.compare and scripts/compare.py: the paired bootstrap against an independent numpy reference, the
seed statistics against each run's own evaluation, and the refusals."""
import json
import os

import numpy as np
import pytest

from helpers import import_script, small_synthetic_config

from ltjax import compare


def _ap_reference(s, y):
    """AP of one class: the sum over distinct score thresholds t (descending) of (R_t - R_prev) * P_t, where
    P_t and R_t count every example scored >= t (a resample repeats examples, so scores tie)."""
    if y.sum() == 0:
        return np.nan
    ap, recall_prev = 0.0, 0.0
    for t in np.unique(s)[::-1]:
        above = s >= t
        recall = y[above].sum() / y.sum()
        ap += (recall - recall_prev) * y[above].sum() / above.sum()
        recall_prev = recall
    return float(ap)


def _method(name, rng, labels, signal):
    runs = []
    for seed in range(2):
        scores = signal * labels + rng.normal(size=labels.shape)
        per = [{"ap": 0.5, "num_test_pos": int(labels[:, c].sum()), "group": "head" if c < 3 else "tail",
                "n_train": 100 - 10 * c} for c in range(labels.shape[1])]
        report = {"per_class": per, "group_mAP": {"head": 0, "tail": 0}, "dataset": "toy"}
        runs.append(compare.Run(f"{name}/seed_{seed}", scores.astype(np.float32), labels, report))
    return compare.Method(name, runs)


def test_paired_bootstrap_equals_a_numpy_reference():
    rng = np.random.default_rng(1)
    n, c, reps = 40, 6, 60
    labels = (rng.random((n, c)) < 0.3).astype(np.uint8)
    labels[:, 5] = 0
    labels[:2, 5] = 1  # a rare class: absent from many resamples
    a, b = _method("a", rng, labels, 1.5), _method("b", rng, labels, 0.5)
    groups = compare.groups_of(b.runs[0].report)
    got = compare.paired_bootstrap(a, b, groups, reps=reps, seed=7, level=0.9)

    idx = np.random.default_rng(7).integers(0, n, size=(reps, n))  # numpy's generator, as documented
    members = {"total": range(c), "head": range(3), "tail": range(3, c)}

    def seed_mean(method, rows):
        vals = []
        for r in method.runs:
            ap = np.array([_ap_reference(r.scores[rows, k], r.labels[rows, k]) for k in range(c)])
            vals.append({g: np.nanmean(ap[list(ks)]) for g, ks in members.items()})
        return {g: np.mean([v[g] for v in vals]) for g in members}

    full = np.arange(n)
    for g in members:
        diffs = np.array([seed_mean(a, i)[g] - seed_mean(b, i)[g] for i in idx])
        lo, hi = np.quantile(diffs, [0.05, 0.95])
        assert got[g]["diff"] == pytest.approx(seed_mean(a, full)[g] - seed_mean(b, full)[g], abs=1e-6)
        assert got[g]["low"] == pytest.approx(lo, abs=1e-6) and got[g]["high"] == pytest.approx(hi, abs=1e-6)
        assert got[g]["p_le_0"] == pytest.approx(np.mean(diffs <= 0))
    assert got["total"]["low"] > 0  # a stronger signal is better on every resample here


def test_count_weighted_resample_ap_equals_ap_of_the_materialised_resample_with_ties():
    rng = np.random.default_rng(3)
    n, c, reps = 50, 5, 40
    labels = (rng.random((n, c)) < 0.25).astype(np.uint8)
    labels[:, 4] = 0
    labels[7, 4] = 1  # one positive: absent from some resamples (NaN there)
    scores = np.round(rng.random((n, c)) * 4) / 4  # five distinct scores: heavy ties
    scores[:5, 0] = -0.0
    scores[5:10, 0] = 0.0  # -0.0 and +0.0 are one score
    idx = compare.resample_indices(n, reps, 11)
    got = compare.resampled_ap(scores.astype(np.float32), labels, compare.resample_counts(idx))
    want = np.stack([compare.class_ap(scores[i].astype(np.float32), labels[i]) for i in idx])
    np.testing.assert_allclose(got, want, atol=1e-6)  # NaN where a class has no positive in the resample
    assert np.isnan(got[:, 4]).any() and not np.isnan(got[:, 4]).all()


def test_other_test_sets_and_unknown_baselines_are_refused():
    rng = np.random.default_rng(0)
    labels = (rng.random((20, 6)) < 0.4).astype(np.uint8)
    a, b = _method("a", rng, labels, 1.0), _method("b", rng, labels, 1.0)
    with pytest.raises(compare.CompareError, match="not one of the methods: a, b"):
        compare.compare([a, b], "c", reps=5)
    b.runs[1].labels = labels[::-1].copy()
    with pytest.raises(compare.CompareError, match="another test set"):
        compare.compare([a, b], "a", reps=5)


def test_compare_script_on_trained_runs_agrees_with_their_evaluations(tmp_path):
    from ltjax.training.loop import train_and_evaluate

    for method, seed in (("bce", 0), ("bce", 1), ("db_focal", 0)):
        cfg = small_synthetic_config(**{"method.name": method, "seed": seed, "train.num_epochs": 1})
        train_and_evaluate(cfg, str(tmp_path / method / f"seed_{seed}"))
    os.remove(tmp_path / "bce" / "seed_1" / compare.SCORES_FILE)  # an older run: scores from its checkpoint
    script = import_script("compare")
    assert script.main([str(tmp_path / "bce"), str(tmp_path / "db_focal"), "--baseline", "bce", "--reps", "50",
                        "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert (tmp_path / "bce" / "seed_1" / compare.SCORES_FILE).exists()
    for method, seeds in (("bce", (0, 1)), ("db_focal", (0,))):
        maps = [json.loads((tmp_path / method / f"seed_{s}" / "eval.json").read_text())["mAP"] for s in seeds]
        assert result["methods"][method]["map"]["total"][0] == pytest.approx(np.mean(maps), abs=1e-6)
        assert result["methods"][method]["map"]["total"][1] == pytest.approx(np.std(maps, ddof=1) if len(maps) > 1
                                                                           else 0.0, abs=1e-6)
    d = result["methods"]["db_focal"]["vs_baseline"]["total"]
    assert d["low"] <= d["diff"] <= d["high"]
    assert "| db_focal | 1 |" in (tmp_path / "out" / "compare.md").read_text()
    assert (tmp_path / "out" / "ap_vs_frequency.png").stat().st_size > 10_000
