"""COMIC (paper 001, REFERENCE section 4): long tail plus partial labels -- a reflective label corrector
(RLC), a multi-focal modifier (MFM) and a head-tail balancer (HTB) on one backbone.

Everything COMIC is in this module: the ``COMICNet`` Flax module, the loss pieces (``mfm_terms``,
``recall``, ``cosine_logits``, ``moving_logits``, ``kappa``), the method state and the registered method
``"comic"``.  Configs: ``configs/comic_voc.py`` / ``configs/comic_coco.py`` (PLT-VOC / PLT-COCO, the
reference recipe) and ``configs/<dataset>.py:comic`` for any built-in dataset.  The partial labels
themselves are data (``data.missing_ratio``, :mod:`ltjax.data.partial`), the same for every method.

The paper is a short slide-style text and the released code does not run (REFERENCE); every choice
below that the paper leaves open is a config field of ``config.method``.

**Model.** The backbone of ``config.model`` gives f [B, D].  With ``htb`` (default) three branches:
``branch_head`` / ``branch_tail`` / ``branch_balanced`` (each a Dense to ``branch_dim``, 0 = D) give
f_h, f_t and f^_b; the balanced branch attends to the other two, f_b = Attn(f^_b, [f_h, f_t]) + f^_b
(one query, two keys per example, ``attn_heads`` heads; gradients reach f_h and f_t).  Each branch has a
causal-norm cosine classifier (``cosine_logits``): z_x = rho / N_g * sum_k <w_k, f_k> / ((|w_k| + eta)
|f_k|), the feature and the weights cut into N_g = ``num_groups`` equal chunks (the causal-norm
classifier's multi-head normalisation; with N_g = 1, the default, one cosine), rho 16, eta 1/32, weights
``classifier_<branch>`` [C, branch_dim].  Without ``htb`` (the "-HTB" row) one branch (``branch_balanced``
and its classifier, no attention) on one stream.

**Streams.** One training phase ``train`` with three streams drawn at every step, each its own sampler
(``method.phases.train.streams``): ``main`` instance sampling ("uniform", the head-biased branch's data;
its epoch is the run's epoch), ``tail`` reverse sampling ("reverse": class prob. proportional to
n_max / n_c, then a uniform image of it) and ``balanced`` class-uniform sampling ("class_aware").  Every
stream goes through the backbone and all branches; branch x learns from its own stream: head <- main,
tail <- tail, balanced <- balanced.  (The released code names these the other way round and rotates the
labels against the images; ltjax follows the paper: reverse sampling makes the tail-biased branch.)

**Accumulated direction and moving logits.** e_t = mu * e_{t-1} + mean_batch(f) per branch (method state
``e_head`` from f_h on ``main``, ``e_tail`` from f_t on ``tail``; mu = ``momentum`` 0.9; the paper's
"sum(g_t)" -- only e's direction enters, so sum or mean is the same).  The moving logits (``moving_logits``,
causal-norm TDE) z^_x = z_x -/+ alpha_x * rho / N_g * sum_k cos(f_k, e^_k) <w_k, e^_k> / (|w_k| + eta):
the head branch removes the projection on e (alpha ``head_alpha`` 1), the tail branch adds it
(``tail_alpha`` 2, the released code's x^ + 2 cos(x^, m^) m^).  They are used in training and scoring.

**MFM** (``mfm_terms``): per class c the focal loss -[y (1-p)^{g+_c} log p + (1-y) p_m^{g-_c} log(1 - p_m)],
p_m = max(p - clip, 0) (negatives only, ``clip`` 0.05), the factors without gradient, summed over classes,
averaged over the batch; g+_c = ``gamma_pos`` + ``w_pos`` * g_ht,c and g-_c = ``gamma_neg`` + ``w_neg`` *
g_ht,c with g_ht,c = (1 - log(n_c / max n))^(1/3) from the observed training counts (n_c floored at 1).
Defaults (the reference): gamma_pos 0, gamma_neg 3, w_pos 0, w_neg 1.  ``mfm_factors``: "both", "pn"
(positive-negative factor only: w = 0), "ht" (head-tail factor only: gamma_pn = 0).  ``mfm`` False (the
"-MFM" row) makes every COMIC loss term plain BCE (no factors, no clipping).

**RLC** (``recall``): an unlabeled entry (y_c = 0) of any stream's batch is recalled when p_c >
max(tau, P_c), tau 0.7, p the stream's scores (the scoring branch, without gradient), from
``rlc_start_epoch`` (1) epochs on (a freshly initialised model's recalls are noise; the released code
starts at epoch 1).  P_c (``rlc_mean``): "positives" (default; the paper's "average category possibility
of past trained data with class c") = the running mean of p_c over the past ``main``-stream examples
labelled c (method state ``P_sum`` / ``P_count``), so an entry is recalled only when the model is at least
as sure of it as it is, on average, of the labelled positives; "running" = the running mean of p_c over
all past ``main``-stream examples (the issue's wording; it sits near the class prior, so max(tau, P_c)
is tau almost always: on synthetic_lt with 40 % missing it recalled ~half of all unlabeled entries and
fed back on itself); or "batch" (the released code) = the mean of p_c over the current batch.  L_rlc is MFM on the corrected labels y~ = max(y, y^)
(recalled entries take the positive branch), with g_ht from counts that include recalls: n'_c = n_c + N *
(recalls of c on ``main``) / (``main`` examples seen), and positive logits lowered by ``rlc_margin`` (0;
the released code uses 1.0).  With ``rlc`` the other terms also train on y~.  ``rlc`` False: the "-RLC" row.

**HTB** (on the ``balanced`` stream): L_htb = kappa_h L(phi(z^_h) . phi(z_b)) + kappa_t L(phi(z^_t) .
phi(z_b)), z^_h, z^_t without gradient (the released code's softmax(head).detach() x softmax(balanced)),
L the MFM loss, kappa_x = L_x^alpha / (L_h^alpha + L_t^alpha) (``kappa``; alpha 2; L_x the branch's own
loss, without gradient).  The product of the two per-class distributions (``htb_combine``): "logit_sum"
(default: the per-class two-way softmax of each, multiplied and renormalised, = sigmoid(z^_h + z_b)) or
"prob_product" (the literal sigma(z^_h) * sigma(z_b) under the loss).

**Total.** ``lambda_c`` * L_rlc + ``lambda_m`` * L_mfm + ``lambda_b`` * L_htb (0.2, 1, 1), L_mfm the mean
of the three branches' MFM losses on their own streams (the released loop's mean of branch losses).

**Scores** (``test_branch``): "htb" (default: the paper's "COMIC" row) = kappa_h sigma(z^_h + z_b) +
kappa_t sigma(z^_t + z_b), the two quantities HTB trains, weighted by a running mean of kappa_h (method
state ``kappa_head``, momentum 0.99) -- z_b alone is not a classifier under HTB: with the head or tail
logits held fixed it learns what they miss (on synthetic_lt, 40 % missing, scoring sigma(z_b) alone gave
14.8 mAP against 21.5 for the one-branch model); "balanced" = sigma(z_b); "head" (the "Head Model" row:
sigma(z^_h)), "tail" (the "Tail Model" row: sigma(z^_t)) or "mean" (of the three).  Without ``htb`` the
one branch scores.  The three rows
come from one trained run: ``python -m ltjax.evaluate --workdir W --config.method.test_branch=head``.

**RLC analysis.** Method state counts, per epoch of the ``main`` stream, the recalled labels and the true
recalls (entries whose positive was hidden by ``data.missing_ratio``; the rest are false recalls);
``eval.json["method_summary"]`` lists them.

Optimiser of the reference (``configs/comic_voc.py``): Adam, lr 1e-3 for the features and 1e-4 for the
classifiers (``optimizer.param_groups``, pattern "classifier_"), batch 32, 40 epochs.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax import models
from ltjax.methods.base import METHODS, Method, phase_config, TrainPhase

BRANCHES = ("head", "tail", "balanced")
STREAM_OF = {"head": "main", "tail": "tail", "balanced": "balanced"}
TEST_BRANCHES = ("htb", "balanced", "head", "tail", "mean")
FACTORS = ("both", "pn", "ht")
RLC_MEANS = ("positives", "running", "batch")
COMBINES = ("logit_sum", "prob_product")


# ---- classifier pieces (pure functions) -------------------------------------------------------------


def _chunks(x, n: int):
    """[..., D] -> [..., n, D / n]."""
    return x.reshape(*x.shape[:-1], n, x.shape[-1] // n)


def _unit(x, axis=-1):
    n = jnp.linalg.norm(x, axis=axis, keepdims=True)
    return jnp.where(n > 0, x / jnp.maximum(n, 1e-12), 0.0)


def cosine_logits(f, w, rho: float, eta: float, num_groups: int = 1):
    """z [B, C] = rho / N_g * sum_k <w_k, f_k> / ((|w_k| + eta) |f_k|) for f [B, D], w [C, D]."""
    f, w = _chunks(f.astype(jnp.float32), num_groups), _chunks(w.astype(jnp.float32), num_groups)
    wn = w / (jnp.linalg.norm(w, axis=-1, keepdims=True) + eta)  # [C, K, d]
    return rho / num_groups * jnp.einsum("bkd,ckd->bc", _unit(f), wn)


def moving_logits(z, f, w, e, sign_alpha: float, rho: float, eta: float, num_groups: int = 1):
    """z + sign_alpha * rho / N_g * sum_k cos(f_k, e^_k) <w_k, e^_k> / (|w_k| + eta) (causal-norm TDE);
    ``e`` [D] the accumulated direction (0 before the first step: no change)."""
    f, w = _chunks(f.astype(jnp.float32), num_groups), _chunks(w.astype(jnp.float32), num_groups)
    e_hat = _unit(_chunks(e.astype(jnp.float32), num_groups))  # [K, d]
    cos = jnp.einsum("bkd,kd->bk", _unit(f), e_hat)  # [B, K]
    proj = jnp.einsum("ckd,kd->ck", w, e_hat) / (jnp.linalg.norm(w, axis=-1) + eta)  # [C, K]
    return z + sign_alpha * rho / num_groups * jnp.einsum("bk,ck->bc", cos, proj)


def kappa(loss_head, loss_tail, alpha: float):
    """(kappa_h, kappa_t) = (L_h^a, L_t^a) / (L_h^a + L_t^a)."""
    a, b = jnp.power(loss_head, alpha), jnp.power(loss_tail, alpha)
    s = jnp.maximum(a + b, 1e-30)
    return a / s, b / s


# ---- MFM and RLC -------------------------------------------------------------------------------------


def head_tail_factor(counts) -> np.ndarray:
    """g_ht,c = (1 - log(n_c / max n))^(1/3), n_c floored at 1 (numpy, [C])."""
    n = np.maximum(np.asarray(counts, np.float64), 1.0)
    return ((1.0 - np.log(n / n.max())) ** (1.0 / 3.0)).astype(np.float32)


def head_tail_factor_jnp(counts):
    n = jnp.maximum(counts.astype(jnp.float32), 1.0)
    return jnp.cbrt(1.0 - jnp.log(n / jnp.max(n)))


def gammas(cfg, g_ht):
    """(gamma+ [C], gamma- [C]) of MFM from g_ht [C] and the config (module docstring)."""
    factors = str(cfg.mfm_factors)
    if factors not in FACTORS:
        raise ValueError(f"method.mfm_factors must be one of {FACTORS}, got {factors!r}")
    pn_pos, pn_neg = (0.0, 0.0) if factors == "ht" else (float(cfg.gamma_pos), float(cfg.gamma_neg))
    w_pos, w_neg = (0.0, 0.0) if factors == "pn" else (float(cfg.w_pos), float(cfg.w_neg))
    return pn_pos + w_pos * g_ht, pn_neg + w_neg * g_ht


def mfm_terms(z, y, gamma_pos, gamma_neg, clip: float):
    """Per-entry MFM loss [B, C]: -[y (1-p)^{g+} log p + (1-y) p_m^{g-} log(1 - p_m)], p_m = max(p - clip, 0),
    the focal factors without gradient; g+ / g- broadcast against [B, C] (per class)."""
    z = z.astype(jnp.float32)
    log_p = jax.nn.log_sigmoid(z)
    if clip > 0:
        log_1m = jnp.log(jnp.minimum(jax.nn.sigmoid(-z) + clip, 1.0))
        p_m = jnp.maximum(jax.nn.sigmoid(z) - clip, 0.0)
    else:
        log_1m = jax.nn.log_sigmoid(-z)
        p_m = jax.nn.sigmoid(z)
    gamma_pos, gamma_neg = jnp.broadcast_to(gamma_pos, z.shape), jnp.broadcast_to(gamma_neg, z.shape)
    f_pos = jnp.exp(gamma_pos * jax.nn.log_sigmoid(-z))  # (1 - p)^g+
    has = p_m > 0
    f_neg = jnp.where(gamma_neg == 0, 1.0, jnp.where(has, jnp.exp(gamma_neg * jnp.log(jnp.where(has, p_m, 1.0))), 0.0))
    f_pos, f_neg = jax.lax.stop_gradient(f_pos), jax.lax.stop_gradient(f_neg)
    return -jnp.where(y > 0.5, f_pos * log_p, f_neg * log_1m)


def _loss_of(terms):
    return jnp.mean(jnp.sum(terms, axis=-1))


def recall(p, y, reference, tau: float):
    """y^ [B, C]: 1 where an unlabeled entry (y = 0) has p > max(tau, reference) (reference [C] or [1, C])."""
    return ((y < 0.5) & (p > jnp.maximum(tau, reference))).astype(jnp.float32)


# ---- model ------------------------------------------------------------------------------------------


class COMICNet(nn.Module):
    """Backbone -> branches -> cosine classifiers.  ``__call__(x, *, train) -> {"logits": z_b, "f_<x>",
    "z_<x>", "w_<x>" for each branch x}`` (the moving logits need the method state: ``branch_logits``)."""

    backbone: nn.Module
    num_classes: int
    htb: bool = True
    branch_dim: int = 0
    attn_heads: int = 1
    num_groups: int = 1
    rho: float = 16.0
    eta: float = 1.0 / 32.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        f = self.backbone(x, train=train)
        dim = int(self.branch_dim) or int(f.shape[-1])
        if dim % self.num_groups:
            raise ValueError(f"method.num_groups={self.num_groups} must divide the branch width {dim} "
                             "(method.branch_dim, 0 = the backbone's feature width)")
        out = {}
        branches = BRANCHES if self.htb else ("balanced",)
        feats = {b: nn.Dense(dim, dtype=self.dtype, name=f"branch_{b}")(f).astype(jnp.float32) for b in branches}
        if self.htb:
            q = feats["balanced"][:, None, :]
            kv = jnp.stack([feats["head"], feats["tail"]], axis=1)
            # no biases: a key bias shifts both keys' scores alike, so its gradient is rounding noise that Adam
            # would turn into full-size steps
            att = nn.MultiHeadDotProductAttention(num_heads=self.attn_heads, qkv_features=dim, out_features=dim,
                                                  use_bias=False, dtype=self.dtype, name="attention")(q, kv)
            feats["balanced"] = feats["balanced"] + att[:, 0, :].astype(jnp.float32)
        bound = 1.0 / math.sqrt(dim)
        init = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)  # noqa: E731
        for b in branches:
            w = self.param(f"classifier_{b}", init, (self.num_classes, dim))
            out[f"f_{b}"] = feats[b]
            out[f"w_{b}"] = w
            out[f"z_{b}"] = cosine_logits(feats[b], w, self.rho, self.eta, self.num_groups)
        out["logits"] = out["z_balanced"]
        return out


def build_comic(config, meta, dtype) -> COMICNet:
    base = models.build_model(config.model, meta.num_classes, meta.input_shape, dtype, vocab_size=meta.vocab_size)
    m = config.method
    return COMICNet(backbone=base.backbone, num_classes=meta.num_classes, htb=bool(m.htb),
                    branch_dim=int(m.branch_dim), attn_heads=int(m.attn_heads), num_groups=int(m.num_groups),
                    rho=float(m.rho), eta=float(m.eta), dtype=dtype)


def branch_logits(outputs, state, cfg) -> dict:
    """{"head": z^_h, "tail": z^_t, "balanced": z_b} (only "balanced" without htb) of one stream's outputs."""
    out = {"balanced": outputs["z_balanced"]}
    if "z_head" in outputs:
        for b, sign in (("head", -float(cfg.head_alpha)), ("tail", float(cfg.tail_alpha))):
            out[b] = moving_logits(outputs[f"z_{b}"], outputs[f"f_{b}"], outputs[f"w_{b}"], state[f"e_{b}"], sign,
                                   float(cfg.rho), float(cfg.eta), int(cfg.num_groups))
    return out


