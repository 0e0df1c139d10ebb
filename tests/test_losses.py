"""Tests of ltjax.losses.

Every loss is checked against an independent float64 NumPy implementation written here from the
formulas (values, and gradients by central finite differences of the NumPy implementation), its
reductions to BCE, the mask of known labels, jit tracing, numerical safety at extreme logits and in
bf16, and the config-facing errors.
"""
from __future__ import annotations

import functools
import types

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ltjax import losses as L

B, C = 5, 6
N_TRAIN = 400
COUNTS = np.array([300.0, 120.0, 45.0, 20.0, 6.0, 1.0])
STATS = L.ClassStats(COUNTS, N_TRAIN)
SEEDS = (0, 1, 2)


# --------------------------------------------------------------------------------------------------
# Independent NumPy (float64) implementations, written from the formulas
# --------------------------------------------------------------------------------------------------
def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_bce(z, y):
    # -[y log p + (1 - y) log(1 - p)] with log p = -log(1 + e^{-z}), log(1 - p) = -log(1 + e^{z})
    return y * np.logaddexp(0.0, -z) + (1 - y) * np.logaddexp(0.0, z)


def np_mean(v, m):
    return v.mean() if m is None else v[m].sum() / max(m.sum(), 1)


def np_sum(v, m):
    return v.sum() if m is None else v[m].sum()


def known_labels(y, m):
    return y if m is None else np.where(m, y, 0.0)


def ref_bce(z, y, m, hp):
    return np_mean(np_bce(z, known_labels(y, m)), m)


def ref_rw(z, y, m, hp):
    w = N_TRAIN / COUNTS
    if hp.get("mode", "inv") == "sqrt_inv":
        w = np.sqrt(w)
    norm = hp.get("normalize", "none")
    if norm == "mean":
        w = w / w.mean()
    elif norm == "max":
        w = w / w.max()
    y = known_labels(y, m)
    return np_mean(w[None, :] * np_bce(z, y), m)


def ref_focal(z, y, m, hp):
    gamma, balance = hp.get("gamma", 2.0), hp.get("balance", 2.0)
    y = known_labels(y, m)
    p = sig(z)
    p_t = np.where(y == 1, p, 1 - p)
    return np_mean(balance * (1 - p_t) ** gamma * np_bce(z, y), m)


def ref_cb(z, y, m, hp):
    beta, mode = hp.get("beta", 0.9), hp.get("mode", "average_w")
    gamma, balance = hp.get("gamma", 0.0), hp.get("balance", 1.0)
    y = known_labels(y, m)

    def eff(n):  # (1 - beta) / (1 - beta^n)
        return (1 - beta) / (1 - beta**n)

    w = np.zeros_like(z)
    for k in range(z.shape[0]):
        pos = [c for c in range(z.shape[1]) if y[k, c] == 1]
        for c in range(z.shape[1]):
            if mode == "by_class":
                w[k, c] = eff(COUNTS[c])
            elif not pos:
                w[k, c] = 1 - beta  # an example without positives: infinitely frequent class
            elif mode == "average_w":
                w[k, c] = np.mean([eff(COUNTS[j]) for j in pos])
            elif mode == "average_n":
                w[k, c] = eff(np.mean([COUNTS[j] for j in pos]))
            elif mode == "min_n":
                w[k, c] = eff(min(COUNTS[j] for j in pos))
    p = sig(z)
    p_t = np.where(y == 1, p, 1 - p)
    return np_mean(balance * (1 - p_t) ** gamma * w * np_bce(z, y), m)


