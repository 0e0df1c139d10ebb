"""HTTN and EHTTN (paper 003, REFERENCE section 4): head-to-tail network transfer for long-tailed multi-label
text classification, and the ``imprinting`` baseline of its tables.

Everything HTTN is in this module: the ``HTTNNet`` Flax module, the head / tail split (``tail_mask``), the
prototypes (``prototypes``), the transfer learner (``fit_transfer``), the tail attention and weights
(``tail_weights``), the assembled classifiers (``assemble``) and the registered methods ``"httn"``,
``"ehttn"`` and ``"imprinting"``.  Configs: ``configs/httn_aapd.py`` / ``httn_rcv1.py`` / ``httn_eurlex.py``
and ``configs/<text dataset>.py:httn`` for the built-in report datasets.

**Model.** The backbone of ``config.model`` (``text_bilstm``, the semantic extractor phi of eq. 3: GloVe ->
BiLSTM 2 x 150 -> attention pooling; any text backbone works) gives f; ``proj`` (Linear D -> ``dim`` = 128,
with bias, the released code's Linear 300 -> 128) gives r; with ``normalize`` (default, the released code)
r^ = r / |r| times a learnable scale s (``scale``, init ``scale_init`` 10), else r itself; then a bias-free
classifier ``classifier`` [C, dim] (torch's Linear init, U(+-1/sqrt(dim))): logits = s r^ . w_c.  The
normalisation puts the head weights and the prototypes (means of unit vectors) on one scale, which is what
lets a linear map send one onto the other.

**Head / tail split** (``tail_mask``): ``l_tail`` > 0: the ``l_tail`` least frequent labels by training count
(ties broken by class index) are the tail; ``l_tail`` = 0 and ``tail_max`` > 0: labels with n_c < ``tail_max``.

**Phase ``head``** (eqs. 4-5): BCE on the head labels only (tail rows of the classifier get no gradient);
``head_docs``: "head" (default, the paper's D_head: a document without a head label carries no loss) or "all".

**Pass ``transfer``** (eqs. 6-11; phi frozen, no gradients): r^ of every training document, then on the host:

* prototypes (eq. 6): for label c and round k, the L2-normalised mean of r^ over ``shots`` (t: 5 AAPD / RCV1,
  1 EUR-Lex) documents of c drawn without replacement (all of them when c has fewer; a label without a training
  document gets no prototype and a zero weight); ``rounds`` (S, 30) rounds per head label; every draw is seeded
  by (``config.seed``, round, class), so a draw does not depend on how many others are made;
* transfer learner (eq. 7): W_transfer [dim, dim] = the exact least-squares fit (``numpy.linalg.lstsq``, the
  minimum-norm solution) of the S x |head| pairs (head prototype of round k -> the learned head weight), in
  place of the reference's Adam on the same MSE: the same minimiser, without an optimiser's settings;
* tail weights (eqs. 8-11): p_head = the head prototypes averaged over the S rounds (divided by S, not by the
  number of classes as the released code does); for a tail label, alpha = softmax over head labels of
  p_tail . p_head, p_att = alpha p_head, p_new = (p_att + p_tail) / 2, m_tail = W_transfer p_new
  (``tail_weights`` "transfer"); the ``imprinting`` baseline uses m_tail = p_tail itself ("imprint": the
  normalised prototype, no transfer learner).  Qi et al.'s imprinting lives in a classifier whose weights are
  all unit vectors; here the head weights are not, and the documents' representations lie in a cone (mean
  pairwise cosine ~0.5 on iu_xray_reports), so unit tail rows score every document high and outrank head
  labels in P@k (P@1 66 against HTTN's 90 there).  Scaling them to the head weights' mean norm was tried and
  is worse: the scores saturate at sigmoid = 1 in float32 and the tail ranking is lost to ties (tail mAP
  2.3 -> 0.5);
* the classifier M = [M_head ; M_tail] in the dataset's class order (eq. 12): head rows untouched, tail rows
  from draw 0 (HTTN) written into the parameters; EHTTN (``ensemble`` = G > 1, default 30 for ``ehttn``)
  keeps G classifiers, one per tail-prototype draw, in the method state ``classifiers`` [G, C, dim] and scores
  with the mean of their G sigmoid outputs (draw 0 is HTTN's, so G = 1 is HTTN).

**Phase ``finetune``** (optional, ``finetune`` False): BCE on all labels, every parameter, for
``method.phases.finetune`` epochs (1); EHTTN's members are not fine-tuned (they score from the state).

The evaluation report adds ``method_summary``: the split (l_tail, the tail labels) and the mAP over the tail
labels of the split that have test positives (``mAP_tail_split``), next to the usual groups.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax import losses, models
from ltjax.methods.base import METHODS, Method, PassPhase, PassResult, TrainPhase, phase_config

TAIL_WEIGHTS = ("transfer", "imprint")
HEAD_DOCS = ("head", "all")


# ---- pure pieces --------------------------------------------------------------------------------------


def tail_mask(class_counts, l_tail: int = 0, tail_max: float = 0.0) -> np.ndarray:
    """[C] bool: the tail labels (module docstring)."""
    counts = np.asarray(class_counts)
    c = len(counts)
    if int(l_tail) > 0:
        if int(l_tail) >= c:
            raise ValueError(f"method.l_tail={l_tail} must be smaller than the number of labels ({c}): "
                             "HTTN needs at least one head label to learn from")
        order = np.lexsort((np.arange(c), counts))  # by count, ties by class index
        mask = np.zeros(c, bool)
        mask[order[: int(l_tail)]] = True
        return mask
    if float(tail_max) > 0:
        mask = counts < float(tail_max)
        if mask.all():
            raise ValueError(f"method.tail_max={tail_max}: every label would be a tail label; lower it")
        return mask
    raise ValueError("HTTN needs a head / tail split: set method.l_tail (the number of tail labels) or "
                     "method.tail_max (labels with fewer training documents are tail)")


def _unit(x, axis=-1):
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return np.where(n > 0, x / np.maximum(n, 1e-12), 0.0)


def draw(labels: np.ndarray, c: int, shots: int, seed: int, round_: int) -> np.ndarray:
    """The documents of label ``c`` drawn for round ``round_`` (seeded by (seed, round, class))."""
    members = np.flatnonzero(np.asarray(labels)[:, c] > 0)
    if len(members) == 0:
        return members
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x4177, int(round_), int(c)])
    return np.sort(rng.choice(members, size=min(int(shots), len(members)), replace=False))


def prototypes(emb: np.ndarray, labels: np.ndarray, classes, shots: int, seed: int, round_: int) -> np.ndarray:
    """[len(classes), d]: for each class, the L2-normalised mean of ``emb`` over its drawn documents (0 when
    the class has no document)."""
    out = np.zeros((len(classes), emb.shape[1]), np.float64)
    for i, c in enumerate(classes):
        docs = draw(labels, int(c), shots, seed, round_)
        if len(docs):
            out[i] = emb[docs].astype(np.float64).mean(axis=0)
    return _unit(out)


def fit_transfer(protos: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """W [d, d] minimising sum ||W p_i - w_i||^2 over the pairs (rows of ``protos`` / ``weights``)."""
    a, *_ = np.linalg.lstsq(np.asarray(protos, np.float64), np.asarray(weights, np.float64), rcond=None)
    return a.T  # rows: w = p @ a = (a.T) p


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def tail_weights(p_tail: np.ndarray, p_head: np.ndarray, transfer: np.ndarray | None) -> np.ndarray:
    """[T, d]: m_tail = W (p_att + p_tail) / 2 with p_att = softmax(p_tail . p_head^T) p_head (eqs. 8-11);
    ``transfer`` None: the imprinted prototypes themselves.  A zero prototype (no document) gives a zero row."""
    if transfer is None:
        return np.asarray(p_tail, np.float64)
    alpha = softmax(p_tail @ p_head.T, axis=-1)  # [T, H]
    p_new = (alpha @ p_head + p_tail) / 2.0
    m = p_new @ np.asarray(transfer).T
    return np.where(np.linalg.norm(p_tail, axis=-1, keepdims=True) > 0, m, 0.0)


def assemble(head_weights: np.ndarray, tail: np.ndarray, is_tail: np.ndarray) -> np.ndarray:
    """[C, d]: the head rows of ``head_weights`` (untouched) and the tail rows from ``tail`` [T, d], in class order."""
    out = np.array(head_weights, np.float64, copy=True)
    out[np.flatnonzero(is_tail)] = tail
    return out


# ---- model --------------------------------------------------------------------------------------------


class HTTNNet(nn.Module):
    """Backbone -> proj -> (unit norm x learnable scale) -> bias-free classifier.
    ``__call__(x, *, train) -> {"logits" [B, C], "features": s r^ [B, dim], "embedding": r^ [B, dim]}``."""

    backbone: nn.Module
    num_classes: int
    dim: int = 128
    normalize: bool = True
    scale_init: float = 10.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        f = self.backbone(x, train=train)
        r = nn.Dense(self.dim, dtype=self.dtype, param_dtype=jnp.float32, name="proj")(f).astype(jnp.float32)
        if self.normalize:
            emb = r / jnp.maximum(jnp.linalg.norm(r, axis=-1, keepdims=True), 1e-12)
            scale = self.param("scale", lambda k: jnp.asarray(self.scale_init, jnp.float32))
            feats = scale * emb
        else:
            emb = feats = r
        bound = 1.0 / math.sqrt(self.dim)
        w = self.param("classifier", lambda k, s: jax.random.uniform(k, s, jnp.float32, -bound, bound),
                       (self.num_classes, self.dim))
        return {"logits": feats @ w.T, "features": feats, "embedding": emb}


def build_httn(config, meta, dtype) -> HTTNNet:
    base = models.build_model(config.model, meta.num_classes, meta.input_shape, dtype, vocab_size=meta.vocab_size)
    m = config.method
    return HTTNNet(backbone=base.backbone, num_classes=meta.num_classes, dim=int(m.dim), normalize=bool(m.normalize),
                   scale_init=float(m.scale_init), dtype=dtype)


# ---- method -------------------------------------------------------------------------------------------


def _check(cfg):
    if str(cfg.tail_weights) not in TAIL_WEIGHTS:
        raise ValueError(f"method.tail_weights must be one of {TAIL_WEIGHTS}, got {cfg.tail_weights!r}")
    if str(cfg.head_docs) not in HEAD_DOCS:
        raise ValueError(f"method.head_docs must be one of {HEAD_DOCS}, got {cfg.head_docs!r}")
    for name in ("shots", "rounds", "ensemble"):
        if int(cfg[name]) < 1:
            raise ValueError(f"method.{name} must be >= 1, got {cfg[name]}")


def _init_state(config, meta, dataset, outputs):
    cfg = config.method
    _check(cfg)
    is_tail = tail_mask(meta.class_counts, int(cfg.l_tail), float(cfg.tail_max))
    d = int(outputs["embedding"].shape[-1])
    return {"is_tail": is_tail.astype(np.float32),
            "classifiers": np.zeros((int(cfg.ensemble), int(meta.num_classes), d), np.float32)}


def _head_loss(outputs, batch, stats, cfg, state=None):
    y = jnp.asarray(batch["labels"], jnp.float32)
    head = 1.0 - state["is_tail"][None, :]
    mask = jnp.broadcast_to(head, y.shape)
    if str(cfg.head_docs) == "head":
        has_head = (jnp.sum(y * head, axis=-1, keepdims=True) > 0).astype(jnp.float32)
        mask = mask * has_head
    return losses.masked_mean(losses.sigmoid_bce(outputs["logits"], y), mask), {}


def _bce_all(outputs, batch, stats, cfg, state=None):
    return losses.masked_mean(losses.sigmoid_bce(outputs["logits"], jnp.asarray(batch["labels"], jnp.float32)),
                              batch.get("mask")), {}


def _collect(outputs, batch):
    return {"embedding": outputs["embedding"].astype(jnp.float32)}


def transfer_classifiers(emb, labels, head_weights, is_tail, cfg, seed: int):
    """The pass's host step: ([G, C, d] classifiers, W_transfer or None, info)."""
    is_tail = np.asarray(is_tail) > 0.5
    head = np.flatnonzero(~is_tail)
    tail = np.flatnonzero(is_tail)
    shots, rounds, g = int(cfg.shots), int(cfg.rounds), int(cfg.ensemble)
    head_w = np.asarray(head_weights, np.float64)
    per_round = np.stack([prototypes(emb, labels, head, shots, seed, k) for k in range(rounds)])  # [S, H, d]
    p_head = per_round.mean(axis=0)  # divided by the number of rounds
    transfer = None
    if str(cfg.tail_weights) == "transfer":
        has = np.linalg.norm(per_round, axis=-1) > 0  # [S, H]
        pairs_p = per_round[has]
        pairs_w = np.broadcast_to(head_w[head][None], per_round.shape)[has]
        transfer = fit_transfer(pairs_p, pairs_w)
    sets = []
    for k in range(g):  # draw k of the tail prototypes (the rounds after the head ones: distinct draws)
        p_tail = prototypes(emb, labels, tail, shots, seed, rounds + k)
        sets.append(assemble(head_w, tail_weights(p_tail, p_head, transfer), is_tail))
    info = {"head_labels": float(len(head)), "tail_labels": float(len(tail)),
            "tail_without_documents": float(sum(1 for c in tail if not np.any(labels[:, c] > 0)))}
    if transfer is not None:
        fit = np.asarray(pairs_p) @ transfer.T - pairs_w
        info["transfer_mse"] = float(np.mean(fit ** 2))
        info["head_weight_mse"] = float(np.mean(pairs_w ** 2))
    return np.stack(sets).astype(np.float32), transfer, info