def _probs(outputs, state, cfg):
    test = str(cfg.test_branch)
    if test not in TEST_BRANCHES:
        raise ValueError(f"method.test_branch must be one of {TEST_BRANCHES}, got {test!r}")
    logits = branch_logits(outputs, state, cfg)
    if "head" not in logits:  # no balancer: one branch
        return jax.nn.sigmoid(logits["balanced"])
    if test == "htb":
        mode, k = str(cfg.htb_combine), state["kappa_head"]
        return (k * jax.nn.sigmoid(_combined(logits["head"], logits["balanced"], mode))
                + (1.0 - k) * jax.nn.sigmoid(_combined(logits["tail"], logits["balanced"], mode)))
    if test == "mean":
        return jnp.mean(jnp.stack([jax.nn.sigmoid(v) for v in logits.values()]), axis=0)
    return jax.nn.sigmoid(logits[test])


def _check(cfg):
    for name, choices in (("rlc_mean", RLC_MEANS), ("htb_combine", COMBINES), ("mfm_factors", FACTORS),
                          ("test_branch", TEST_BRANCHES)):
        if str(cfg[name]) not in choices:
            raise ValueError(f"method.{name} must be one of {choices}, got {cfg[name]!r}")
    if not 0.0 <= float(cfg.tau) <= 1.0:
        raise ValueError(f"method.tau (the recall threshold) must lie in [0, 1], got {cfg.tau}")


