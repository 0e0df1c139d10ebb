"""LDRNet (seed 004): label-decoupled class features, Gaussian label-distribution reconstruction, EM fine-tuning.

Paper ``../shared/papers/004_...``, notes in ``../shared/REFERENCE.md`` section 4; no code was released, so
every choice the paper leaves open is a config field, with the default stated here.

Stage 1 (eqs. 1-7), ``LDRNetModel``:

* backbone tokens X_f: an image backbone's map F [B, H, W, D] flattened to HW tokens (the trunk of any
  registered image model with a spatial map: ResNet, DenseNet-121, glyphnet, ...), or a text backbone's
  token states [B, T, D] with its padding mask (``text_pool``: embeddings; ``text_bilstm``: BiLSTM states;
  ``minilm``: encoder states), so LDRNet also runs on report datasets; a linear map D -> ``width``;
* prompt (``method.language`` "minilm", the default offline; "clip", a user's CLIP text tower,
  :mod:`ltjax.models.clip_text`; "none", the no-prompt ablation): ``method.template`` ("The categories of
  the image are {}." with the class names joined by ", ") through the frozen encoder's token states W
  [T, E] (computed once, module constants), then a learnable MLP E -> width -> width (GELU);
* Q = [W' + P_word ; L + P_label] + P_position (eq. 2): L the learnable label queries [C, width], P_word /
  P_label learnable indicator vectors, P_position a learnable position embedding of the T + C query
  positions; the backbone tokens get no position embedding (the paper gives none; their spatial size
  follows the input);
* a Transformer encoder (``depth`` pre-LayerNorm layers, ``heads`` heads, MLP ``mlp_dim``, dropout; a final
  LayerNorm) over [Q ; X_f], padding tokens masked out as keys; X_class = the outputs at the C label-query
  positions; the classifier ``f_cls``: logit_c = <w_c, X_class[c]> + b_c (one weight vector per class on
  its own feature; parameters ``classifier/kernel`` [C, width], ``classifier/bias`` [C]); BCE (eq. 7).
  Defaults ``width`` 512, ``depth`` 2, ``heads`` 8, ``mlp_dim`` 2048, ``dropout`` 0.1: Query2Label's
  encoder scale (the paper's design relative), a 512-wide token space that fits the 1024-d DenseNet /
  2048-d ResNet maps after the linear map, and two layers so that label queries read the image tokens after
  the prompt has shaped them.

Stage 2 (eqs. 8-16), after stage 1, ``method.rounds`` EM rounds, each:

1. passes ``stats_mean`` and ``stats_cov`` over the training split (evaluation mode, no augmentation):
   for every class c and label j in {0, 1}, the mean mu_c^j and the unbiased covariance Sigma_c^j of
   X_class[:, c] over the images with y_c = j (eqs. 9-10), in two passes (means, then centred second
   moments) summed on the devices (:class:`ltjax.methods.base.PassPhase` ``reduce``).
   ``method.covariance``: "full" (Cholesky factors [C, 2, width, width]), "diagonal" (standard deviations)
   or "auto" (the default: full when its factors take at most ``method.max_cov_gb`` GiB, else diagonal;
   the log says which).  Every covariance gets ``method.ridge`` x mean variance added on its diagonal (a
   positive-definite factor even with fewer examples than dimensions).  A class-label cell with fewer than
   2 examples: its covariance is the average of the cells with >= 2 (of either label); with 0 examples its
   mean is the average of the other classes' means for that label; never a NaN (the counts go to the log);
2. phase ``m_step``: only the classifier trains, on virtual features drawn inside the jitted step from
   the step's key (``TrainPhase.loss_rng``): per virtual image (``method.virtual_batch``) and class, r_c ~
   U(0, 1) picks the label-1 Gaussian when r_c <= p_c, else the label-0 one (eq. 13), BCE on those labels;
   reverse sampling p_c = (1/(F_c + eps))^alpha / sum_j (1/(F_j + eps))^alpha (eq. 12; ``alpha`` 0.9, eps
   1e-9, F_c the training frequency n_c / N), or ``method.sampling`` "uniform" (p_c = F_c: virtual images
   drawn like the training images, head classes positive as often as in the data: Table 6's "uniform
   sampling ... [which] might result in fewer tail samples compared to head samples").  The backbone runs in evaluation mode on the step's real batch, which the loss does not
   read, so XLA removes that computation;
3. phase ``e_step``: the encoder and backbone train with the classifier frozen, under the multi-label GCE
   (q ``method.gce_q`` 0.8; ``ltjax.losses.gce``: l = (1 - p_t^q) / q per class, the paper's eq. 16 being
   garbled) on real batches.

Phase lengths and optimisers: ``method.phases.stage1`` (0 epochs = ``train.num_epochs``), ``m_step`` and
``e_step`` (every round reads the same block).  The M-step defaults to 10 epochs (of virtual batches, one
per real batch) at the run's learning rate held constant, without warm-up: it is cheap, and one epoch under
a recipe's warm-up and decay leaves the classifier where stage 1 put it (tiles_voc_lt, SGD recipe, seed 0:
one epoch of a 50-step warm-up times a 36-step cosine moved the class weight vectors by < 4% and the biases
by ~0.02, and mAP went 84.05 -> 84.46; 10 constant epochs give 85.63, tail 66.45 -> 70.58; over 3 seeds
the EM round adds +0.54 mAP with 10 epochs and -0.16 with one).  The evidence is mixed: on iu_xray_reports
(text recipe, Adam 1e-3) one epoch under the recipe's warm-up added +0.94 on average and 10 epochs +0.41
(docs/RESULTS.md, "LDRNet (issue 15)"); the paper gives no length.  The E-step defaults to 1 epoch under
the run's schedule; the text recipe (configs/text.py, Adam 1e-3) sets its lr to the paper's 1e-4, as GCE at
1e-3 drove padchest_reports' test mAP down at every step (73.4 -> 64.8 in one epoch; docs/RESULTS.md).
Paper recipe (configs/ldrnet_*.py): Adam lr 1e-4, betas
(0.9, 0.999), weight decay 1e-5, batch 32, 512 px resized then 448 cropped.
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
from ltjax.methods.base import (
    METHODS,
    Method,
    PassPhase,
    PassResult,
    TrainPhase,
    phase_config,
    sigmoid_scores,
)
from ltjax.methods.cssfe import SpatialBackbone

LANGUAGES = ("minilm", "clip", "none")
COVARIANCES = ("auto", "full", "diagonal")
SAMPLINGS = ("reverse", "uniform")
CLASSIFIER = r"^classifier/"
ENCODER_AND_BACKBONE = r"^(?!classifier/)"
EPS = 1e-9


# ---------------------------------------------------------------------------------------------------
# stage 1: the model


class EncoderLayer(nn.Module):
    width: int
    heads: int
    mlp_dim: int
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, *, train: bool):
        h = nn.LayerNorm(dtype=self.dtype, name="ln_1")(x)
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, qkv_features=self.width, dropout_rate=self.dropout, deterministic=not train,
            dtype=self.dtype, name="attention")(h, h, mask=key_mask)
        x = x + nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.LayerNorm(dtype=self.dtype, name="ln_2")(x)
        h = nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_1")(h)
        h = nn.Dropout(self.dropout, deterministic=not train)(nn.gelu(h))
        h = nn.Dense(self.width, dtype=self.dtype, name="mlp_2")(h)
        return x + nn.Dropout(self.dropout, deterministic=not train)(h)


class GroupLinear(nn.Module):
    """logit_c = <w_c, x[:, c]> + b_c: one weight vector per class on its own class feature."""

    num_classes: int
    width: int

    @nn.compact
    def __call__(self, x):
        w = self.param("kernel", nn.initializers.normal(self.width ** -0.5), (self.num_classes, self.width))
        b = self.param("bias", nn.initializers.zeros, (self.num_classes,))
        return w, b


def group_logits(x, w, b):
    """[..., C, width] class features -> [..., C] logits with the per-class weights ``w`` [C, width]."""
    return jnp.einsum("...cd,cd->...c", x.astype(jnp.float32), w) + b


class TokenBackbone(nn.Module):
    """A text trunk with ``tokens=True`` under ``backbone/trunk`` (where every model keeps it, so that init
    hooks, pretrained loaders and ``model.frozen_stages`` find it): -> (states [B, T, D], mask [B, T])."""

    trunk: nn.Module

    def __call__(self, x, *, train: bool):
        return self.trunk(x, train=train)


class LDRNetModel(nn.Module):
    # image: SpatialBackbone (-> [B, H, W, D]); text: TokenBackbone (-> states, mask); parameters under
    # backbone/trunk as in every ltjax model
    backbone: nn.Module
    kind: str  # "image" | "text"
    prompt: Any  # np.ndarray [T, E] of the frozen encoder's prompt token states, or None
    num_classes: int
    width: int = 512
    depth: int = 2
    heads: int = 8
    mlp_dim: int = 2048
    dropout: float = 0.1
    dtype: Any = jnp.float32

    def tokens(self, x, *, train: bool):
        if self.kind == "image":
            f = self.backbone(x, train=train)
            b, h, w, d = f.shape
            return f.reshape(b, h * w, d), None
        f, mask = self.backbone(x, train=train)
        return f, mask

    @nn.compact
    def __call__(self, x, *, train: bool):
        f, mask = self.tokens(x, train=train)
        b = f.shape[0]
        f = nn.Dense(self.width, dtype=self.dtype, name="input_proj")(f)
        init = nn.initializers.normal(0.02)
        queries = self.param("label_queries", init, (self.num_classes, self.width)) + self.param(
            "p_label", init, (self.width,))
        parts = []
        if self.prompt is not None:
            w = jnp.asarray(self.prompt, jnp.float32)
            w = nn.Dense(self.width, name="prompt_mlp_1")(w)
            w = nn.Dense(self.width, name="prompt_mlp_2")(nn.gelu(w))
            parts.append(w + self.param("p_word", init, (self.width,)))
        parts.append(queries)
        q = jnp.concatenate(parts, axis=0)
        q = q + self.param("p_position", init, q.shape)
        n_q = q.shape[0]
        seq = jnp.concatenate([jnp.broadcast_to(q.astype(f.dtype), (b, *q.shape)), f], axis=1)
        keys = jnp.ones((b, seq.shape[1]), bool) if mask is None else jnp.concatenate(
            [jnp.ones((b, n_q), bool), mask], axis=1)
        key_mask = nn.make_attention_mask(jnp.ones((b, seq.shape[1]), bool), keys)
        for i in range(self.depth):
            seq = EncoderLayer(self.width, self.heads, self.mlp_dim, self.dropout, self.dtype, name=f"layer_{i}")(
                seq, key_mask, train=train)
        seq = nn.LayerNorm(dtype=self.dtype, name="ln_final")(seq)
        x_class = seq[:, n_q - self.num_classes:n_q].astype(jnp.float32)
        w, bias = GroupLinear(self.num_classes, self.width, name="classifier")(x_class)
        return {"logits": group_logits(x_class, w, bias), "class_features": x_class, "cls_w": w, "cls_b": bias}


def prompt_text(class_names, template: str) -> str:
    if "{}" not in template:
        raise ValueError(f"method.template must contain '{{}}' where the label names go, got {template!r}")
    return template.format(", ".join(str(n).replace("_", " ") for n in class_names))


def prompt_states(method_cfg, class_names) -> np.ndarray | None:
    """float32 [T, E]: the frozen language model's token states of the prompt (None for language "none")."""
    language = str(method_cfg.language)
    if language == "none":
        return None
    text = prompt_text(class_names, str(method_cfg.template))
    if language == "minilm":
        from ltjax.data.wordpiece import WordPieceTokenizer
        from ltjax.models.minilm import MAX_POSITIONS, encode_tokens

        full = len(WordPieceTokenizer.minilm().encode(text, None))
        if full > MAX_POSITIONS:  # e.g. PadChest's 183 label names
            import warnings

            warnings.warn(f"LDRNet's prompt has {full} MiniLM tokens; MiniLM reads {MAX_POSITIONS}, so the label "
                          f"names past that point are cut from the prompt (the label queries still cover every "
                          f"class); shorten method.template or use method.language='none'", stacklevel=2)
        return encode_tokens(text, max_length=MAX_POSITIONS)
    if language == "clip":
        from ltjax.models.clip_text import encode

        if not str(method_cfg.clip_weights) or not str(method_cfg.clip_tokenizer):
            raise ValueError("method.language='clip' needs method.clip_weights and method.clip_tokenizer "
                             "(ltjax/models/clip_text.py)")
        _, hidden, eot = encode([text], str(method_cfg.clip_weights), str(method_cfg.clip_tokenizer),
                                heads=int(method_cfg.clip_heads), act=str(method_cfg.clip_act), return_hidden=True)
        return hidden[0, : int(eot[0]) + 1]
    raise ValueError(f"method.language must be one of {', '.join(LANGUAGES)}, got {language!r}")


