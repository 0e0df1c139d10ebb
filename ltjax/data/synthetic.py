"""``synthetic_lt``: a seeded, vectorised generator of long-tailed multi-label problems of any size.

Class prevalences (fraction of examples holding the class) follow the Pareto profile of the DB-loss
long-tail construction (REFERENCE section 1): with ``b = pareto_shape`` and ``C`` points
``x_c = linspace(1, 100 ** (1 / b), C)`` (the Pareto ppf at 0 and 0.99), ``pdf(x) = b * x ** -(b + 1)``,
the target prevalence is ``p_c = min_prevalence + (max_prevalence - min_prevalence) * pdf(x_c) / b``,
decreasing from ``max_prevalence`` (class 0) to about ``min_prevalence`` (class C-1).

Labels (per example, independently; train and test from the same distribution).  Classes are dealt
round-robin, in a seeded random order, to ``K`` latent topics.  With latent prevalences ``q_c = a * p_c``
and ``rho = cooccurrence``, class ``c`` gets ``u_c = rho * q_c`` of its prevalence through its topic and
the rest from independent background noise:

* topic ``t`` is active with probability ``pi_t = max_{c in t} u_c``; when it is, each of its classes is
  on with probability ``u_c / pi_t`` (so the most frequent class of a topic is a parent that every active
  topic turns on, and the others behave like its children: they co-occur with it and with each other);
* independently, class ``c`` is on with probability ``g_c = (q_c - u_c) / (1 - u_c)``, so P(on) = ``q_c``;
* an example left with no label receives one class drawn with probability ``p_c / sum(p)``.

``rho = 0`` gives independent labels; larger ``rho`` more co-occurrence within topics.  The scale
``a`` in (0, 1] solves ``a + P(no latent label) / sum(p) = 1`` (closed form for P, bisection for ``a``),
which makes the expected prevalence of every class exactly ``p_c``.  That needs ``sum(p) >= 1`` (every
example has >= 1 label, so the prevalences must sum to >= 1); otherwise ``a = 1`` and every prevalence is
scaled up by the same factor, with a warning (``expected_prevalences`` gives the result).

Features: ``x = sum over the example's classes of mu_c + noise * N(0, I)``, with class means
``mu_c ~ class_separation * N(0, I_F)``.  A class with no training positive gets one (a random training
example receives it, and its features include the class mean); a class with no test positive triggers a
warning.

The Bernoulli draws are sparse (geometric skips within bands of similar probability), so the cost grows
with the number of positives, not with examples x classes.  Everything derives from ``seed`` through
``numpy.random.SeedSequence(seed).spawn``, in row chunks whose size depends only on C, so the arrays
depend only on the config.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import ml_collections
import numpy as np

from ltjax.data.base import DATASETS, ArraySplit, Dataset, make_meta

NAME = "synthetic_lt"
_LABEL_CHUNK = 1 << 20  # label rows per chunk = this // num_classes (keeps a label chunk in cache)
_FEATURE_CHUNK = 1 << 23  # feature rows per chunk = this // num_classes (large blocks for the matmul)
_DENSE_ABOVE = 0.25  # Bernoulli probabilities above this are drawn densely, the rest by geometric skips


def default_config() -> ml_collections.ConfigDict:
    """The synthetic_lt fields of ``config.data``."""
    c = ml_collections.ConfigDict()
    c.num_train = 4000  # training examples
    c.num_test = 2000  # test examples (same distribution)
    c.num_val = 0  # validation examples (same distribution; 0: no "val" split)
    c.num_classes = 20
    c.num_features = 64
    c.pareto_shape = 6.0  # b of the Pareto pdf that shapes the prevalence profile
    c.max_prevalence = 0.4  # prevalence of the most frequent class
    c.min_prevalence = 0.001  # (about) the prevalence of the rarest class
    c.cooccurrence = 0.5  # in [0, 1]: share of each class's prevalence that comes through its topic
    c.num_topics = 0  # latent topics the classes are dealt to; 0: ceil(num_classes / 4)
    c.noise = 1.0  # std of the Gaussian feature noise
    c.class_separation = 0.2  # std of the entries of the class mean vectors (0.2: a linear probe is far from perfect)
    c.seed = 0
    return c


def target_prevalences(num_classes: int, max_prevalence: float, min_prevalence: float, pareto_shape: float):
    """The Pareto prevalence profile ``p_c`` [C], float64, non-increasing (see the module docstring)."""
    b = float(pareto_shape)
    x = np.linspace(1.0, 100.0 ** (1.0 / b), int(num_classes))
    return min_prevalence + (max_prevalence - min_prevalence) * x ** -(b + 1.0)


@dataclasses.dataclass(frozen=True)
class SyntheticData:
    """The generated arrays and the parameters that produced them."""

    train_inputs: np.ndarray  # float32 [num_train, F]
    train_labels: np.ndarray  # float32 [num_train, C] multi-hot
    test_inputs: np.ndarray  # float32 [num_test, F]
    test_labels: np.ndarray  # float32 [num_test, C]
    val_inputs: np.ndarray  # float32 [num_val, F] (num_val 0: empty)
    val_labels: np.ndarray  # float32 [num_val, C]
    target_prevalences: np.ndarray  # p_c from the config
    expected_prevalences: np.ndarray  # E[label] per class (= target unless sum(p) < 1)
    latent_scale: float  # a: the latent prevalences are a * p_c
    topics: np.ndarray  # int [C]: topic of every class
    class_means: np.ndarray  # float32 [C, F]
    forced_train_positives: tuple[int, ...]  # classes whose only training positive was added by the fix


# ---- config ---------------------------------------------------------------------------------


def _resolve(data_cfg) -> dict:
    defaults = default_config()
    cfg = {k: (data_cfg[k] if k in data_cfg else defaults[k]) for k in defaults.keys()}

    def integer(key, lo):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"synthetic_lt: {key} must be an integer >= {lo}, got {v!r}")
        return int(v)

    def real(key, lo, hi, lo_open=False):
        v = cfg[key]
        ok = isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > lo if lo_open else v >= lo) and v <= hi
        if not ok:
            bracket = "(" if lo_open else "["
            raise ValueError(f"synthetic_lt: {key} must be a number in {bracket}{lo}, {hi}], got {v!r}")
        return float(v)

    out = {
        "num_train": integer("num_train", 1),
        "num_test": integer("num_test", 1),
        "num_val": integer("num_val", 0),
        "num_classes": integer("num_classes", 1),
        "num_features": integer("num_features", 1),
        "num_topics": integer("num_topics", 0),
        "seed": integer("seed", 0),
        "pareto_shape": real("pareto_shape", 0.0, math.inf, lo_open=True),
        "max_prevalence": real("max_prevalence", 0.0, 1.0, lo_open=True),
        "min_prevalence": real("min_prevalence", 0.0, 1.0, lo_open=True),
        "cooccurrence": real("cooccurrence", 0.0, 1.0),
        "noise": real("noise", 0.0, math.inf),
        "class_separation": real("class_separation", 0.0, math.inf),
    }
    if out["min_prevalence"] > out["max_prevalence"]:
        raise ValueError(
            f"synthetic_lt: min_prevalence ({out['min_prevalence']}) must not exceed max_prevalence "
            f"({out['max_prevalence']}); swap them or lower min_prevalence"
        )
    if out["num_topics"] > out["num_classes"]:
        raise ValueError(
            f"synthetic_lt: num_topics ({out['num_topics']}) exceeds num_classes ({out['num_classes']}); "
            "use at most one topic per class, or 0 for the default"
        )
    if out["num_topics"] == 0:
        out["num_topics"] = math.ceil(out["num_classes"] / 4)
    return out


# ---- the label model ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _LabelModel:
    topic_prob: np.ndarray  # pi_t [K]
    member_prob: np.ndarray  # u_c / pi_t [C]
    background_prob: np.ndarray  # g_c [C]
    prob_empty: float  # P(no latent label)


def _label_model(q: np.ndarray, topics: np.ndarray, num_topics: int, rho: float) -> _LabelModel:
    u = rho * q
    pi = np.zeros(num_topics)
    np.maximum.at(pi, topics, u)
    pi_c = pi[topics]
    h = np.divide(u, pi_c, out=np.zeros_like(u), where=pi_c > 0)
    g = np.divide(q - u, 1.0 - u, out=np.zeros_like(u), where=u < 1.0)
    g = np.clip(g, 0.0, 1.0)
    h = np.clip(h, 0.0, 1.0)
    # P(no label of topic t via the topic) = 1 - pi_t + pi_t * prod_{c in t} (1 - h_c)
    none_given_active = np.ones(num_topics)
    np.multiply.at(none_given_active, topics, 1.0 - h)
    p_topics = np.prod(1.0 - pi + pi * none_given_active)
    p_background = np.prod(1.0 - g)
    return _LabelModel(pi, h, g, float(p_topics * p_background))


def _latent_scale(p: np.ndarray, topics: np.ndarray, num_topics: int, rho: float) -> float:
    """The scale ``a`` that makes the expected prevalences (latent plus fill) equal ``p``."""
    total = float(p.sum())
    if total <= 1.0:
        return 1.0
    lo, hi = 0.0, 1.0  # g(a) = a + P0(a) / total - 1 is non-decreasing, g(0) <= 0 <= g(1)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid + _label_model(mid * p, topics, num_topics, rho).prob_empty / total < 1.0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-14:
            break
    return 0.5 * (lo + hi)


class _BernoulliPlan:
    """Draws the ones of an [m, n] matrix of independent Bernoulli(probs[j]) entries, sparsely.

    Columns are grouped into bands ``(2^-(k+1), 2^-k]``; a band above ``_DENSE_ABOVE`` is drawn with one
    uniform per entry, the others as a Bernoulli(2^-k) process over the band's row-major entries
    (geometric skips) thinned by ``probs[j] / 2^-k`` (>= 1/2), so the work is about twice the ones.
    """

    def __init__(self, probs: np.ndarray):
        probs = np.asarray(probs, dtype=np.float64)
        self.bands = []
        positive = probs > 0
        band = np.full(len(probs), -1, dtype=np.int64)
        band[positive] = np.floor(-np.log2(probs[positive])).astype(np.int64)
        for k in np.unique(band[positive]):
            cols = np.flatnonzero(band == k)
            rate = 2.0 ** -float(k)
            if rate > _DENSE_ABOVE:
                self.bands.append(("dense", cols, probs[cols].astype(np.float32), None))
            else:
                self.bands.append(("sparse", cols, probs[cols] / rate, rate))

    def sample(self, rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = [], []
        for kind, band_cols, p, rate in self.bands:
            if kind == "dense":
                r, j = np.nonzero(rng.random((m, len(band_cols)), dtype=np.float32) < p)
            else:
                pos = _bernoulli_process(rng, m * len(band_cols), rate)
                r, j = np.divmod(pos, len(band_cols))
                keep = rng.random(len(pos)) < p[j]
                r, j = r[keep], j[keep]
            rows.append(r)
            cols.append(band_cols[j])
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(rows), np.concatenate(cols)


def _bernoulli_process(rng: np.random.Generator, length: int, rate: float) -> np.ndarray:
    """Sorted positions in [0, length) of a Bernoulli(rate) process, from geometric gaps."""
    if rate >= 1.0:
        return np.arange(length)
    scale = -1.0 / math.log1p(-rate)  # gap - 1 = floor(E * scale), E ~ Exp(1), is Geometric(rate) - 1
    parts, last = [], -1
    while True:
        remaining = length - 1 - last
        k = int(remaining * rate + 6.0 * math.sqrt(remaining * rate) + 16)
        gaps = np.minimum(rng.standard_exponential(k) * scale, float(length)).astype(np.int64) + 1
        pos = last + np.cumsum(gaps)
        if pos[-1] >= length:
            parts.append(pos[pos < length])
            return np.concatenate(parts)
        parts.append(pos)
        last = int(pos[-1])


def _generate_split(rng, n, model, topics, num_topics, fill_cdf, means, noise, noise_rng):
    """Labels float32 [n, C] and features float32 [n, F], chunk by chunk, plus per-class positive counts."""
    num_classes, num_features = len(topics), means.shape[1]
    labels = np.empty((n, num_classes), dtype=np.float32)  # zeroed chunk by chunk (sequential first touch)
    features = np.empty((n, num_features), dtype=np.float32)
    has_positive = np.zeros(num_classes, dtype=bool)
    background = _BernoulliPlan(model.background_prob)
    topic_plan = _BernoulliPlan(model.topic_prob)
    # topic -> member classes, padded with -1 (round-robin dealing: sizes differ by at most one)
    order = np.argsort(topics, kind="stable")
    sizes = np.bincount(topics, minlength=num_topics)
    members = np.full((num_topics, max(1, int(sizes.max()))), -1, dtype=np.int64)
    slot = np.arange(num_classes) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    members[topics[order], slot] = order
    member_prob = np.where(members >= 0, model.member_prob[np.maximum(members, 0)], 0.0)

    rows_per_chunk = max(1, _LABEL_CHUNK // num_classes)
    for start in range(0, n, rows_per_chunk):
        m = min(rows_per_chunk, n - start)
        r, c = background.sample(rng, m)
        tr, tt = topic_plan.sample(rng, m)
        if len(tr):
            on = rng.random((len(tr), members.shape[1])) < member_prob[tt]
            i, s = np.nonzero(on)
            r, c = np.concatenate([r, tr[i]]), np.concatenate([c, members[tt[i], s]])
        empty = np.flatnonzero(np.bincount(r, minlength=m) == 0)
        fill = np.minimum(np.searchsorted(fill_cdf, rng.random(len(empty)), side="right"), num_classes - 1)
        r, c = np.concatenate([r, empty]), np.concatenate([c, fill])
        chunk = labels[start : start + m]
        chunk.fill(0.0)
        chunk.reshape(-1)[r * num_classes + c] = 1.0
        has_positive[c] = True

    rows_per_chunk = max(1, _FEATURE_CHUNK // max(num_classes, num_features))
    for start in range(0, n, rows_per_chunk):
        stop = min(start + rows_per_chunk, n)
        x = labels[start:stop] @ means
        if noise > 0.0:
            x += np.float32(noise) * noise_rng.standard_normal((stop - start, num_features), dtype=np.float32)
        features[start:stop] = x
    return labels, features, has_positive


def generate(data_cfg) -> SyntheticData:
    """Generate the train and test arrays of ``data_cfg`` (the synthetic_lt fields; absent ones default)."""
    cfg = _resolve(data_cfg)
    C, K, rho = cfg["num_classes"], cfg["num_topics"], cfg["cooccurrence"]
    p = target_prevalences(C, cfg["max_prevalence"], cfg["min_prevalence"], cfg["pareto_shape"])

    # the 4th child is the val split's: the first three (and so train and test) are those of spawn(3)
    params_ss, train_ss, test_ss, val_ss = np.random.SeedSequence(cfg["seed"]).spawn(4)
    params = np.random.default_rng(params_ss)
    topics = np.empty(C, dtype=np.int64)
    topics[params.permutation(C)] = np.arange(C) % K
    means = (params.standard_normal((C, cfg["num_features"])) * cfg["class_separation"]).astype(np.float32)

    total = float(p.sum())
    a = _latent_scale(p, topics, K, rho)
    model = _label_model(a * p, topics, K, rho)
    expected = a * p + model.prob_empty * p / total
    if total < 1.0:
        warnings.warn(
            f"synthetic_lt: the target prevalences sum to {total:.3f} < 1, but every example has at least one "
            f"label, so all prevalences are scaled up by {expected[0] / p[0]:.3f} (max {expected[0]:.3f}); "
            "raise max_prevalence, min_prevalence or num_classes to get the target profile exactly",
            stacklevel=2,
        )
    fill_cdf = np.cumsum(p / total)

    splits = {}
    forced: list[int] = []
    plan = [("train", train_ss, cfg["num_train"]), ("test", test_ss, cfg["num_test"])]
    if cfg["num_val"]:
        plan.append(("val", val_ss, cfg["num_val"]))
    for split, ss, n in plan:
        label_ss, noise_ss, fix_ss = ss.spawn(3)
        y, x, has_positive = _generate_split(
            np.random.default_rng(label_ss), n, model, topics, K, fill_cdf, means, cfg["noise"],
            np.random.default_rng(noise_ss),
        )
        missing = np.flatnonzero(~has_positive)
        if split == "train" and missing.size:
            rows = np.random.default_rng(fix_ss).integers(n, size=missing.size)
            y[rows, missing] = 1.0
            np.add.at(x, rows, means[missing])  # the features of a positive include the class mean
            forced = missing.tolist()
        elif split == "test" and missing.size:
            warnings.warn(
                f"synthetic_lt: {missing.size} class(es) have no positive in the test split (classes "
                f"{missing[:10].tolist()}{'...' if missing.size > 10 else ''}); the evaluator will exclude "
                "them. Raise num_test or min_prevalence to give every class test positives",
                stacklevel=2,
            )
        splits[split] = (x, y)

    val = splits.get("val", (np.zeros((0, cfg["num_features"]), np.float32), np.zeros((0, C), np.float32)))
    return SyntheticData(
        train_inputs=splits["train"][0],
        train_labels=splits["train"][1],
        test_inputs=splits["test"][0],
        test_labels=splits["test"][1],
        val_inputs=val[0],
        val_labels=val[1],
        target_prevalences=p,
        expected_prevalences=expected,
        latent_scale=float(a),
        topics=topics,
        class_means=means,
        forced_train_positives=tuple(forced),
    )


def build(data_cfg) -> Dataset:
    """The synthetic_lt :class:`Dataset` with splits ``train`` and ``test`` (and ``val`` with ``num_val`` > 0)."""
    cfg = _resolve(data_cfg)
    data = generate(data_cfg)
    width = len(str(cfg["num_classes"] - 1))
    class_names = tuple(f"class_{c:0{width}d}" for c in range(cfg["num_classes"]))
    info = {
        "source": "synthetic_lt generator (ltjax.data.synthetic)",
        "config": cfg,
        "split_rule": "train and test drawn independently from the same distribution "
        "(SeedSequence(seed).spawn: parameters, train, test)",
        "seed": cfg["seed"],
        "sizes": {"train": cfg["num_train"], "test": cfg["num_test"], **({"val": cfg["num_val"]} if cfg["num_val"] else {})},
        "target_prevalences": [float(v) for v in data.target_prevalences],
        "expected_prevalences": [float(v) for v in data.expected_prevalences],
        "latent_scale": data.latent_scale,
        "topics": [int(t) for t in data.topics],
        "forced_train_positives": list(data.forced_train_positives),
    }
    meta = make_meta(
        NAME,
        class_names,
        data.train_labels,
        data_cfg.groups,
        input_shape=(cfg["num_features"],),
        input_kind="features",
        info=info,
    )
    splits = {"train": ArraySplit(data.train_inputs, data.train_labels),
              "test": ArraySplit(data.test_inputs, data.test_labels)}
    if cfg["num_val"]:
        splits["val"] = ArraySplit(data.val_inputs, data.val_labels)
    return Dataset(meta=meta, splits=splits)


DATASETS.register(NAME)(build)