def ref_db(z, y, m, hp):
    h = dict(rebalance=True, alpha=0.1, beta=10.0, mu=0.3, ntr=True, kappa=0.05, lam=5.0, focal=True,
             gamma=2.0, balance=2.0)
    h.update(hp)
    y = known_labels(y, m)
    out = np.zeros_like(z)
    for k in range(z.shape[0]):
        denom = sum(1 / COUNTS[j] for j in range(z.shape[1]) if y[k, j] == 1)
        for c in range(z.shape[1]):
            if not h["rebalance"]:
                w = 1.0
            elif denom == 0:
                w = h["alpha"] + 1.0
            else:
                r = (1 / COUNTS[c]) / denom
                w = h["alpha"] + sig(h["beta"] * (r - h["mu"]))
            zz = z[k, c]
            if h["ntr"]:
                zz = zz - h["kappa"] * np.log(N_TRAIN / COUNTS[c] - 1) / h["lam"]
                if y[k, c] == 0:
                    zz, w = h["lam"] * zz, w / h["lam"]
            bce = float(np_bce(np.array(zz), np.array(y[k, c])))
            loss = w * bce
            if h["focal"]:
                loss = h["balance"] * (1 - np.exp(-bce)) ** h["gamma"] * loss
            out[k, c] = loss
    return np_mean(out, m)


def ref_asl(z, y, m, hp, z_factor=None):
    gp, gn = hp.get("gamma_pos", 0.0), hp.get("gamma_neg", 4.0)
    clip, eps = hp.get("clip", 0.05), hp.get("eps", 1e-8)
    y = known_labels(y, m)
    p = sig(z)
    p_m = np.maximum(p - clip, 0.0)
    pf = sig(z if z_factor is None else z_factor)  # focusing factors at fixed logits: no gradient
    pf_m = np.maximum(pf - clip, 0.0)
    pos = (1 - pf) ** gp * np.log(np.maximum(p, eps))
    neg = pf_m**gn * np.log(np.maximum(1 - p_m, eps))
    return np_sum(-(y * pos + (1 - y) * neg), m)


def ref_ldam(z, y, m, hp):
    max_m, s = hp.get("max_m", 0.5), hp.get("s", 30.0)
    margins = COUNTS**-0.25
    margins = max_m * margins / margins.max()
    y = known_labels(y, m)
    return np_mean(np_bce(s * (z - margins[None, :] * y), y), m)


def ref_zlpr(z, y, m, hp):
    known = np.ones_like(z, bool) if m is None else m
    total, rows = 0.0, 0
    for k in range(z.shape[0]):
        if not known[k].any():
            continue
        neg = [z[k, c] for c in range(z.shape[1]) if known[k, c] and y[k, c] == 0]
        pos = [z[k, c] for c in range(z.shape[1]) if known[k, c] and y[k, c] == 1]
        total += np.log(1 + np.sum(np.exp(neg))) + np.log(1 + np.sum(np.exp(-np.array(pos))))
        rows += 1
    return total / max(rows, 1)


def ref_gce(z, y, m, hp):
    q = hp.get("q", 0.8)
    y = known_labels(y, m)
    p = sig(z)
    p_t = np.where(y == 1, p, 1 - p)
    return np_mean((1 - p_t**q) / q, m)


REFS = dict(bce=ref_bce, rw=ref_rw, focal=ref_focal, cb=ref_cb, db=ref_db, asl=ref_asl, ldam=ref_ldam,
            zlpr=ref_zlpr, gce=ref_gce)

