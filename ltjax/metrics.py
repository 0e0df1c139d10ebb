"""Evaluation metrics for multi-label classification (REFERENCE section 1), as pure array functions.

This module owns every number the evaluator reports: per-class average precision (AP) and ROC AUC,
micro/macro F1 at a threshold, the extreme-classification ranking metrics P@k and nDCG@k, and
:func:`evaluate`, which assembles them into one JSON-serialisable report with head / medium / tail
group means, and the ODIR-5K challenge scores (:func:`odir_scores`, numpy, on request of the dataset).
Presentation of reports (tables, plots, multi-seed summaries) lives in ``ltjax.report``.

Conventions: ``scores`` is an ``[N, C]`` float array (any monotone score: logits or probabilities),
``labels`` an ``[N, C]`` array with values in {0, 1}; numpy or JAX arrays are accepted.  The array
functions are jit-able and vectorised over classes (no Python loop over classes); the value checks
(labels 0/1, finite scores) run whenever the inputs are concrete, i.e. not under ``jax.jit``.

AP and AUC need one sort per class.  XLA's CPU sort with a payload is slow (~60 s for 100,000 x
1,000 on 2 cores), so on CPU the jitted ranking kernel runs an exact vectorised numpy kernel through
``jax.pure_callback`` (~5 s); on GPU/TPU it runs a pure-XLA kernel.  ``lax.platform_dependent``
picks the branch when the computation is lowered; both are tested against sklearn.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ltjax.data.groups import ClassGroups

try:  # public location of the tracer type; the fallback keeps this importable if it moves
    from jax.core import Tracer as _Tracer
except ImportError:  # pragma: no cover
    from jax._src.core import Tracer as _Tracer

__all__ = [
    "average_precision",
    "roc_auc",
    "f1_scores",
    "precision_at_k",
    "ndcg_at_k",
    "evaluate",
    "odir_scores",
]

# Elements (classes x examples) handled by one vmapped batch of the ranking kernel; bounds memory to
# a few tens of MB per intermediate array whatever the size of the score matrix.
_RANK_BATCH_ELEMENTS = 1 << 22
# Terms summed in float before the block sums are added: keeps float32 rounding error ~1e-7.
_SUM_BLOCK = 1024


# ------------------------------------------------------------------------------------------------
# input validation
# ------------------------------------------------------------------------------------------------
def _is_concrete(x) -> bool:
    return not isinstance(x, _Tracer)


def _as_2d(x, what: str):
    if isinstance(x, (jax.Array, np.ndarray)):
        arr = x
    else:
        arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D [num_examples, num_classes] array, got shape {tuple(arr.shape)}")
    return arr


def _check_pair(scores, labels):
    """Shape and dtype checks (always) and value checks (when concrete); returns canonical arrays.

    scores -> floating array (float32 unless already float32/float64), labels -> int8 array.
    """
    scores = _as_2d(scores, "scores")
    labels = _as_2d(labels, "labels")
    if tuple(scores.shape) != tuple(labels.shape):
        raise ValueError(
            f"scores and labels must have the same [num_examples, num_classes] shape, got scores "
            f"{tuple(scores.shape)} and labels {tuple(labels.shape)}; pass one score per (example, class) label"
        )
    n, c = scores.shape
    if n == 0 or c == 0:
        raise ValueError(f"scores/labels are empty (shape {tuple(scores.shape)}); need at least one example and one class")
    sdt = np.dtype(scores.dtype)
    if not (np.issubdtype(sdt, np.floating) or np.issubdtype(sdt, np.integer) or sdt == np.bool_):
        raise TypeError(f"scores must be a real numeric array, got dtype {sdt}")
    ldt = np.dtype(labels.dtype)
    if not (np.issubdtype(ldt, np.floating) or np.issubdtype(ldt, np.integer) or ldt == np.bool_):
        raise TypeError(f"labels must be a numeric or boolean 0/1 array, got dtype {ldt}")

    if _is_concrete(scores):
        xp = np if isinstance(scores, np.ndarray) else jnp
        if np.issubdtype(sdt, np.floating) and not bool(xp.isfinite(scores).all()):
            bad = int((~xp.isfinite(scores)).sum())
            raise ValueError(
                f"scores contain {bad} NaN or infinite value(s); metrics are undefined for them - fix the model "
                f"outputs (e.g. a diverged run) or replace them before evaluating"
            )
    if _is_concrete(labels) and ldt != np.bool_:
        ok = (labels == 0) | (labels == 1)
        if not bool(ok.all()):
            bad_vals = np.unique(np.asarray(labels)[~np.asarray(ok)])[:5]
            raise ValueError(
                f"labels must contain only 0 and 1 (multi-hot), found other values such as {bad_vals.tolist()}; "
                f"binarise the label matrix (e.g. labels > 0) before evaluating"
            )

    if sdt == np.float64 and jax.dtypes.canonicalize_dtype(np.float64) == np.float64:  # x64 mode
        fdt = jnp.float64
    else:
        fdt = jnp.float32
    return jnp.asarray(scores, dtype=fdt), jnp.asarray(labels, dtype=jnp.int8)


def _canonical_zero(s):
    # -0.0 and +0.0 are the same score; lax.top_k would otherwise order -0.0 below +0.0.
    return jnp.where(s == 0, jnp.zeros_like(s), s)


# ------------------------------------------------------------------------------------------------
# ranking kernel (AP and AUC share one sort per class)
# ------------------------------------------------------------------------------------------------
def _blocked_sum(x, float_dtype):
    """Sum a 1-D array in blocks (integer blocks summed exactly), then sum the block sums in float."""
    n = x.shape[0]
    block = _SUM_BLOCK
    if jnp.issubdtype(x.dtype, jnp.integer):
        # keep every int32 block sum below 2**31: each term is at most 2 * n here
        block = max(1, min(block, (2**30) // max(n, 1)))
    nb = -(-n // block)
    x = jnp.pad(x, (0, nb * block - n))
    partial = x.reshape(nb, block).sum(axis=1)
    return partial.astype(float_dtype).sum()


def _rank_column(s, y):
    """AP and AUC of one class. s: [N] float scores, y: [N] int8 labels."""
    fdt = s.dtype
    n = s.shape[0]
    y = y.astype(jnp.int32)
    key = _canonical_zero(-s)  # ascending key = descending score
    key, y = lax.sort((key, y), dimension=0, is_stable=True, num_keys=1)
    idx = jnp.arange(n, dtype=jnp.int32)
    differs = key[1:] != key[:-1]
    true1 = jnp.ones((1,), dtype=bool)
    is_last = jnp.concatenate([differs, true1])  # last element of its tie group
    is_first = jnp.concatenate([true1, differs])  # first element of its tie group
    big = jnp.int32(n + 1)

    tp = jnp.cumsum(y, dtype=jnp.int32)  # positives ranked at or above position i
    neg = 1 - y
    fp = jnp.cumsum(neg, dtype=jnp.int32)
    num_pos = tp[-1]
    num_neg = fp[-1]

    # Values at the end of each element's tie group. tp and fp are non-decreasing, so the reverse
    # cumulative minimum over group ends picks the value at the nearest group end at or after i.
    tp_end = lax.cummin(jnp.where(is_last, tp, big), axis=0, reverse=True)
    fp_end = lax.cummin(jnp.where(is_last, fp, big), axis=0, reverse=True)
    end = lax.cummin(jnp.where(is_last, idx, big), axis=0, reverse=True)
    # negatives ranked strictly above the element's tie group
    fp_start = lax.cummax(jnp.where(is_first, fp - neg, -1), axis=0)

    # AP = sum over positives of the precision at the end of their tie group, / num_pos.
    # (= sum over distinct thresholds of (R_k - R_{k-1}) * P_k, as sklearn computes it.)
    prec_end = tp_end.astype(fdt) / (end + 1).astype(fdt)
    ap_sum = _blocked_sum(jnp.where(y == 1, prec_end, jnp.zeros_like(prec_end)), fdt)
    ap = jnp.where(num_pos > 0, ap_sum / jnp.maximum(num_pos, 1).astype(fdt), jnp.nan)

    # AUC = P(score_pos > score_neg) + 1/2 P(equal). For a positive, 2x its count of beaten negatives
    # (ties 1/2) = 2*num_neg - fp_end - fp_start (all integers, at most 2N).
    twice_wins = jnp.where(y == 1, 2 * num_neg - fp_end - fp_start, 0)
    auc_num = _blocked_sum(twice_wins, fdt)
    denom = 2.0 * num_pos.astype(fdt) * num_neg.astype(fdt)
    auc = jnp.where((num_pos > 0) & (num_neg > 0), auc_num / jnp.maximum(denom, 1.0), jnp.nan)
    return ap, auc


def _rank_metrics_xla(scores, labels):
    """Pure-XLA kernel: [N, C] float scores, [N, C] int8 labels -> (ap [C], auc [C]).

    One stable sort per class carries the labels along; classes are processed in vmapped batches
    (``lax.map``) so memory stays bounded.  Fast where XLA's sort is (GPU/TPU).
    """
    n, c = scores.shape
    batch = max(1, min(c, _RANK_BATCH_ELEMENTS // max(n, 1)))
    cols = (scores.T, labels.T)  # [C, N]: each class is one contiguous row
    if batch >= c:
        return jax.vmap(_rank_column)(*cols)
    return lax.map(lambda sy: _rank_column(*sy), cols, batch_size=batch)


def _rank_block_numpy(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Host kernel for a block of classes: s [B, N] float, y [B, N] 0/1 -> (ap [B], auc [B]) float64.

    Every (class, score, label) triple is packed into one int64, ``class << 33 | key(score) << 1 |
    label`` with ``key`` an order-preserving uint32 image of the float32 score, so one plain integer
    sort orders each class by score with tied negatives before tied positives, and the flattened
    block is globally sorted.  The counts each positive needs (examples scoring strictly below it,
    in its tie group, positives below / tied) then come from binary searches, and the sums over
    positives are exact integer or float64 sums.
    """
    b, n = s.shape
    rows = np.arange(b, dtype=np.int64)
    y = y.astype(np.int64)
    if s.dtype == np.float32:
        bits = (s + np.float32(0)).view(np.int32)  # + 0 maps -0.0 to +0.0
        # negative floats: flip all bits; non-negative: flip the sign bit -> unsigned order = float order
        ukey = (bits ^ ((bits >> 31) | np.int32(-(2**31)))).view(np.uint32)
        packed = ukey.astype(np.int64) << 1
        packed |= y
    else:  # float64 (x64 mode): rank the distinct scores first, then pack the dense rank
        order = np.lexsort((y, s), axis=1)
        ks = np.take_along_axis(s, order, axis=1)
        ys = np.take_along_axis(y, order, axis=1)
        new_value = np.ones((b, n), dtype=np.int64)
        new_value[:, 1:] = ks[:, 1:] != ks[:, :-1]
        packed = (np.cumsum(new_value, axis=1) << 1) | ys
    packed += (rows << 33)[:, None]
    packed.sort(axis=1)
    flat = packed.ravel()

    pos_at = np.flatnonzero(flat & 1)  # flat positions of the positives, ascending
    gp = flat[pos_at]  # their packed values, ascending
    prow = pos_at // n  # class (row) of each positive
    num_pos = np.bincount(prow, minlength=b)
    num_neg = n - num_pos
    group_start = np.searchsorted(flat, gp - 1, side="left")  # first element with the same score
    group_end = np.searchsorted(flat, gp, side="right")  # one past the last element with that score
    all_below = group_start - prow * n  # examples of this class scoring strictly lower
    first_pos = np.searchsorted(gp, gp, side="left")
    pos_tied = np.searchsorted(gp, gp, side="right") - first_pos
    pos_below = first_pos - np.searchsorted(gp, rows << 33, side="left")[prow]
    with np.errstate(invalid="ignore", divide="ignore"):
        # AP: each positive adds the precision at its threshold, #pos >= s / #all >= s, over num_pos
        prec = (num_pos[prow] - pos_below) / (n - all_below)
        ap = np.bincount(prow, weights=prec, minlength=b) / num_pos
        # AUC: twice the wins of a positive = 2 * negatives below + negatives tied with it
        neg_below = all_below - pos_below
        neg_tied = (group_end - group_start) - pos_tied
        twice_wins = np.bincount(prow, weights=2 * neg_below + neg_tied, minlength=b)
        auc = twice_wins / (2.0 * num_pos * num_neg)
    ap = np.where(num_pos > 0, ap, np.nan)
    auc = np.where((num_pos > 0) & (num_neg > 0), auc, np.nan)
    return ap, auc