def _streams(outputs, batch):
    return (outputs, batch) if "main" in outputs else ({"main": outputs}, {"main": batch})


def _reference(p, state, cfg):
    if str(cfg.rlc_mean) == "batch":
        return jnp.mean(p, axis=0, keepdims=True)
    return (state["P_sum"] / jnp.maximum(state["P_count"], 1.0))[None, :]


def _active(state, cfg):
    """1.0 once ``rlc_start_epoch`` epochs of the main stream are done, else 0.0 (no recalls before)."""
    return (state["steps"] >= float(cfg.rlc_start_epoch) * state["steps_per_epoch"]).astype(jnp.float32)


def _combined(zh, zb, mode: str):
    zh = jax.lax.stop_gradient(zh)
    if mode == "logit_sum":
        return zh + zb
    log_p = jax.nn.log_sigmoid(zh) + jax.nn.log_sigmoid(zb)  # log(sigma(zh) sigma(zb))
    log_p = jnp.minimum(log_p, -1e-6)
    return log_p - jnp.log(-jnp.expm1(log_p))  # its logit


KAPPA_MOMENTUM = 0.99  # of the running kappa_h in the method state (the "htb" scores)


def _gammas_static(cfg, state):
    """MFM's (gamma+, gamma-) from the observed counts in the method state (zeros without MFM)."""
    g = head_tail_factor_jnp(state["counts"])
    return gammas(cfg, g) if bool(cfg.mfm) else (jnp.zeros_like(g), jnp.zeros_like(g))