# (loss name, hyper-parameters): the defaults of every loss plus the variants that change the code path
CASES = [
    ("bce", {}),
    ("rw", {}),
    ("rw", {"mode": "sqrt_inv", "normalize": "mean"}),
    ("rw", {"normalize": "max"}),
    ("focal", {}),
    ("focal", {"gamma": 1.5, "balance": 1.0}),
    ("cb", {}),
    ("cb", {"mode": "by_class"}),
    ("cb", {"mode": "average_n"}),
    ("cb", {"mode": "min_n", "beta": 0.99}),
    ("cb", {"gamma": 2.0, "balance": 2.0}),  # CB-focal
    ("db", {}),  # DB-focal
    ("db", {"focal": False}),  # R-BCE-NTR
    ("db", {"ntr": False, "focal": False}),  # R-BCE
    ("db", {"rebalance": False}),
    ("db", {"mu": 0.2, "lam": 2.0}),  # COCO-LT setting
    ("asl", {}),
    ("asl", {"gamma_pos": 1.0}),
    ("asl", {"clip": 0.0, "gamma_pos": 0.5, "gamma_neg": 2.0}),
    ("ldam", {}),
    ("ldam", {"max_m": 0.3, "s": 10.0}),
    ("zlpr", {}),
    ("gce", {}),
    ("gce", {"q": 0.3}),
]
CASE_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in hp.items()) or 'default'}" for n, hp in CASES]
DEFAULT_CASES = [(name, {}) for name in L.LOSSES.names()]


def make_batch(seed, with_mask=False, scale=2.0):
    """float32-representable logits, labels with one all-negative row, optional mask (~70% known)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, scale, (B, C)).astype(np.float32).astype(np.float64)
    y = (rng.random((B, C)) < 0.4).astype(np.float64)
    y[0] = 0.0  # an example without positives exercises the CB / DB fallbacks
    y[1, -1] = 1.0  # the rarest class is positive somewhere
    m = None
    if with_mask:
        m = rng.random((B, C)) < 0.7
        m[2] = True
        m[3, :] = False  # an example with no known label
    return z, y, m


def finite_diff(f, z, h=1e-5):
    g = np.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        g[idx] = (f(zp) - f(zm)) / (2 * h)
    return g


def value_and_grad_fn(name, hp, stats=STATS):
    """jit(value_and_grad) of loss ``name`` w.r.t. the logits; shared between tests when stats is STATS
    (compilation dominates this file's run time)."""
    if stats is STATS:
        return _shared_value_and_grad(name, tuple(sorted(hp.items())))
    return _value_and_grad(name, hp, stats)


def _value_and_grad(name, hp, stats):
    def f(z, y, m):
        return L.compute_loss(name, z, y, m, stats, hp)

    return jax.jit(jax.value_and_grad(f))


@functools.lru_cache(maxsize=None)
def _shared_value_and_grad(name, hp_items):
    return _value_and_grad(name, dict(hp_items), STATS)


# --------------------------------------------------------------------------------------------------
# Against the NumPy implementations
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_mask", [False, True], ids=["all-known", "masked"])
@pytest.mark.parametrize("name,hp", CASES, ids=CASE_IDS)
def test_matches_numpy_value_and_gradient(name, hp, with_mask):
    ref = REFS[name]
    vg = value_and_grad_fn(name, hp)
    for seed in SEEDS:
        z, y, m = make_batch(seed, with_mask)
        value, grad = vg(jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32), None if m is None else jnp.asarray(m))
        assert value.dtype == jnp.float32 and value.shape == ()
        expected = ref(z, y, m, hp)
        np.testing.assert_allclose(float(value), expected, rtol=3e-5, atol=1e-6, err_msg=f"value, seed {seed}")
        expected_grad = finite_diff(lambda zz: ref(zz, y, m, hp), z)
        scale = np.abs(expected_grad).max()
        assert scale > 0
        np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=2e-3, atol=2e-4 * scale,
                                   err_msg=f"gradient, seed {seed}")
        if m is not None:
            assert np.all(np.asarray(grad)[~m] == 0.0)