def build_ldrnet(config, meta, dtype) -> LDRNetModel:
    m = config.method
    _check(m)
    base = models.build_model(config.model, meta.num_classes, meta.input_shape, dtype, vocab_size=meta.vocab_size)
    trunk = getattr(getattr(base, "backbone", None), "trunk", None)
    if trunk is None:
        raise ValueError(f"LDRNet needs a backbone with a token map; model {config.model.name!r} has no backbone trunk")
    if meta.input_kind == "image" or (meta.input_kind == "features" and len(meta.input_shape) == 3):
        backbone, kind = SpatialBackbone(trunk=trunk), "image"
    elif meta.input_kind == "text":
        if "tokens" not in {f.name for f in trunk.__dataclass_fields__.values()}:
            raise ValueError(f"LDRNet on text needs a text model with token states (text_pool, text_bilstm, minilm); "
                             f"{config.model.name!r} has none")
        backbone, kind = TokenBackbone(trunk=trunk.clone(tokens=True)), "text"
    else:
        raise ValueError(f"LDRNet needs images or token sequences; {meta.name} is a {meta.input_kind} dataset")
    return LDRNetModel(backbone=backbone, kind=kind, prompt=prompt_states(m, meta.class_names),
                       num_classes=meta.num_classes, width=int(m.width), depth=int(m.depth), heads=int(m.heads),
                       mlp_dim=int(m.mlp_dim), dropout=float(m.dropout), dtype=dtype)