def comic_loss(outputs, batch, stats, cfg, state=None):
    """lambda_c L_rlc + lambda_m L_mfm + lambda_b L_htb (module docstring); aux: the parts, kappa, recalls."""
    _check(cfg)
    outputs, batch = _streams(outputs, batch)
    use_mfm, use_rlc = bool(cfg.mfm), bool(cfg.rlc)
    clip = float(cfg.clip) if use_mfm else 0.0
    gp, gn = _gammas_static(cfg, state)  # from the observed counts (the same n_c as stats.class_counts)
    branches = ("head", "tail", "balanced") if bool(cfg.htb) else ("balanced",)
    logits, targets, recalled = {}, {}, {}
    for s in {STREAM_OF[b] if bool(cfg.htb) else "main" for b in branches}:
        logits[s] = branch_logits(outputs[s], state, cfg)
        y = jnp.asarray(batch[s]["labels"], jnp.float32)
        if use_rlc:
            p = jax.lax.stop_gradient(_probs(outputs[s], state, cfg))
            recalled[s] = recall(p, y, _reference(p, state, cfg), float(cfg.tau)) * _active(state, cfg)
            targets[s] = jnp.maximum(y, recalled[s])
        else:
            targets[s] = y
    stream = (lambda b: STREAM_OF[b]) if bool(cfg.htb) else (lambda b: "main")
    # each branch's own MFM loss on its stream's observed labels; L_mfm is their mean, kappa uses them
    own = {b: _loss_of(mfm_terms(logits[stream(b)][b], jnp.asarray(batch[stream(b)]["labels"], jnp.float32),
                                 gp, gn, clip)) for b in branches}
    l_mfm = jnp.mean(jnp.stack([own[b] for b in branches]))
    aux = {"l_mfm": l_mfm}
    total = float(cfg.lambda_m) * l_mfm
    if use_rlc:
        n_prime = state["counts"] + state["num_train"] * state["recalled"] / jnp.maximum(state["seen"], 1.0)
        g_rlc = head_tail_factor_jnp(n_prime)
        rp, rn = gammas(cfg, g_rlc) if use_mfm else (jnp.zeros_like(g_rlc), jnp.zeros_like(g_rlc))
        parts = []
        for b in branches:
            t = targets[stream(b)]
            parts.append(_loss_of(mfm_terms(logits[stream(b)][b] - float(cfg.rlc_margin) * t, t, rp, rn, clip)))
        l_rlc = jnp.mean(jnp.stack(parts))
        total = total + float(cfg.lambda_c) * l_rlc
        aux.update(l_rlc=l_rlc, recalled=jnp.sum(recalled["main"]))
    if bool(cfg.htb):
        lb = logits["balanced"]
        t = targets["balanced"]
        k_h, k_t = kappa(jax.lax.stop_gradient(own["head"]), jax.lax.stop_gradient(own["tail"]), float(cfg.alpha))
        mode = str(cfg.htb_combine)
        l_htb = (k_h * _loss_of(mfm_terms(_combined(lb["head"], lb["balanced"], mode), t, gp, gn, clip))
                 + k_t * _loss_of(mfm_terms(_combined(lb["tail"], lb["balanced"], mode), t, gp, gn, clip)))
        total = total + float(cfg.lambda_b) * l_htb
        aux.update(l_htb=l_htb, kappa_head=k_h)
    return total, aux


