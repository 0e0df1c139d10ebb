"""Tests of ltjax.metrics against sklearn, independent numpy loops and hand-worked examples."""
from __future__ import annotations

import functools
import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from ltjax import metrics
from ltjax.data.groups import class_groups

IMPLS = ("host", "xla")


def _rank(scores, labels, impl):
    s, y = metrics._check_pair(scores, labels)
    ap, auc = metrics._rank_metrics_jit(s, y, impl=impl)
    return np.asarray(ap, dtype=np.float64), np.asarray(auc, dtype=np.float64)


def _random_case(rng, n, c, decimals=1):
    """Scores rounded to `decimals` (many ties), per-class positive rates from 0 to 1, plus a class
    without positives and a class with only positives."""
    scores = np.round(rng.random((n, c)), decimals).astype(np.float32)
    labels = (rng.random((n, c)) < rng.random(c)).astype(np.int32)
    labels[:, 0] = 0
    if c > 1:
        labels[:, 1] = 1
    return scores, labels


def _sklearn_ap(scores, labels):
    out = np.full(scores.shape[1], np.nan)
    for j in range(scores.shape[1]):
        if labels[:, j].any():
            out[j] = average_precision_score(labels[:, j], scores[:, j])
    return out


def _sklearn_auc(scores, labels):
    out = np.full(scores.shape[1], np.nan)
    for j in range(scores.shape[1]):
        if 0 < labels[:, j].sum() < len(labels):
            out[j] = roc_auc_score(labels[:, j], scores[:, j])
    return out


def _assert_close_nan(actual, expected, atol):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual[~np.isnan(expected)], expected[~np.isnan(expected)], rtol=0, atol=atol)


# ------------------------------------------------------------------------------------------------
# AP and AUC
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
def test_ap_and_auc_match_sklearn_with_ties(impl):
    rng = np.random.default_rng(0)
    shapes = [(1, 3), (2, 2), (7, 5), (40, 9), (257, 6), (1000, 4)]
    for seed, (n, c) in enumerate(shapes + shapes[2:]):
        rng = np.random.default_rng(seed)
        scores, labels = _random_case(rng, n, c, decimals=1 if seed % 2 == 0 else 2)
        ap, auc = _rank(scores, labels, impl)
        expected_ap = _sklearn_ap(scores, labels)
        _assert_close_nan(ap, expected_ap, atol=1e-6)
        _assert_close_nan(auc, _sklearn_auc(scores, labels), atol=1e-6)
        assert np.isnan(ap[0]) and np.isnan(auc[0])  # no positives
        if c > 1:
            assert ap[1] == pytest.approx(1.0) and np.isnan(auc[1])  # only positives


@pytest.mark.parametrize("impl", IMPLS)
def test_ap_hand_worked_ties(impl):
    # scores 0.9(+) 0.5(+) 0.5(-) 0.1(-) 0.1(+): thresholds 0.9 -> P=1 R=1/3; 0.5 -> P=2/3 R=2/3;
    # 0.1 -> P=3/5 R=1.  AP = 1/3*1 + 1/3*2/3 + 1/3*3/5 = 0.7555...
    s = np.array([[0.9], [0.5], [0.5], [0.1], [0.1]], np.float32)
    y = np.array([[1], [1], [0], [0], [1]])
    ap, auc = _rank(s, y, impl)
    assert ap[0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-7)
    # AUC: pairs (pos, neg): 0.9 beats both; 0.5 ties 0.5 (1/2) beats 0.1; 0.1 ties 0.1 (1/2), loses 0.5
    assert auc[0] == pytest.approx((2 + 1.5 + 0.5) / 6, abs=1e-7)


@pytest.mark.parametrize("impl", IMPLS)
def test_signed_zero_scores_are_one_threshold(impl):
    s = np.array([[0.0], [-0.0], [-0.0], [0.0], [-1.0]], np.float32)
    y = np.array([[0], [1], [0], [1], [0]])
    ap, auc = _rank(s, y, impl)
    assert ap[0] == pytest.approx(average_precision_score(y[:, 0], s[:, 0]), abs=1e-7)
    assert ap[0] == pytest.approx(0.5)  # all four zeros form one threshold with 2 positives
    assert auc[0] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]), abs=1e-7)


@pytest.mark.parametrize("impl", IMPLS)
def test_ap_float32_precision_on_many_examples(impl):
    rng = np.random.default_rng(7)
    n, c = 30_000, 6
    scores = rng.standard_normal((n, c)).astype(np.float32)
    labels = (rng.random((n, c)) < np.array([0.5, 0.2, 0.05, 0.01, 0.002, 0.9])).astype(np.int8)
    ap, auc = _rank(scores, labels, impl)
    _assert_close_nan(ap, _sklearn_ap(scores, labels), atol=1e-6)
    _assert_close_nan(auc, _sklearn_auc(scores, labels), atol=1e-6)


