"""ltjax.thresholds: F1-optimal thresholds against brute force, per-class thresholds in the metrics, and a run
that tunes them on its validation split, reports with them and hands them to predict."""
import json

import numpy as np
import pytest

from helpers import small_synthetic_config

from ltjax import metrics, thresholds
from ltjax.errors import ConfigError


def _f1(pred, y):
    tp = (pred & y).sum()
    return 2 * tp / (pred.sum() + y.sum()) if (pred.sum() + y.sum()) else 0.0


def test_per_class_thresholds_are_f1_optimal_by_brute_force():
    rng = np.random.default_rng(0)
    y = rng.random((80, 5)) < [0.5, 0.2, 0.05, 0.3, 0.0]
    s = np.round(rng.random((80, 5)) + 0.6 * y, 2)  # rounded: ties between examples
    t = thresholds.tune(s, y, "val_f1", 0.5)
    for k in range(4):
        cands = np.unique(s[:, k])
        best = max(_f1(s[:, k] >= c, y[:, k]) for c in cands)
        assert _f1(s[:, k] >= t[k], y[:, k]) == pytest.approx(best)
        assert t[k] == max(c for c in cands if _f1(s[:, k] >= c, y[:, k]) == pytest.approx(best))  # the larger
    assert t[4] == 0.5  # no validation positive: the default


def test_the_global_threshold_maximises_macro_f1():
    rng = np.random.default_rng(1)
    y = rng.random((60, 4)) < 0.3
    s = np.round(rng.random((60, 4)) + 0.5 * y, 2)
    t = thresholds.tune(s, y, "val_f1_global", 0.5)
    assert np.all(t == t[0])
    macro = lambda c: np.mean([_f1(s[:, k] >= c, y[:, k]) for k in range(4)])  # noqa: E731
    assert macro(t[0]) == pytest.approx(max(macro(c) for c in np.unique(s)))


def test_metrics_take_per_class_thresholds():
    from ltjax.data.groups import class_groups

    rng = np.random.default_rng(2)
    y = (rng.random((50, 3)) < 0.4).astype(np.float32)
    s = rng.random((50, 3)).astype(np.float32)
    t = np.array([0.2, 0.5, 0.8])
    groups = class_groups(np.array([30, 10, 2]), head_min=20, tail_max=5)
    r = metrics.evaluate(s, y, groups, np.array([30, 10, 2]), ["a", "b", "c"], threshold=t, top_k=(1,))
    pred = s >= t
    f1s = [_f1(pred[:, k], y[:, k] > 0) for k in range(3)]
    assert r["macro_f1"] == pytest.approx(np.mean(f1s), abs=1e-6)
    assert r["mACC"] == pytest.approx(np.mean((pred == (y > 0)).mean(axis=0)), abs=1e-6)
    assert r["threshold"] == [0.2, 0.5, 0.8]
    o = metrics.odir_scores(y, s, threshold=t)
    assert o["f1"] == pytest.approx(((s > t) == (y > 0)).mean())
    with pytest.raises(ValueError, match="3 finite numbers"):
        metrics.evaluate(s, y, groups, np.array([30, 10, 2]), ["a", "b", "c"], threshold=t[:2], top_k=(1,))


def test_a_run_tunes_on_val_reports_with_them_and_predict_applies_them(tmp_path):
    from ltjax import predict
    from ltjax.training.loop import Experiment, train_and_evaluate

    with pytest.raises(ConfigError, match="has none .*val_from_train"):
        Experiment(small_synthetic_config(**{"eval.thresholds": "val_f1"}))
    cfg = small_synthetic_config(**{"data.val_from_train": 0.25, "eval.thresholds": "val_f1",
                                    "train.num_epochs": 1})
    w = tmp_path / "run"
    report = train_and_evaluate(cfg, str(w))
    saved = json.loads((w / "thresholds.json").read_text())
    assert saved["mode"] == "val_f1" and saved["split"] == "val" and report["threshold"] == saved["thresholds"]
    exp = Experiment(cfg)
    vs, vy = exp.predict(exp.restore(str(w))[0].params, exp.restore(str(w))[0].batch_stats, "val")
    np.testing.assert_allclose(saved["thresholds"], thresholds.tune(vs, vy, "val_f1", 0.5))  # from val
    with np.load(w / "scores.npz") as z:
        s, y = z["scores"], z["labels"] > 0
    t = np.asarray(saved["thresholds"])
    f1s = [_f1(s[:, k] >= t[k], y[:, k]) for k in range(s.shape[1])]
    assert report["macro_f1"] == pytest.approx(np.mean(f1s), abs=1e-6)
    x = np.asarray(exp.dataset.split("test").inputs)
    out = predict.predict(str(w), list(x[:5]))
    np.testing.assert_array_equal(out["threshold"], t)
    assert out["predicted"][0] == [n for n, v, tk in zip(out["class_names"], out["scores"][0], t) if v >= tk]