# ---------------------------------------------------------------------------------------------------
# stage 2: statistics, sampling, EM


def reverse_probabilities(counts, num_train: int, alpha: float, sampling: str = "reverse") -> np.ndarray:
    """p_c of eq. 12: (1/(F_c + eps))^alpha / sum_j (1/(F_j + eps))^alpha, F_c = n_c / N (float64 on the host);
    ``sampling="uniform"``: p_c = F_c, the label rates of the training images (instance-uniform sampling)."""
    counts = np.asarray(counts, np.float64)
    freq = counts / max(int(num_train), 1)
    if sampling == "uniform":
        return freq.astype(np.float32)
    w = np.power(1.0 / (freq + EPS), float(alpha))
    return (w / w.sum()).astype(np.float32)


def covariance_kind(method_cfg, num_classes: int, width: int) -> str:
    kind = str(method_cfg.covariance)
    if kind != "auto":
        return kind
    gib = num_classes * 2 * width * width * 4 / 2**30
    return "full" if gib <= float(method_cfg.max_cov_gb) else "diagonal"


def _init_state(config, meta, dataset, outputs):
    c, w = (int(d) for d in outputs["class_features"].shape[-2:])
    kind = covariance_kind(config.method, c, w)
    train = dataset.split("train").labels
    p = reverse_probabilities(np.asarray(train).sum(axis=0), len(train), float(config.method.alpha),
                              str(config.method.sampling))
    scale = np.zeros((c, 2, w, w) if kind == "full" else (c, 2, w), np.float32)
    return {"mu": np.zeros((c, 2, w), np.float32), "scale": scale, "p": p}