def test_host_block_kernel_float64_branch_and_blocking(monkeypatch):
    rng = np.random.default_rng(3)
    scores, labels = _random_case(rng, 300, 7, decimals=2)
    s64 = scores.astype(np.float64) + rng.integers(0, 2, scores.shape) * 1e-12  # ties float32 can't see
    ap, auc = metrics._rank_block_numpy(np.ascontiguousarray(s64.T), np.ascontiguousarray(labels.T))
    _assert_close_nan(ap, _sklearn_ap(s64, labels), atol=1e-12)
    _assert_close_nan(auc, _sklearn_auc(s64, labels), atol=1e-12)
    # the host callback splits classes into blocks; a tiny block size must not change anything
    monkeypatch.setattr(metrics, "_RANK_BATCH_ELEMENTS", 600)  # 2 classes per block
    ap_b, auc_b = metrics._rank_host_callback(scores, labels.astype(np.int8), np.float64)
    _assert_close_nan(ap_b, _sklearn_ap(scores, labels), atol=1e-12)
    _assert_close_nan(auc_b, _sklearn_auc(scores, labels), atol=1e-12)


def test_xla_kernel_batched_over_classes(monkeypatch):
    rng = np.random.default_rng(4)
    scores, labels = _random_case(rng, 50, 7)
    monkeypatch.setattr(metrics, "_RANK_BATCH_ELEMENTS", 100)  # 2 classes per lax.map batch, 1 left over
    fn = jax.jit(functools.partial(metrics._rank_metrics, impl="xla"))
    ap, auc = fn(*metrics._check_pair(scores, labels))
    _assert_close_nan(ap, _sklearn_ap(scores, labels), atol=1e-6)
    _assert_close_nan(auc, _sklearn_auc(scores, labels), atol=1e-6)


def test_public_ap_auc_accept_numpy_jax_and_bool():
    rng = np.random.default_rng(5)
    scores, labels = _random_case(rng, 64, 5)
    expected = _sklearn_ap(scores, labels)
    _assert_close_nan(metrics.average_precision(scores, labels), expected, atol=1e-6)
    _assert_close_nan(metrics.average_precision(jnp.asarray(scores), jnp.asarray(labels, jnp.float32)), expected, 1e-6)
    _assert_close_nan(metrics.average_precision(scores.tolist(), labels.astype(bool)), expected, atol=1e-6)
    _assert_close_nan(metrics.roc_auc(scores, labels), _sklearn_auc(scores, labels), atol=1e-6)


def test_ap_is_invariant_to_monotone_transform_and_example_order():
    rng = np.random.default_rng(6)
    scores, labels = _random_case(rng, 120, 5)
    ap = np.asarray(metrics.average_precision(scores, labels))
    perm = rng.permutation(120)
    chex.assert_trees_all_close(np.asarray(metrics.average_precision(scores[perm], labels[perm])), ap, atol=1e-7)
    logits = np.log(scores + 0.01) * 3.0 - 1.0  # strictly increasing: same ranking, same ties
    chex.assert_trees_all_close(np.asarray(metrics.average_precision(logits, labels)), ap, atol=1e-6)


def test_jitted_kernels_trace_once_per_shape():
    rng = np.random.default_rng(8)
    ap_fn = jax.jit(chex.assert_max_traces(metrics.average_precision, n=1))

    def xla_kernel(s, y):
        return metrics._rank_metrics(s, y, impl="xla")

    xla_fn = jax.jit(chex.assert_max_traces(xla_kernel, n=1))
    for seed in range(3):
        scores, labels = _random_case(np.random.default_rng(seed), 30, 4)
        expected = _sklearn_ap(scores, labels)
        _assert_close_nan(ap_fn(jnp.asarray(scores), jnp.asarray(labels)), expected, atol=1e-6)
        _assert_close_nan(xla_fn(*metrics._check_pair(scores, labels))[0], expected, atol=1e-6)
    # the counter is live: a new shape is a second trace
    with pytest.raises(AssertionError):
        ap_fn(jnp.asarray(rng.random((31, 4)), jnp.float32), jnp.ones((31, 4)))