def _rank_host_callback(scores, labels, out_dtype):
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    n, c = scores.shape
    step = max(1, min(c, _RANK_BATCH_ELEMENTS // max(n, 1)))
    blocks = [(a, min(a + step, c)) for a in range(0, c, step)]

    def run(block):
        a, b = block
        return _rank_block_numpy(np.ascontiguousarray(scores[:, a:b].T), np.ascontiguousarray(labels[:, a:b].T))

    results = [run(blk) for blk in blocks]
    ap = np.concatenate([r[0] for r in results]).astype(out_dtype)
    auc = np.concatenate([r[1] for r in results]).astype(out_dtype)
    return ap, auc


def _rank_metrics_host(scores, labels):
    """Host kernel behind ``jax.pure_callback`` (used on CPU, where XLA's sort is slow)."""
    c = scores.shape[1]
    out = jax.ShapeDtypeStruct((c,), scores.dtype)
    return jax.pure_callback(
        functools.partial(_rank_host_callback, out_dtype=np.dtype(scores.dtype)),
        (out, out),
        scores,
        labels,
        vmap_method="sequential",
    )


def _rank_metrics(scores, labels, impl: str = "auto"):
    """(ap [C], auc [C]) of [N, C] float scores and int8 labels.

    impl: "xla" (pure XLA), "host" (numpy via callback) or "auto": host on CPU, XLA elsewhere.
    Both give the same numbers (each is tested against sklearn).
    """
    if impl == "xla":
        return _rank_metrics_xla(scores, labels)
    if impl == "host":
        return _rank_metrics_host(scores, labels)
    if impl != "auto":
        raise ValueError(f"unknown ranking-metric implementation {impl!r}; use 'auto', 'xla' or 'host'")
    return lax.platform_dependent(scores, labels, cpu=_rank_metrics_host, default=_rank_metrics_xla)


_rank_metrics_jit = jax.jit(_rank_metrics, static_argnames="impl")
_ap_jit = jax.jit(lambda s, y: _rank_metrics(s, y)[0])
_auc_jit = jax.jit(lambda s, y: _rank_metrics(s, y)[1])


def average_precision(scores, labels) -> jax.Array:
    """Per-class average precision, shape [C]; NaN for a class without positives.

    Identical to ``sklearn.metrics.average_precision_score(labels[:, c], scores[:, c])`` for every
    class c: the step-wise sum over distinct score thresholds of (R_k - R_{k-1}) * P_k, with tied
    scores forming one threshold (-0.0 and +0.0 are one score).  Counts are integers and sums are
    taken blockwise (XLA) or in float64 (CPU), so the result agrees with sklearn to ~1e-6 in float32.
    """
    s, y = _check_pair(scores, labels)
    return _ap_jit(s, y)


def roc_auc(scores, labels) -> jax.Array:
    """Per-class ROC AUC, shape [C]; NaN for a class without positives or without negatives.

    Identical to ``sklearn.metrics.roc_auc_score`` per column including ties: the Mann-Whitney U
    statistic, P(score of a positive > score of a negative) with a tie counting 1/2.
    """
    s, y = _check_pair(scores, labels)
    return _auc_jit(s, y)


# ------------------------------------------------------------------------------------------------
# thresholded metrics
# ------------------------------------------------------------------------------------------------
def _f1_counts(scores, labels, threshold):
    """Per-class true positives, false positives and false negatives of ``scores >= threshold``."""
    pred = scores >= threshold
    y = labels == 1
    tp = jnp.sum(pred & y, axis=0, dtype=jnp.int32)
    npred = jnp.sum(pred, axis=0, dtype=jnp.int32)
    npos = jnp.sum(y, axis=0, dtype=jnp.int32)
    return tp, npred - tp, npos - tp


def _f1_from_counts(tp, fp, fn, fdt):
    denom = (2 * tp + fp + fn).astype(fdt)
    per_class = jnp.where(denom > 0, 2 * tp.astype(fdt) / jnp.maximum(denom, 1), 0.0)
    tp_all, denom_all = 2 * tp.astype(fdt).sum(), denom.sum()
    micro = jnp.where(denom_all > 0, tp_all / jnp.maximum(denom_all, 1), 0.0)
    return {"micro_f1": micro, "macro_f1": per_class.mean()}


def _f1(scores, labels, threshold):
    return _f1_from_counts(*_f1_counts(scores, labels, threshold), scores.dtype)


_f1_jit = jax.jit(_f1)
_f1_counts_jit = jax.jit(_f1_counts)


def f1_scores(scores, labels, threshold=0.5) -> dict[str, jax.Array]:
    """Micro and macro F1 of the predictions ``scores >= threshold``.

    Returns ``{"micro_f1", "macro_f1"}`` equal to ``sklearn.metrics.f1_score(labels, preds,
    average="micro" / "macro", zero_division=0)``: F1 = 2TP / (2TP + FP + FN), 0 where that
    denominator is 0; macro averages over all C classes.  ``threshold`` is on the scale of
    ``scores`` (0.5 for probabilities, 0.0 for logits).
    """
    s, y = _check_pair(scores, labels)
    if _is_concrete(threshold) and not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    return _f1_jit(s, y, jnp.asarray(threshold, dtype=s.dtype))


# ------------------------------------------------------------------------------------------------
# ranking metrics per example (extreme classification)
# ------------------------------------------------------------------------------------------------
def _check_k(k, num_classes: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if not 1 <= k <= num_classes:
        raise ValueError(
            f"k={k} is outside 1..{num_classes} (the number of classes); choose top-k values no larger "
            f"than the number of classes"
        )
    return k


def _topk_metrics(scores, labels, ks: tuple[int, ...]):
    """{k: (P@k, nDCG@k)} averaged over the examples with at least one positive label."""
    fdt = scores.dtype
    kmax = max(ks)
    _, top = lax.top_k(_canonical_zero(scores), kmax)  # ties: lower class index first
    hits = jnp.take_along_axis(labels, top, axis=1).astype(fdt)  # [N, kmax]
    npos = jnp.sum(labels, axis=1, dtype=jnp.int32)  # [N]
    valid = npos > 0
    nvalid = valid.sum()
    discount = 1.0 / jnp.log2(jnp.arange(2, kmax + 2, dtype=fdt))  # 1/log2(r+1), r = 1..kmax
    cum_hits = jnp.cumsum(hits, axis=1)
    cum_dcg = jnp.cumsum(hits * discount, axis=1)
    cum_disc = jnp.cumsum(discount)
    out = {}
    for k in ks:
        p = cum_hits[:, k - 1] / k
        idcg = cum_disc[jnp.clip(jnp.minimum(npos, k) - 1, 0, kmax - 1)]
        ndcg = jnp.where(valid, cum_dcg[:, k - 1] / idcg, 0.0)
        p = jnp.where(valid, p, 0.0)
        mean = lambda v: jnp.where(nvalid > 0, v.sum() / jnp.maximum(nvalid, 1), jnp.nan)
        out[k] = (mean(p), mean(ndcg))
    return out


_topk_jit = jax.jit(_topk_metrics, static_argnames="ks")


def precision_at_k(scores, labels, k: int) -> jax.Array:
    """P@k = (1/k) * (number of positives among the k highest-scored classes), mean over examples.

    Examples without any positive label are excluded from the mean (NaN if none has one).  Ties in
    the top-k are broken deterministically: among equal scores the lower class index ranks first.
    """
    s, y = _check_pair(scores, labels)
    k = _check_k(k, s.shape[1])
    return _topk_jit(s, y, ks=(k,))[k][0]


def ndcg_at_k(scores, labels, k: int) -> jax.Array:
    """nDCG@k = DCG@k / IDCG@k, mean over examples.

    DCG@k = sum_{r=1..k} y_(r) / log2(r + 1) over the classes ranked by score; IDCG@k is the same
    sum for a perfect ranking, over min(k, number of positives) terms.  Examples without any
    positive label are excluded (NaN if none has one).  Ties: lower class index ranks first.
    """
    s, y = _check_pair(scores, labels)
    k = _check_k(k, s.shape[1])
    return _topk_jit(s, y, ks=(k,))[k][1]


# ------------------------------------------------------------------------------------------------
# ODIR-5K challenge scores
# ------------------------------------------------------------------------------------------------
def odir_scores(labels, scores, threshold: float = 0.5) -> dict:
    """The official ODIR-5K evaluation (ODIR 2019 challenge, ``ODIR_Metrics``), in numpy.

    Note the argument order: ``labels`` first (as the official code's ``gt, pr``).  Labels [N, C] 0/1
    and scores [N, C] (probabilities: the threshold is on their scale) are flattened over examples
    and classes into one binary problem; with ``pred = scores > threshold`` (strictly greater):

    * ``kappa``: Cohen's kappa of the flattened labels vs ``pred`` (``sklearn.metrics.cohen_kappa_score``);
    * ``f1``: ``sklearn.metrics.f1_score(labels, pred, average="micro")`` as the official code calls it.
      On a flattened 0/1 vector sklearn's micro average counts both classes, so this number equals
      the ACCURACY of ``pred`` over all N x C entries, not the F1 of the positive class;
    * ``f1_binary``: the F1 of the positive class, 2TP / (2TP + FP + FN) (``f1_score(labels, pred)``,
      = the multi-label micro-F1 at this threshold); not part of the final score;
    * ``auc``: ROC AUC of the flattened labels vs the flattened scores (ties count 1/2, as
      ``roc_auc_score``);
    * ``final``: (kappa + f1 + auc) / 3, the challenge's final score.

    Undefined values are None: kappa when the expected disagreement is 0 (labels and predictions
    constant and equal), AUC when the labels hold only one class, final when either is undefined.
    """
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.shape != s.shape or y.ndim != 2 or y.size == 0:
        raise ValueError(
            f"odir_scores needs labels and scores of the same non-empty [N, C] shape, got {y.shape} and {s.shape}"
        )
    if not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer) or s.dtype == np.bool_):
        raise TypeError(f"scores must be a real numeric array, got dtype {s.dtype}")
    raw = s.ravel()
    s = raw.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} NaN or infinite value(s)")
    y = y.ravel()
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must contain only 0 and 1 (multi-hot)")
    y = y.astype(bool)
    c = np.asarray(scores).shape[1]
    threshold = _check_threshold(threshold, c)
    # in the scores' own dtype (numpy casts the Python float), as the official code; per-class thresholds
    # apply column by column before the flattening
    pred = raw > threshold if isinstance(threshold, float) else \
        (np.asarray(scores) > threshold[None, :].astype(np.asarray(scores).dtype)).ravel()
    n = int(y.size)
    pos, npred = int(y.sum()), int(pred.sum())
    tp = int((y & pred).sum())
    disagree = (pos - tp) + (npred - tp)  # FN + FP
    # kappa = 1 - observed / expected disagreement; expected count = (pos * (n - npred) + (n - pos) * npred) / n
    expected = pos * (n - npred) + (n - pos) * npred
    kappa = 1.0 - n * disagree / expected if expected > 0 else None
    f1 = 1.0 - disagree / n
    f1_binary = 2 * tp / (2 * tp + disagree) if (2 * tp + disagree) > 0 else 0.0
    neg = n - pos
    if pos and neg:
        _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        mid_rank = (ends - counts + 1 + ends) / 2.0  # 1-based mean rank of each distinct score
        rank_sum = float(mid_rank[inverse.ravel()][y].sum())
        auc = (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)
    else:
        auc = None
    final = (kappa + f1 + auc) / 3.0 if kappa is not None and auc is not None else None
    return {
        "kappa": kappa, "f1": f1, "auc": auc, "final": final, "f1_binary": f1_binary,
        "threshold": threshold if isinstance(threshold, float) else [float(t) for t in threshold],
    }