def comic_update_state(state, outputs, batch, cfg):
    """After a step: the accumulated directions, P (running mean of main-stream scores), recall counts."""
    outputs, batch = _streams(outputs, batch)
    new = dict(state)
    mu = float(cfg.momentum)
    if bool(cfg.htb):
        new["e_head"] = mu * state["e_head"] + jnp.mean(outputs["main"]["f_head"], axis=0)
        new["e_tail"] = mu * state["e_tail"] + jnp.mean(outputs["tail"]["f_tail"], axis=0)
    main, y = outputs["main"], jnp.asarray(batch["main"]["labels"], jnp.float32)
    p = _probs(main, state, cfg)
    b = jnp.float32(p.shape[0])
    if bool(cfg.rlc):
        r = recall(p, y, _reference(p, state, cfg), float(cfg.tau)) * _active(state, cfg)
        epochs = state["epoch_recalls"].shape[0]
        epoch = jnp.minimum(jnp.floor(state["steps"] / state["steps_per_epoch"]).astype(jnp.int32), epochs - 1)
        hidden = jnp.asarray(batch["main"]["hidden"], jnp.float32) if "hidden" in batch["main"] else jnp.zeros_like(y)
        new["recalled"] = state["recalled"] + jnp.sum(r, axis=0)
        new["epoch_recalls"] = state["epoch_recalls"].at[epoch].add(
            jnp.stack([jnp.sum(r), jnp.sum(r * hidden), jnp.sum(hidden)]))
    weight = y if str(cfg.rlc_mean) == "positives" else jnp.ones_like(y)
    new["P_sum"] = state["P_sum"] + jnp.sum(p * weight, axis=0)
    new["P_count"] = state["P_count"] + jnp.sum(weight, axis=0)
    new["seen"] = state["seen"] + b
    new["steps"] = state["steps"] + 1.0
    if bool(cfg.htb):  # kappa_h of the step (recomputed: the state update has no access to the loss's aux)
        own = {}
        for br in ("head", "tail"):
            s = STREAM_OF[br]
            z = branch_logits(outputs[s], state, cfg)[br]
            own[br] = _loss_of(mfm_terms(z, jnp.asarray(batch[s]["labels"], jnp.float32), *_gammas_static(cfg, state),
                                         float(cfg.clip) if bool(cfg.mfm) else 0.0))
        k_h, _ = kappa(own["head"], own["tail"], float(cfg.alpha))
        first = state["steps"] == 0
        new["kappa_head"] = jnp.where(first, k_h, KAPPA_MOMENTUM * state["kappa_head"] + (1 - KAPPA_MOMENTUM) * k_h)
    return new