def test_asl_focal_factor_without_gradient_matches_numpy():
    hp = {"gamma_pos": 1.0, "focal_grad": False}
    vg = value_and_grad_fn("asl", hp)
    vg_carry = value_and_grad_fn("asl", {"gamma_pos": 1.0})
    for seed in SEEDS:
        z, y, m = make_batch(seed, with_mask=True)
        args = (jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32), jnp.asarray(m))
        value, grad = vg(*args)
        value_carry, grad_carry = vg_carry(*args)
        # same value, different gradient: the factor is a constant of the backward pass only
        np.testing.assert_allclose(float(value), float(value_carry), rtol=1e-6)
        np.testing.assert_allclose(float(value), ref_asl(z, y, m, hp), rtol=3e-5)
        expected = finite_diff(lambda zz: ref_asl(zz, y, m, hp, z_factor=z), z)
        np.testing.assert_allclose(np.asarray(grad), expected, rtol=2e-3, atol=2e-4 * np.abs(expected).max())
        assert np.abs(np.asarray(grad) - np.asarray(grad_carry)).max() > 1e-3


# --------------------------------------------------------------------------------------------------
# Reductions to BCE
# --------------------------------------------------------------------------------------------------
BCE_EQUIVALENTS = [
    ("focal", {"gamma": 0.0, "balance": 1.0}, 1.0),
    ("db", {"rebalance": False, "ntr": False, "focal": False}, 1.0),
    ("cb", {"beta": 0.0, "mode": "by_class"}, 1.0),
    ("cb", {"beta": 0.0, "mode": "average_w"}, 1.0),
    ("cb", {"beta": 0.0, "mode": "average_n"}, 1.0),
    ("cb", {"beta": 0.0, "mode": "min_n"}, 1.0),
    ("ldam", {"max_m": 0.0, "s": 1.0}, 1.0),
    ("gce", {"q": 0.0}, 1.0),
    ("asl", {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0}, "count"),  # sum, not mean
]


@pytest.mark.parametrize("with_mask", [False, True], ids=["all-known", "masked"])
@pytest.mark.parametrize("name,hp,factor", BCE_EQUIVALENTS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BCE_EQUIVALENTS)])
def test_reduces_to_bce(name, hp, factor, with_mask):
    z, y, m = make_batch(7, with_mask)
    args = (jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32), None if m is None else jnp.asarray(m))
    v_bce, g_bce = value_and_grad_fn("bce", {})(*args)
    v, g = value_and_grad_fn(name, hp)(*args)
    if factor == "count":
        factor = z.size if m is None else int(m.sum())
    np.testing.assert_allclose(float(v), factor * float(v_bce), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g), factor * np.asarray(g_bce), rtol=1e-4, atol=1e-7 * factor)


def test_gce_approaches_bce_as_q_goes_to_zero():
    z, y, _ = make_batch(3)
    args = (jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32), None)
    v_bce, g_bce = value_and_grad_fn("bce", {})(*args)
    gaps = []
    for q in (0.1, 1e-2, 1e-4):
        v, g = value_and_grad_fn("gce", {"q": q})(*args)
        gaps.append(abs(float(v) - float(v_bce)))
    assert gaps[0] > gaps[1] > gaps[2]
    np.testing.assert_allclose(float(v), float(v_bce), rtol=1e-3)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_bce), rtol=1e-3, atol=1e-6)


def test_rw_with_equal_counts_and_mean_normalisation_is_bce():
    stats = L.ClassStats(np.full(C, 37.0), N_TRAIN)
    z, y, _ = make_batch(4)
    args = (jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32), None)
    v_rw, g_rw = value_and_grad_fn("rw", {"normalize": "mean"}, stats)(*args)
    v_bce, g_bce = value_and_grad_fn("bce", {})(*args)
    np.testing.assert_allclose(float(v_rw), float(v_bce), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g_rw), np.asarray(g_bce), rtol=1e-5)
    # unnormalised it is BCE scaled by N/n
    v_raw, _ = value_and_grad_fn("rw", {}, stats)(*args)
    np.testing.assert_allclose(float(v_raw), N_TRAIN / 37.0 * float(v_bce), rtol=1e-5)