def _finish(ctx):
    cfg = ctx.config.method
    params = jax.tree.map(np.asarray, ctx.params)
    sets, _, info = transfer_classifiers(ctx.gathered["embedding"], np.asarray(ctx.labels), params["classifier"],
                                         ctx.state["is_tail"], cfg, int(ctx.config.seed))
    params = dict(params)
    params["classifier"] = sets[0].astype(params["classifier"].dtype)  # HTTN: draw 0
    return PassResult(params=params, state={"is_tail": np.asarray(ctx.state["is_tail"]), "classifiers": sets},
                      info=info)


def httn_scores(outputs, state, cfg):
    """HTTN (G = 1): sigmoid of the logits; EHTTN: the mean of the G members' sigmoid outputs."""
    if int(cfg.ensemble) <= 1:
        return jax.nn.sigmoid(outputs["logits"].astype(jnp.float32))
    logits = jnp.einsum("bd,gcd->gbc", outputs["features"].astype(jnp.float32), state["classifiers"])
    return jnp.mean(jax.nn.sigmoid(logits), axis=0)


def summary(state, result=None) -> dict:
    """The head / tail split and the mAP over the split's tail labels with test positives."""
    is_tail = np.asarray(state["is_tail"]) > 0.5
    out = {"l_tail": int(is_tail.sum()), "tail_labels": [int(c) for c in np.flatnonzero(is_tail)]}
    if result is not None and result.get("per_class"):
        aps = [r["ap"] for r in result["per_class"] if is_tail[int(r["index"])] and r.get("ap") is not None]
        out["mAP_tail_split"] = float(np.mean(aps)) if aps else None
        out["tail_labels_scored"] = len(aps)
    return out