def _cells(labels, valid):
    """[B, C, 2] weights of each example in the (class, label 0 / label 1) cells."""
    y = labels * valid[:, None]
    return jnp.stack([(1.0 - labels) * valid[:, None], y], axis=-1)


def _reduce_means(outputs, labels, valid, state):
    x = outputs["class_features"].astype(jnp.float32)
    a = _cells(labels, valid)
    return {"count": a.sum(axis=0), "sum": jnp.einsum("bcj,bcd->cjd", a, x)}


def _reduce_second(outputs, labels, valid, state):
    x = outputs["class_features"].astype(jnp.float32)
    a = _cells(labels, valid)
    centred = x[:, :, None, :] - state["mu"][None]  # [B, C, 2, D]
    if state["scale"].ndim == 4:
        return {"m2": jnp.einsum("bcj,bcjd,bcje->cjde", a, centred, centred)}
    return {"m2": jnp.einsum("bcj,bcjd->cjd", a, centred * centred)}


def finish_means(ctx):
    count, total = ctx.gathered["count"].astype(np.float64), ctx.gathered["sum"].astype(np.float64)
    mu = total / np.maximum(count, 1)[..., None]
    empty = count == 0
    for j in (0, 1):  # an empty cell: the average of the other classes' means for that label
        have = ~empty[:, j]
        if empty[:, j].any():
            mu[empty[:, j], j] = mu[have, j].mean(axis=0) if have.any() else 0.0
    # p_c (eq. 12) from this config's sampling and alpha at every round: nothing of stage 1 depends on them,
    # so a run resumed from another row's stage-1 checkpoint (scripts/ablate_ldrnet.py) samples as its config says
    labels = np.asarray(ctx.labels)
    p = reverse_probabilities(labels.sum(axis=0), len(labels), float(ctx.config.method.alpha),
                              str(ctx.config.method.sampling))
    state = {**ctx.state, "mu": mu.astype(np.float32), "p": p.astype(np.asarray(ctx.state["p"]).dtype)}
    return PassResult(state=state, info={"cells_empty": int(empty.sum()), "cells_single": int((count == 1).sum())})