def test_focal_parts_of_db_and_cb_are_the_focal_loss():
    z, y, m = make_batch(5, with_mask=True)
    args = (jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32), jnp.asarray(m))
    v_focal, g_focal = value_and_grad_fn("focal", {})(*args)
    v_db, g_db = value_and_grad_fn("db", {"rebalance": False, "ntr": False})(*args)
    v_cb, g_cb = value_and_grad_fn("cb", {"beta": 0.0, "gamma": 2.0, "balance": 2.0})(*args)
    for v, g in ((v_db, g_db), (v_cb, g_cb)):
        np.testing.assert_allclose(float(v), float(v_focal), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(g), np.asarray(g_focal), rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# DB by hand
# --------------------------------------------------------------------------------------------------
def test_db_bias_and_rebalance_weights_by_hand():
    # N = 100, n = [50, 20, 4], kappa = 0.05, lambda = 5:
    #   N/n - 1 = [1, 4, 24];  log = [0, 1.3862944, 3.1780538]
    #   b = -0.05 * log / 5 = [0, -0.013862944, -0.031780538]
    stats = L.ClassStats(np.array([50.0, 20.0, 4.0]), 100)
    np.testing.assert_allclose(L.db_bias(stats, 0.05, 5.0), [0.0, -0.013862944, -0.031780538], atol=1e-9)
    # labels row 0 = [1, 0, 1]: 1/n = [0.02, 0.05, 0.25], sum over positives 0.02 + 0.25 = 0.27
    #   r = [0.02, 0.05, 0.25] / 0.27 = [0.0740741, 0.1851852, 0.9259259]
    #   beta (r - mu) = 10 (r - 0.3) = [-2.2592593, -1.1481481, 6.2592593]
    #   w = 0.1 + sigmoid(.) = [0.1 + 0.0945538, 0.1 + 0.2408275, 0.1 + 0.9980910]
    #     = [0.1945538, 0.3408275, 1.0980910]
    # row 1 = [0, 0, 0] (no positive): r = inf, w = alpha + 1 = 1.1 for every class
    labels = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    w = L.db_rebalance_weights(labels, stats, 0.1, 10.0, 0.3)
    np.testing.assert_allclose(np.asarray(w), [[0.1945538, 0.3408275, 1.0980910], [1.1, 1.1, 1.1]], rtol=2e-6)
    # The whole DB-focal loss of row 0 at z = 0:
    #   z' = z + b = b; positives keep z', the negative (class 1) uses 5 z' = -0.0693147, weight w/5 = 0.0681655
    #   BCE = [log 2, softplus(-0.0693147), softplus(0.0317805)] = [0.6931472, 0.6590903, 0.7091637]
    #   p_t = exp(-BCE) = [0.5, 0.5173217, 0.4920555]
    #   l = 2 (1 - p_t)^2 w' BCE = [0.0674272, 0.0209341, 0.4018346], mean 0.1633986
    value = L.compute_loss("db", jnp.zeros((1, 3)), labels[:1], None, stats, {})
    np.testing.assert_allclose(float(value), 0.1633986, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Mask of known labels
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,hp", CASES, ids=CASE_IDS)
def test_unknown_entries_have_no_effect(name, hp):
    z, y, m = make_batch(11, with_mask=True)
    rng = np.random.default_rng(12)
    vg = value_and_grad_fn(name, hp)
    v, g = vg(jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32), jnp.asarray(m))
    # change every unknown label and logit (some to extreme values): nothing may change
    z2 = np.where(m, z, rng.choice([-1000.0, -30.0, 5.0, 80.0], size=z.shape))
    y2 = np.where(m, y, 1.0 - y)
    v2, g2 = vg(jnp.asarray(z2, jnp.float32), jnp.asarray(y2, jnp.float32), jnp.asarray(m))
    np.testing.assert_allclose(float(v2), float(v), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g2)[m], np.asarray(g)[m], rtol=1e-5, atol=1e-9)
    assert np.all(np.asarray(g)[~m] == 0.0) and np.all(np.asarray(g2)[~m] == 0.0)
    # a mask that marks everything known is the same as no mask; the masked loss is a different one
    full_v, full_g = vg(jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32), jnp.ones((B, C), bool))
    none_v, none_g = value_and_grad_fn(name, hp)(jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32), None)
    np.testing.assert_allclose(float(full_v), float(none_v), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(full_g), np.asarray(none_g), rtol=1e-5, atol=1e-9)
    assert abs(float(full_v) - float(v)) > 1e-4