def _phases(cfg):
    _check(cfg)
    phases = [TrainPhase("head", loss=_head_loss), PassPhase("transfer", finish=_finish, collect=_collect)]
    if bool(cfg.finetune):
        phases.append(TrainPhase("finetune", loss=_bce_all))
    return tuple(phases)


def _defaults(name: str, ensemble: int = 1, tail_weights_: str = "transfer"):
    def make():
        c = ml_collections.ConfigDict()
        c.name = name
        c.l_tail = 0  # number of tail labels (the least frequent); 0: use tail_max
        c.tail_max = 20.0  # with l_tail 0: labels with fewer training documents are tail
        c.dim = 128  # the representation r (eq. 3's d)
        c.normalize = True  # r / |r| times a learnable scale (the released code)
        c.scale_init = 10.0
        c.head_docs = "head"  # "head" (D_head) | "all"
        c.shots = 5  # t: documents per prototype (5 AAPD / RCV1, 1 EUR-Lex)
        c.rounds = 30  # S: prototype draws per head label
        c.ensemble = int(ensemble)  # G: tail-weight draws scored together (1 = HTTN)
        c.tail_weights = tail_weights_  # "transfer" (HTTN) | "imprint" (the imprinting baseline)
        c.finetune = False  # a short BCE fine-tune on all labels after the transfer
        c.phases = ml_collections.ConfigDict()
        c.phases.head = phase_config()
        c.phases.finetune = phase_config(epochs=1)
        return c

    return make


for _name, _desc, _g, _tw in (
    ("httn", "HTTN: head classifier, prototypes, transfer learner head -> tail, tail weights by attention", 1,
     "transfer"),
    ("ehttn", "EHTTN: HTTN with G sampled tail-weight sets, scores averaged", 30, "transfer"),
    ("imprinting", "imprinting: head classifier, tail weights = normalised tail prototypes (no transfer)", 1,
     "imprint"),
):
    METHODS.add(_name, Method(
        name=_name, description=_desc, defaults=_defaults(_name, _g, _tw), build_model=build_httn, loss=_head_loss,
        scores=httn_scores, phases=_phases, init_state=_init_state, scores_use_config=True, summary=summary,
        input_kinds=("text", "features")))