def stats_from_moments(count, m2, ridge: float) -> np.ndarray:
    """The Cholesky factors [C, 2, D, D] (full: ``m2`` [C, 2, D, D]) or standard deviations [C, 2, D] (diagonal)
    from centred second moments: unbiased covariance, cells with < 2 examples take the mean covariance of
    the others, ``ridge`` x (mean variance) on the diagonal."""
    count = np.asarray(count, np.float64)
    m2 = np.asarray(m2, np.float64)
    full = m2.ndim == 4
    ok = count >= 2
    cov = m2 / np.maximum(count - 1, 1)[(...,) + (None,) * (2 if full else 1)]
    if ok.any():
        pooled = cov[ok].mean(axis=0)
    else:
        d = m2.shape[-1]
        pooled = np.eye(d) if full else np.ones(d)
    cov[~ok] = pooled
    var = np.einsum("cjdd->cjd", cov) if full else cov
    level = max(float(var[ok].mean()) if ok.any() else 1.0, 1e-12)
    if full:
        d = m2.shape[-1]
        cov = cov + ridge * level * np.eye(d)
        return np.linalg.cholesky(cov).astype(np.float32)
    return np.sqrt(np.maximum(cov, 0) + ridge * level).astype(np.float32)


def _finish_second(ctx):
    count = (np.asarray(ctx.labels) > 0).sum(axis=0)
    count = np.stack([len(ctx.labels) - count, count], axis=-1)
    scale = stats_from_moments(count, ctx.gathered["m2"], float(ctx.config.method.ridge))
    return PassResult(state={**ctx.state, "scale": scale}, info={"cells_pooled": int((count < 2).sum())})


def sample_virtual(rng, state, num: int):
    """(features [num, C, D], labels [num, C]): per virtual image and class, label 1 when r_c <= p_c (eq. 13),
    then a draw from that cell's Gaussian N(mu, Sigma) (Cholesky factor or standard deviations)."""
    k_label, k_noise = jax.random.split(rng)
    mu, scale, p = state["mu"], state["scale"], state["p"]
    c, _, d = mu.shape
    labels = (jax.random.uniform(k_label, (num, c)) <= p[None]).astype(jnp.float32)
    z = jax.random.normal(k_noise, (num, c, d))
    if scale.ndim == 4:  # both cells' draws [num, C, 2, D] (a gathered factor per draw would be num x C x D x D)
        both = mu[None] + jnp.einsum("cjde,nce->ncjd", scale, z)
    else:
        both = mu[None] + scale[None] * z[:, :, None, :]
    return jnp.where(labels[:, :, None] > 0, both[:, :, 1], both[:, :, 0]), labels


def _bce(outputs, batch, stats, method_cfg, state=None):
    del stats, method_cfg, state
    return losses.masked_mean(losses.sigmoid_bce(outputs["logits"], jnp.asarray(batch["labels"], jnp.float32)),
                              batch.get("mask")), {}