def test_float_mask_is_accepted():
    z, y, m = make_batch(13, with_mask=True)
    args = (jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32))
    for name, hp in DEFAULT_CASES:
        a = L.compute_loss(name, *args, jnp.asarray(m), STATS, hp)
        b = L.compute_loss(name, *args, jnp.asarray(m, jnp.float32), STATS, hp)
        np.testing.assert_allclose(float(a), float(b), rtol=1e-6, err_msg=name)


# --------------------------------------------------------------------------------------------------
# jit, extreme logits, bf16
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,hp", DEFAULT_CASES, ids=[n for n, _ in DEFAULT_CASES])
def test_jit_traces_once_for_a_fixed_shape(name, hp):
    chex.clear_trace_counter()  # the counter is keyed by the code of `step`, shared by the parametrised runs

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(z, y, m):
        return jax.value_and_grad(lambda zz: L.compute_loss(name, zz, y, m, STATS, hp))(z)

    for seed in (0, 1, 2):
        z, y, m = make_batch(seed, with_mask=True)
        v, g = step(jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32), jnp.asarray(m))
        np.testing.assert_allclose(float(v), REFS[name](z, y, m, hp), rtol=3e-5)


@pytest.mark.parametrize("name,hp", CASES, ids=CASE_IDS)
def test_finite_at_extreme_logits_and_in_bf16(name, hp):
    rng = np.random.default_rng(21)
    y = (rng.random((B, C)) < 0.5).astype(np.float32)
    m = jnp.asarray(rng.random((B, C)) < 0.8)
    for magnitude in (100.0, 1000.0):
        z = magnitude * rng.choice([-1.0, 1.0], size=(B, C))
        for dtype in (jnp.float32, jnp.bfloat16):
            for mask in (None, m):
                v, g = jax.value_and_grad(lambda zz: L.compute_loss(name, zz, y, mask, STATS, hp))(jnp.asarray(z, dtype))
                assert v.dtype == jnp.float32
                assert np.isfinite(float(v)), (magnitude, dtype)
                assert g.dtype == dtype and np.all(np.isfinite(np.asarray(g, np.float32))), (magnitude, dtype)
    # bf16 logits are cast to float32 inside: same loss as the float32 copy of the bf16 values
    z16 = jnp.asarray(rng.normal(0, 3, (B, C)), jnp.bfloat16)
    v16 = L.compute_loss(name, z16, y, m, STATS, hp)
    v32 = L.compute_loss(name, z16.astype(jnp.float32), y, m, STATS, hp)
    assert v16.dtype == jnp.float32 and float(v16) == float(v32)


def test_zero_and_full_counts_are_safe():
    # a class absent from training counts as seen once; a class in every example keeps a finite NTR bias
    zero = L.ClassStats(np.array([0.0, 50.0, N_TRAIN, 3.0]), N_TRAIN)
    one = L.ClassStats(np.array([1.0, 50.0, N_TRAIN, 3.0]), N_TRAIN)
    assert np.all(np.isfinite(L.db_bias(zero, 0.05, 5.0)))
    z = jnp.asarray(np.random.default_rng(0).normal(0, 2, (3, 4)), jnp.float32)
    y = jnp.asarray([[1.0, 0, 0, 1], [0, 0, 1, 0], [1, 1, 0, 0]])
    for name in ("rw", "cb", "db", "ldam"):
        v0, g0 = jax.value_and_grad(lambda zz: L.compute_loss(name, zz, y, None, zero, {}))(z)
        v1 = L.compute_loss(name, z, y, None, one, {})
        assert np.isfinite(float(v0)) and np.all(np.isfinite(np.asarray(g0)))
        np.testing.assert_allclose(float(v0), float(v1), rtol=1e-6, err_msg=name)