# ------------------------------------------------------------------------------------------------
# F1
# ------------------------------------------------------------------------------------------------
def test_f1_matches_sklearn():
    # c >= 2: sklearn reads a single label column as a binary (not multilabel) problem
    for seed, (n, c) in enumerate([(1, 3), (37, 5), (37, 5), (37, 5)]):
        rng = np.random.default_rng(seed)
        scores, labels = _random_case(rng, n, c)
        scores[:, -1] = 0.0  # a class never predicted (and, as class 0, possibly never true)
        for threshold in (0.0, 0.3, 0.5, 1.0):
            got = metrics.f1_scores(scores, labels, threshold)
            pred = (scores >= threshold).astype(int)
            for avg in ("micro", "macro"):
                want = f1_score(labels, pred, average=avg, zero_division=0)
                assert float(got[f"{avg}_f1"]) == pytest.approx(want, abs=1e-6), (seed, threshold, avg)


def test_f1_hand_worked_and_jittable():
    s = np.array([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4]], np.float32)
    y = np.array([[1, 0], [0, 1], [1, 0]])
    # class 0: TP 1, FP 1, FN 1 -> 1/2; class 1: TP 1 -> 1; micro: TP 2, FP 1, FN 1 -> 4/6
    got = jax.jit(metrics.f1_scores)(s, y, 0.5)
    assert float(got["macro_f1"]) == pytest.approx(0.75)
    assert float(got["micro_f1"]) == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------------
# P@k and nDCG@k
# ------------------------------------------------------------------------------------------------
def _ref_topk(scores, labels, k):
    """Independent plain-loop reference; ties by lower class index; examples w/o positives skipped."""
    ps, ns = [], []
    for s_row, y_row in zip(scores.tolist(), labels.tolist()):
        npos = int(sum(y_row))
        if npos == 0:
            continue
        order = sorted(range(len(s_row)), key=lambda j: (-s_row[j], j))[:k]
        hits = [y_row[j] for j in order]
        ps.append(sum(hits) / k)
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(k, npos)))
        ns.append(dcg / idcg)
    return (np.mean(ps), np.mean(ns)) if ps else (np.nan, np.nan)


def test_precision_and_ndcg_at_k_match_reference_loop():
    n, c = 45, 9  # one shape: each k compiles once
    for seed in range(4):
        rng = np.random.default_rng(seed)
        scores = np.round(rng.random((n, c)), 1).astype(np.float32)  # many ties
        labels = (rng.random((n, c)) < 0.25).astype(np.int32)
        labels[0] = 0  # an example without positives
        for k in (1, 2, 3, 5, c):
            p_ref, n_ref = _ref_topk(scores, labels, k)
            assert float(metrics.precision_at_k(scores, labels, k)) == pytest.approx(p_ref, abs=1e-6)
            assert float(metrics.ndcg_at_k(scores, labels, k)) == pytest.approx(n_ref, abs=1e-6)


def test_topk_hand_worked_with_ties():
    s = np.array([[0.9, 0.1, 0.5], [0.3, 0.2, 0.1], [0.5, 0.5, 0.5], [-0.0, 0.0, -1.0]], np.float32)
    y = np.array([[0, 1, 1], [0, 0, 0], [1, 0, 0], [1, 0, 0]])
    # example 1 excluded (no positives). Top-1: ex0 class 0 (miss); ex2 tie -> class 0 (hit);
    # ex3 -0.0 == +0.0 tie -> class 0 (hit).  P@1 = 2/3.
    assert float(metrics.precision_at_k(s, y, 1)) == pytest.approx(2 / 3)
    # Top-2: ex0 classes 0, 2 -> hits [0, 1], DCG 1/log2(3), IDCG 1 + 1/log2(3); ex2, ex3 -> [1, 0], nDCG 1.
    assert float(metrics.precision_at_k(s, y, 2)) == pytest.approx(0.5)
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert float(metrics.ndcg_at_k(s, y, 2)) == pytest.approx((ndcg0 + 2) / 3, abs=1e-6)
    assert math.isnan(float(metrics.precision_at_k(s, np.zeros_like(y), 1)))