def _m_step_loss(outputs, batch, stats, method_cfg, state=None, rng=None):
    del batch, stats
    x, y = sample_virtual(rng, state, int(method_cfg.virtual_batch))
    logits = group_logits(x, outputs["cls_w"], outputs["cls_b"])
    return jnp.mean(losses.sigmoid_bce(logits, y)), {"virtual_positive_rate": y.mean()}


def _e_step_loss(outputs, batch, stats, method_cfg, state=None):
    del state
    loss = losses.compute_loss("gce", outputs["logits"], jnp.asarray(batch["labels"], jnp.float32),
                               batch.get("mask"), stats, {"q": float(method_cfg.gce_q)})
    return loss, {}


def _phases(method_cfg):
    out = [TrainPhase("stage1")]
    for r in range(int(method_cfg.rounds)):
        out += [
            PassPhase(f"stats_mean_{r}", finish=finish_means, reduce=_reduce_means),
            PassPhase(f"stats_cov_{r}", finish=_finish_second, reduce=_reduce_second),
            TrainPhase(f"m_step_{r}", block="m_step", trainable=(CLASSIFIER,), loss=_m_step_loss, loss_rng=True,
                       train_mode=False),
            TrainPhase(f"e_step_{r}", block="e_step", trainable=(ENCODER_AND_BACKBONE,), loss=_e_step_loss),
        ]
    return tuple(out)


def _check(m):
    for field, allowed in (("language", LANGUAGES), ("covariance", COVARIANCES), ("sampling", SAMPLINGS)):
        if str(m[field]) not in allowed:
            raise ValueError(f"method.{field} must be one of {', '.join(allowed)}, got {m[field]!r}")
    if int(m.width) % int(m.heads):
        raise ValueError(f"method.width ({m.width}) must be divisible by method.heads ({m.heads})")
    if int(m.rounds) < 0 or int(m.virtual_batch) < 1:
        raise ValueError(f"method.rounds must be >= 0 and method.virtual_batch >= 1, got {m.rounds}, {m.virtual_batch}")
    if not 0.0 <= float(m.gce_q) <= 1.0 or float(m.alpha) < 0 or float(m.ridge) < 0 or math.isnan(float(m.alpha)):
        raise ValueError("method.gce_q must lie in [0, 1], method.alpha and method.ridge must be >= 0")


def _defaults():
    c = ml_collections.ConfigDict()
    c.name = "ldrnet"
    c.width, c.depth, c.heads, c.mlp_dim, c.dropout = 512, 2, 8, 2048, 0.1
    c.language = "minilm"  # "minilm" | "clip" (clip_weights + clip_tokenizer) | "none" (no prompt)
    c.template = "The categories of the image are {}."
    c.clip_weights, c.clip_tokenizer, c.clip_heads, c.clip_act = "", "", 0, "quick_gelu"
    c.rounds = 1  # EM rounds after stage 1 (0 = stage 1 only, the ablation row)
    c.covariance = "auto"  # "auto" | "full" | "diagonal"
    c.max_cov_gb = 1.0
    c.ridge = 1e-3
    c.sampling = "reverse"  # "reverse" (eq. 12) | "uniform" (p_c = F_c, the data's own label rates)
    c.alpha = 0.9
    c.virtual_batch = 32
    c.gce_q = 0.8
    c.phases = ml_collections.ConfigDict()
    c.phases.stage1 = phase_config()
    # the M-step costs little (a linear classifier on virtual features; the backbone is not run): 10 epochs
    # at the phase's constant lr without warm-up (module docstring)
    c.phases.m_step = phase_config(epochs=10)
    c.phases.m_step.schedule.name = "constant"
    c.phases.m_step.schedule.warmup_steps = 0
    c.phases.e_step = phase_config(epochs=1)
    return c


METHODS.add("ldrnet", Method(
    "ldrnet", "LDRNet (seed 004): label queries and a prompt attend to the backbone tokens (class-aware "
    "features), then EM rounds: class Gaussians, a classifier on reverse-sampled virtual features, GCE "
    "fine-tuning of the encoder", _defaults, build_ldrnet, _bce, sigmoid_scores, phases=_phases,
    init_state=_init_state, input_kinds=("image", "text")))