# --------------------------------------------------------------------------------------------------
# Registry, defaults and errors
# --------------------------------------------------------------------------------------------------
def test_registry_defaults_and_spec_call():
    assert L.LOSSES.names() == sorted(["bce", "rw", "focal", "cb", "db", "asl", "ldam", "zlpr", "gce"])
    spec = L.LOSSES.get("focal")
    assert isinstance(spec, L.LossSpec) and spec.name == "focal"
    assert dict(spec.defaults) == {"gamma": 2.0, "balance": 2.0}
    assert dict(L.LOSSES.get("db").defaults) == dict(
        rebalance=True, alpha=0.1, beta=10.0, mu=0.3, ntr=True, kappa=0.05, lam=5.0, focal=True, gamma=2.0, balance=2.0
    )
    assert dict(L.LOSSES.get("asl").defaults) == dict(gamma_pos=0.0, gamma_neg=4.0, clip=0.05, eps=1e-8, focal_grad=True)
    assert dict(L.LOSSES.get("cb").defaults) == dict(beta=0.9, mode="average_w", gamma=0.0, balance=1.0)
    assert dict(L.LOSSES.get("ldam").defaults) == dict(max_m=0.5, s=30.0)
    assert dict(L.LOSSES.get("gce").defaults) == dict(q=0.8)
    assert dict(L.LOSSES.get("rw").defaults) == dict(mode="inv", normalize="none")
    cfg = L.loss_defaults("focal")
    assert isinstance(cfg, ml_collections.ConfigDict) and cfg.gamma == 2.0
    cfg.gamma = 0.5  # a fresh copy: the registry's defaults are untouched
    assert L.LOSSES.get("focal").defaults["gamma"] == 2.0
    z, y, _ = make_batch(1)
    z, y = jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32)
    # the spec is callable with its defaults (how the training core calls it), a ConfigDict overrides
    np.testing.assert_allclose(float(spec(z, y, None, None)), ref_focal(np.asarray(z, np.float64), np.asarray(y), None, {}), rtol=3e-5)
    np.testing.assert_allclose(
        float(L.compute_loss("focal", z, y, None, None, cfg)), ref_focal(np.asarray(z, np.float64), np.asarray(y), None, {"gamma": 0.5}), rtol=3e-5
    )
    # integers are accepted for float hyper-parameters
    assert float(L.compute_loss("focal", z, y, None, None, {"gamma": 2})) == float(spec(z, y, None, None))