def _init_state(config, meta, dataset, outputs):
    c = int(meta.num_classes)
    n = int(meta.num_train)
    state = {"P_sum": np.zeros((c,), np.float32), "P_count": np.zeros((c,), np.float32), "seen": np.float32(0),
             "recalled": np.zeros((c,), np.float32), "counts": np.asarray(meta.class_counts, np.float32),
             "num_train": np.float32(n)}
    # per-epoch RLC counts [E, 3]: recalled, recalled that were hidden positives (true), hidden positives seen;
    # an epoch is the phase's (the main stream's uniform epoch, or train.steps_per_epoch)
    block = config.method.phases.train
    spe = int(config.train.steps_per_epoch) or math.ceil(n / int(config.data.batch_size))
    steps = int(block.steps) or int(round((float(block.epochs) or float(config.train.num_epochs)) * spe))
    state["steps"] = np.float32(0)
    state["steps_per_epoch"] = np.float32(spe)
    state["epoch_recalls"] = np.zeros((int(math.ceil(steps / spe)), 3), np.float32)
    if bool(config.method.htb):
        state["kappa_head"] = np.float32(0.5)
        d = int(outputs["f_head"].shape[-1])
        state["e_head"] = np.zeros((d,), np.float32)
        state["e_tail"] = np.zeros((d,), np.float32)
    return state