# ------------------------------------------------------------------------------------------------
# evaluate()
# ------------------------------------------------------------------------------------------------
# 4 test examples x 5 classes; groups from counts: head [0], medium [1], tail [2, 3, 4].
_S = np.array(
    [[0.9, 0.1, 0.4, 0.9, 0.2], [0.1, 0.9, 0.6, 0.8, 0.3], [0.2, 0.8, 0.5, 0.7, 0.6], [0.3, 0.7, 0.1, 0.1, 0.1]],
    np.float32,
)
_Y = np.array([[1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
_COUNTS = np.array([150, 50, 5, 3, 1])
_NAMES = ["a", "b", "c", "d", "e"]


def _small_report(**kw):
    return metrics.evaluate(_S, _Y, class_groups(_COUNTS), _COUNTS, _NAMES, **kw)


def test_evaluate_total_map_is_mean_over_classes_not_over_groups():
    r = _small_report()
    # APs by hand: a 1 (top), b 1/4 (ranked last), c 1 (top), d 1/3 (third); e has no positive.
    ap = {"a": 1.0, "b": 0.25, "c": 1.0, "d": 1 / 3}
    assert r["mAP"] == pytest.approx(np.mean(list(ap.values())))
    mean_of_groups = np.mean([1.0, 0.25, (1 + 1 / 3) / 2])
    assert abs(r["mAP"] - mean_of_groups) > 1e-3
    assert r["group_mAP"] == pytest.approx({"head": 1.0, "medium": 0.25, "tail": (1 + 1 / 3) / 2})
    assert r["group_sizes"] == {"head": 1, "medium": 1, "tail": 3}
    assert r["excluded_classes"] == ["e"]
    per = {p["name"]: p for p in r["per_class"]}
    for name, value in ap.items():
        assert per[name]["ap"] == pytest.approx(value)
    assert per["e"]["ap"] is None and per["e"]["auc"] is None and per["e"]["num_test_pos"] == 0
    assert [p["group"] for p in r["per_class"]] == ["head", "medium", "tail", "tail", "tail"]
    assert [p["n_train"] for p in r["per_class"]] == _COUNTS.tolist()
    assert [p["index"] for p in r["per_class"]] == list(range(5))
    assert r["group_rule"] == class_groups(_COUNTS).rule


def test_evaluate_agrees_with_the_array_functions_and_is_json():
    r = _small_report(threshold=0.55, top_k=(1, 2))
    auc = _sklearn_auc(_S, _Y)
    assert r["auc_macro"] == pytest.approx(np.nanmean(auc))
    pred = (_S >= 0.55).astype(int)
    assert r["micro_f1"] == pytest.approx(f1_score(_Y, pred, average="micro", zero_division=0))
    assert r["macro_f1"] == pytest.approx(f1_score(_Y, pred, average="macro", zero_division=0))
    acc = [(pred[:, k] == _Y[:, k]).mean() for k in range(_Y.shape[1])]  # per-class accuracy at the threshold
    assert [p["acc"] for p in r["per_class"]] == pytest.approx(acc) and r["mACC"] == pytest.approx(np.mean(acc))
    for k in (1, 2):
        p_ref, n_ref = _ref_topk(_S, _Y, k)
        assert r[f"P@{k}"] == pytest.approx(p_ref) and r[f"nDCG@{k}"] == pytest.approx(n_ref)
    assert "P@5" not in r
    assert r["threshold"] == 0.55 and r["num_examples"] == 4 and r["num_classes"] == 5
    assert json.loads(json.dumps(r, allow_nan=False)) == r
    for v in [r["mAP"], r["auc_macro"], r["micro_f1"], *r["group_mAP"].values()]:
        assert type(v) is float and 0.0 <= v <= 1.0


def test_evaluate_group_without_positives_is_none():
    counts = np.array([150, 150, 150, 150, 1])  # tail = class e only, which has no test positive
    r = metrics.evaluate(_S, _Y, class_groups(counts), counts, _NAMES, top_k=(1,))
    assert r["group_mAP"]["tail"] is None and r["group_mAP"]["medium"] is None
    assert r["group_mAP"]["head"] == pytest.approx(r["mAP"])


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    s, y = _S.copy(), _Y.copy()
    with pytest.raises(ValueError, match="same .* shape"):
        metrics.average_precision(s, y[:, :4])
    with pytest.raises(ValueError, match="2-D"):
        metrics.roc_auc(s[:, 0], y[:, 0])
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics.average_precision(s, y * 2)
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics.f1_scores(s, y - 0.5)
    bad = s.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.average_precision(bad, y)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.precision_at_k(jnp.asarray(bad), y, 1)
    with pytest.raises(ValueError, match="empty"):
        metrics.average_precision(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="k=6 is outside"):
        metrics.ndcg_at_k(s, y, 6)
    with pytest.raises(ValueError, match="threshold"):
        metrics.f1_scores(s, y, float("nan"))
    groups = class_groups(_COUNTS)
    with pytest.raises(ValueError, match="groups cover 4 classes"):
        metrics.evaluate(s, y, class_groups(_COUNTS[:4]), _COUNTS, _NAMES)
    with pytest.raises(ValueError, match="class_counts must have shape"):
        metrics.evaluate(s, y, groups, _COUNTS[:4], _NAMES)
    with pytest.raises(ValueError, match="class_names has 4"):
        metrics.evaluate(s, y, groups, _COUNTS, _NAMES[:4])
    with pytest.raises(ValueError, match="k=6 is outside"):
        metrics.evaluate(s, y, groups, _COUNTS, _NAMES, top_k=(1, 6))
    with pytest.raises(TypeError, match="ClassGroups"):
        metrics.evaluate(s, y, {"head": [0]}, _COUNTS, _NAMES)