def test_compute_loss_errors():
    z = jnp.zeros((2, C))
    y = jnp.zeros((2, C))
    with pytest.raises(ValueError, match=r"unknown hyper-parameter\(s\) \['gama'\].*gamma"):
        L.compute_loss("focal", z, y, None, None, {"gama": 1.0})
    with pytest.raises(ValueError, match="unknown hyper-parameter.*valid hyper-parameters: none"):
        L.compute_loss("bce", z, y, None, None, {"gamma": 1.0})
    for name in ("rw", "cb", "db", "ldam"):
        with pytest.raises(ValueError, match=f"loss '{name}' needs the training-set class statistics.*ClassStats.from_meta"):
            L.compute_loss(name, z, y, None, None, {})
    for name in ("bce", "focal", "asl", "zlpr", "gce"):  # these do not need stats
        assert np.isfinite(float(L.compute_loss(name, z, y, None, None, {})))
    with pytest.raises(KeyError, match="unknown loss 'nope'.*bce"):
        L.compute_loss("nope", z, y, None, None, {})
    with pytest.raises(ValueError, match=r"mode must be one of \['by_class', 'average_n', 'average_w', 'min_n'\]"):
        L.compute_loss("cb", z, y, None, STATS, {"mode": "avg"})
    with pytest.raises(ValueError, match=r"mode must be one of \['inv', 'sqrt_inv'\]"):
        L.compute_loss("rw", z, y, None, STATS, {"mode": "log"})
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        L.compute_loss("cb", z, y, None, STATS, {"beta": 1.0})
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\]"):
        L.compute_loss("gce", z, y, None, None, {"q": -0.1})
    with pytest.raises(TypeError, match="gamma must be a plain Python number"):
        L.compute_loss("focal", z, y, None, None, {"gamma": jnp.asarray(2.0)})
    with pytest.raises(TypeError, match="focal must be a bool"):
        L.compute_loss("db", z, y, None, STATS, {"focal": 1})
    with pytest.raises(ValueError, match="labels must have the logits' shape"):
        L.compute_loss("bce", z, y[:, :3], None, None, {})
    with pytest.raises(ValueError, match="mask must have the logits' shape"):
        L.compute_loss("bce", z, y, jnp.ones((2, 3)), None, {})
    with pytest.raises(ValueError, match=r"logits must have shape \[batch, classes\]"):
        L.compute_loss("bce", z[0], y[0], None, None, {})
    with pytest.raises(ValueError, match="stats has 3 class counts but the logits have 6 classes"):
        L.compute_loss("db", z, y, None, L.ClassStats(np.ones(3), 10), {})


def test_class_stats_validation_and_from_meta():
    meta = types.SimpleNamespace(class_counts=[5, 0, 2], num_train=7)
    stats = L.ClassStats.from_meta(meta)
    assert stats.class_counts.dtype == np.float32 and stats.num_train == 7
    np.testing.assert_array_equal(stats.class_counts, [5.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="exceeds num_train"):
        L.ClassStats(np.array([5.0, 9.0]), 7)
    with pytest.raises(ValueError, match="non-negative"):
        L.ClassStats(np.array([5.0, -1.0]), 7)
    with pytest.raises(ValueError, match="1-D"):
        L.ClassStats(np.ones((2, 2)), 7)
    with pytest.raises(ValueError, match="num_train must be >= 1"):
        L.ClassStats(np.zeros(2), 0)
    with pytest.raises(TypeError, match="num_train must be an integer"):
        L.ClassStats(np.zeros(2), 7.5)
    with pytest.raises(TypeError, match="num_train must be an integer"):
        L.ClassStats(np.zeros(2), True)


def test_register_loss_rejects_mismatched_hyper_parameters():
    with pytest.raises(TypeError, match="differ from the registered hyper-parameters"):

        @L.register_loss("_test_mismatch", gamma=1.0)
        def bad(logits, labels, mask, stats, *, gama):  # noqa: ARG001
            return jnp.zeros(())

    assert "_test_mismatch" not in L.LOSSES


def test_masked_mean_and_sigmoid_bce():
    values = jnp.array([[1.0, jnp.inf], [3.0, 5.0]])
    mask = jnp.array([[1, 0], [1, 1]])
    assert float(L.masked_mean(values, mask)) == pytest.approx(3.0)  # the inf is selected away
    assert float(L.masked_mean(values[:, :1], None)) == pytest.approx(2.0)
    assert float(L.masked_mean(values, jnp.zeros((2, 2)))) == 0.0
    z = jnp.array([-1000.0, -2.0, 0.0, 3.0, 1000.0])
    for label in (0.0, 1.0):
        got = np.asarray(L.sigmoid_bce(z, jnp.full_like(z, label)))
        assert np.all(np.isfinite(got))
        expected = np.logaddexp(0.0, -np.asarray(z, np.float64)) if label else np.logaddexp(0.0, np.asarray(z, np.float64))
        np.testing.assert_allclose(got, expected, rtol=1e-6)