# ------------------------------------------------------------------------------------------------
# the full report
# ------------------------------------------------------------------------------------------------
def _check_threshold(threshold, num_classes: int):
    """A finite float, or a finite per-class float array of shape [C] (e.g. tuned on a validation split)."""
    if np.ndim(threshold) == 0:
        t = float(threshold)
        if not math.isfinite(t):
            raise ValueError(f"threshold must be a finite number, got {threshold}")
        return t
    t = np.asarray(threshold, np.float64)
    if t.shape != (num_classes,) or not np.isfinite(t).all():
        raise ValueError(f"per-class thresholds must be {num_classes} finite numbers, got shape {t.shape}")
    return t


def _opt_float(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _mean_or_none(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def _count_value(x):
    x = float(x)
    return int(x) if x.is_integer() else x


def evaluate(
    scores,
    labels,
    groups: ClassGroups,
    class_counts,
    class_names: Sequence[str],
    threshold: float = 0.5,
    top_k: Sequence[int] = (1, 3, 5),
) -> dict:
    """Evaluate scores against multi-hot labels under the long-tail protocol (REFERENCE section 1).

    Args:
      scores: [N, C] scores (probabilities if ``threshold`` is 0.5).
      labels: [N, C] multi-hot test labels.
      groups: the head / medium / tail partition of the C classes (``ltjax.data.groups``).
      class_counts: [C] training counts n_c (reported per class as ``n_train``).
      class_names: C class names.
      threshold: decision threshold for micro/macro F1, on the scale of ``scores``.
      top_k: the k of P@k and nDCG@k.

    Returns a JSON-serialisable dict of plain Python values, fractions in [0, 1]:
      ``mAP`` mean AP over all classes with at least one test positive (not the mean of the group
      means; None if no class has one); ``group_mAP`` {group: mean AP over its classes with test
      positives, or None}; ``group_sizes`` {group: number of classes}; ``group_rule``;
      ``excluded_classes`` names of classes without test positives; ``per_class`` a list of
      {name, index, n_train, group, ap, auc, num_test_pos} (None where undefined); ``auc_macro``
      mean AUC over classes where it is defined; ``micro_f1``, ``macro_f1``, ``threshold``; ``mACC`` the
      mean over classes of the accuracy (TP + TN) / N at the threshold (per class: ``acc``);
      ``P@k`` / ``nDCG@k`` for each k (examples without positives excluded); ``top_k``;
      ``num_examples``; ``num_classes``.
    """
    s, y = _check_pair(scores, labels)
    n, c = s.shape
    if not isinstance(groups, ClassGroups):
        raise TypeError(f"groups must be a ltjax.data.groups.ClassGroups, got {type(groups).__name__}")
    if groups.num_classes != c:
        raise ValueError(
            f"groups cover {groups.num_classes} classes but scores/labels have {c}; build the groups from "
            f"the class counts of this dataset"
        )
    counts = np.asarray(class_counts)
    if counts.shape != (c,):
        raise ValueError(f"class_counts must have shape ({c},) (one training count per class), got {counts.shape}")
    if not (np.issubdtype(counts.dtype, np.number) and np.all(np.isfinite(counts)) and np.all(counts >= 0)):
        raise ValueError("class_counts must be finite non-negative numbers (training examples per class)")
    names = [str(x) for x in class_names]
    if len(names) != c:
        raise ValueError(f"class_names has {len(names)} entries but there are {c} classes")
    ks = tuple(_check_k(k, c) for k in top_k)
    if len(set(ks)) != len(ks):
        raise ValueError(f"top_k has repeated values: {tuple(top_k)}")
    threshold = _check_threshold(threshold, c)

    ap, auc = (np.asarray(a, dtype=np.float64) for a in _rank_metrics_jit(s, y))
    tp, fp, fn = _f1_counts_jit(s, y, jnp.asarray(threshold, dtype=s.dtype))
    f1 = {key: float(v) for key, v in _f1_from_counts(tp, fp, fn, s.dtype).items()}
    num_pos = np.asarray(tp + fn)
    # per-class accuracy at the threshold: (TP + TN) / N (LDRNet's mACC is its mean over the classes)
    acc = (n - np.asarray(fp, np.int64) - np.asarray(fn, np.int64)) / max(n, 1)
    rank = _topk_jit(s, y, ks=ks) if ks else {}

    group_of = groups.assignment()
    has_pos = num_pos > 0
    report = {
        "mAP": _mean_or_none(ap[has_pos]),
        "group_mAP": {name: _mean_or_none(ap[np.asarray(idx, dtype=np.int64)]) for name, idx in zip(groups.names, groups.indices)},
        "group_sizes": {name: int(size) for name, size in groups.sizes().items()},
        "group_rule": groups.rule,
        "excluded_classes": [names[i] for i in np.flatnonzero(~has_pos)],
        "per_class": [
            {
                "name": names[i],
                "index": i,
                "n_train": _count_value(counts[i]),
                "group": groups.names[int(group_of[i])],
                "ap": _opt_float(ap[i]),
                "auc": _opt_float(auc[i]),
                "num_test_pos": int(num_pos[i]),
                "acc": float(acc[i]),
            }
            for i in range(c)
        ],
        "auc_macro": _mean_or_none(auc),
        "micro_f1": f1["micro_f1"],
        "macro_f1": f1["macro_f1"],
        "mACC": float(acc.mean()) if c else None,
        "threshold": threshold if isinstance(threshold, float) else [float(t) for t in threshold],
    }
    for k in ks:
        report[f"P@{k}"] = _opt_float(rank[k][0])
    for k in ks:
        report[f"nDCG@{k}"] = _opt_float(rank[k][1])
    report["top_k"] = list(ks)
    report["num_examples"] = int(n)
    report["num_classes"] = int(c)
    return report