def comic_scores(outputs, state, cfg):
    """The test branch's probabilities (``method.test_branch``)."""
    return _probs(outputs, state, cfg)


def summary(state, result=None) -> dict:
    """The RLC analysis of a run's final method state: per ``main``-stream epoch, recalled labels, true and
    false recalls and the hidden positives seen (JSON-able)."""
    rows = np.asarray(state["epoch_recalls"])
    out = []
    for i, (rec, true, hidden) in enumerate(rows):
        out.append({"epoch": i + 1, "recalled": int(rec), "true": int(true), "false": int(rec - true),
                    "hidden_seen": int(hidden)})
    p = np.asarray(state["P_sum"]) / np.maximum(np.asarray(state["P_count"]), 1.0)
    return {"rlc_per_epoch": out, "P_mean": float(np.mean(p))}


def _defaults():
    c = ml_collections.ConfigDict()
    c.name = "comic"
    # switches for the ablation rows
    c.rlc = True
    c.mfm = True
    c.htb = True
    # MFM
    c.gamma_pos = 0.0
    c.gamma_neg = 3.0
    c.w_pos = 0.0
    c.w_neg = 1.0
    c.clip = 0.05
    c.mfm_factors = "both"  # "both" | "pn" | "ht"
    # RLC
    c.tau = 0.7
    c.rlc_mean = "positives"  # "positives" | "running" | "batch" (released code); module docstring
    c.rlc_start_epoch = 1.0  # main-stream epochs before the first recall (the released code: from epoch 1)
    c.rlc_margin = 0.0  # the released code: 1.0
    # HTB and the classifiers
    c.rho = 16.0
    c.eta = 1.0 / 32.0
    c.num_groups = 1
    c.momentum = 0.9
    c.head_alpha = 1.0
    c.tail_alpha = 2.0
    c.alpha = 2.0  # kappa exponent
    c.htb_combine = "logit_sum"  # "logit_sum" | "prob_product"
    c.branch_dim = 0  # 0: the backbone's feature width
    c.attn_heads = 1
    # loss weights
    c.lambda_c = 0.2
    c.lambda_m = 1.0
    c.lambda_b = 1.0
    c.test_branch = "htb"  # "htb" (COMIC) | "balanced" | "head" | "tail" | "mean"
    c.phases = ml_collections.ConfigDict()
    c.phases.train = phase_config(streams={"main": "uniform", "tail": "reverse", "balanced": "class_aware"})
    return c


def _phases(cfg):
    _check(cfg)
    streams = ("main", "tail", "balanced") if bool(cfg.htb) else ("main",)
    return (TrainPhase("train", streams=streams, update_state=comic_update_state),)


METHODS.add("comic", Method(
    name="comic",
    description="COMIC: reflective label corrector, multi-focal modifier and head-tail balancer (PLT-MLC)",
    defaults=_defaults, build_model=build_comic, loss=comic_loss, scores=comic_scores, phases=_phases,
    init_state=_init_state, scores_use_config=True, summary=summary))
