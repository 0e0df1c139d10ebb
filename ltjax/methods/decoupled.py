"""The decoupling baselines of Kang et al., ICLR 2020, "Decoupling Representation and Classifier for
Long-Tailed Recognition", as phased methods: ``crt``, ``lws``, ``tau_norm`` and ``ncm``.

Every one starts with the phase ``joint``: the standard model trained end to end with BCE and the
dataset's own sampler and recipe (its length: ``method.phases.joint``; 0 epochs = ``train.num_epochs``).
Then, with the representation (backbone and neck) fixed:

* ``crt`` (classifier re-training): phase ``classifier`` re-initialises the head and retrains it alone with
  BCE under class-aware sampling;
* ``lws`` (learnable weight scaling): phase ``scale`` keeps the head and learns one scale f_c per class
  (logit_c = f_c * (w_c . x) + f_c * b_c, f_c initialised to 1 and held at 1 in ``joint``) under
  class-aware sampling;
* ``tau_norm``: no second training phase; a host step ``normalise`` rewrites the head's weights as
  w_c / ||w_c||^tau (``method.tau``, default 1; the bias is kept);
* ``ncm`` (nearest class mean): a pass ``class_means`` over the training split stores, in the method
  state, the mean feature of every class's positive examples; scores are (1 + cos(x, mu_c)) / 2 (the
  classifier's sigmoid for a class without a training positive).

Second-phase recipe: Kang et al.'s 10 epochs (``method.phases.<phase>.epochs``), a cosine schedule from
``optimizer.lr`` without warm-up, ``class_aware`` sampling; the model runs in evaluation mode there
(no dropout, BatchNorm statistics frozen), so the head learns on the features the test set will see.

Note for multi-label mAP: AP is computed per class over the examples, so any increasing per-class
transformation of the scores leaves it unchanged.  LWS and tau-normalisation rescale each class's logit
by a positive factor (the bias aside) and therefore cannot change a class's AP except through the bias
term; they do change what ranks classes within an example (P@k, nDCG@k) and thresholded scores (F1).
cRT and NCM change the per-class ranking itself.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax import losses
from ltjax.methods.base import (METHODS, Method, PassPhase, PassResult, TrainPhase, phase_config, sigmoid_scores,
                                standard_model)

HEAD = r"^head/"  # the classifier head's parameters in the standard model
SECOND_PHASE = dict(epochs=10, schedule={"name": "cosine", "warmup_steps": 0}, streams={"main": "class_aware"})


def _bce(outputs, batch, stats, method_cfg, state=None):
    del stats, method_cfg, state
    return losses.masked_mean(losses.sigmoid_bce(outputs["logits"], jnp.asarray(batch["labels"], jnp.float32)),
                              batch.get("mask")), {}


def _defaults(name: str, second: str | None = None, **extra):
    def defaults():
        c = ml_collections.ConfigDict()
        c.name = name
        c.update(extra)
        c.phases = ml_collections.ConfigDict()
        c.phases.joint = phase_config()
        if second is not None:
            c.phases[second] = phase_config(**SECOND_PHASE)
        return c

    return defaults


# ---- cRT ----------------------------------------------------------------------------------------

def _crt_phases(method_cfg):
    return (TrainPhase("joint"),
            TrainPhase("classifier", trainable=(HEAD,), reinit=(HEAD,), train_mode=False))


# ---- LWS ----------------------------------------------------------------------------------------

class ScaledClassifier(nn.Module):
    """The standard ``Classifier`` with a learnable per-class scale on its logits (parameter ``scale``,
    [C], initialised to 1).  ``backbone`` and ``head`` keep the standard model's names, so their
    parameters (paths and initial values) are exactly those of the standard model."""

    backbone: nn.Module
    head: nn.Module
    num_classes: int

    @nn.compact
    def __call__(self, x, *, train: bool):
        features = self.backbone(x, train=train)
        logits = jnp.asarray(self.head(features, train=train), jnp.float32)
        scale = self.param("scale", nn.initializers.ones, (self.num_classes,), jnp.float32)
        return {"logits": logits * scale, "features": features}


def _lws_model(config, meta, dtype):
    base = standard_model(config, meta, dtype)
    return ScaledClassifier(base.backbone, base.head, meta.num_classes)


def _lws_phases(method_cfg):
    return (TrainPhase("joint", trainable=(r"^(?!scale$)",)),
            TrainPhase("scale", trainable=(r"^scale$",), train_mode=False))


# ---- tau-normalisation --------------------------------------------------------------------------

def head_kernel_path(params) -> tuple[str, ...]:
    """The path of the head's kernel ([D, C]) in the standard model's params (linear or cosine head)."""
    head = params["head"]
    if "fc" in head:
        return ("head", "fc", "kernel")
    if "kernel" in head:
        return ("head", "kernel")
    raise ValueError(f"tau_norm: the model's head has no kernel (found {sorted(head)}); use a linear or cosine head")


def tau_normalise(kernel: np.ndarray, tau: float) -> np.ndarray:
    """w_c / ||w_c||^tau for every column c of a [D, C] kernel (a zero column stays zero)."""
    kernel = np.asarray(kernel)
    norms = np.linalg.norm(kernel.astype(np.float64), axis=0, keepdims=True)
    scale = np.where(norms > 0, np.power(np.maximum(norms, 1e-300), -float(tau)), 1.0)
    return (kernel * scale).astype(kernel.dtype)


def _tau_finish(ctx):
    tau = float(ctx.config.method.tau)
    if tau < 0:
        raise ValueError(f"method.tau must be >= 0 (0 leaves the classifier unchanged, 1 normalises it), got {tau}")
    params = jax.tree.map(np.asarray, ctx.params)
    path = head_kernel_path(params)
    node = params
    for key in path[:-1]:
        node = node[key]
    before = np.linalg.norm(node[path[-1]], axis=0)
    node[path[-1]] = tau_normalise(node[path[-1]], tau)
    return PassResult(params=params, info={"norm_min": float(before.min()), "norm_max": float(before.max())})


def _tau_phases(method_cfg):
    return (TrainPhase("joint"), PassPhase("normalise", finish=_tau_finish))


# ---- NCM ----------------------------------------------------------------------------------------

def _ncm_init_state(config, meta, dataset, outputs):
    dim = int(outputs["features"].shape[-1])
    return {"class_means": np.zeros((meta.num_classes, dim), np.float32)}


def class_means(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[C, D]: the mean feature of each class's positive examples (zeros for a class without one)."""
    pos = (np.asarray(labels) > 0).astype(np.float64)
    counts = pos.sum(axis=0)
    sums = pos.T @ np.asarray(features, np.float64)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def _ncm_finish(ctx):
    means = class_means(ctx.gathered["features"], ctx.labels)
    return PassResult(state={"class_means": means}, info={"examples": int(len(ctx.labels)),
                                                          "classes_without_mean": int((np.abs(means).sum(1) == 0).sum())})


def ncm_scores(outputs, state=None):
    """(1 + cos(features, class mean)) / 2 where the class has a mean, else the classifier's sigmoid."""
    fallback = sigmoid_scores(outputs)
    if state is None or "class_means" not in state:
        return fallback
    f = outputs["features"].astype(jnp.float32)
    mu = state["class_means"].astype(jnp.float32)
    f = f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
    mu_norm = jnp.linalg.norm(mu, axis=-1)
    mu = mu / jnp.maximum(mu_norm, 1e-12)[:, None]
    cos = f @ mu.T
    return jnp.where(mu_norm[None, :] > 0, (1.0 + cos) / 2.0, fallback)


def _collect_features(outputs, batch):
    return {"features": outputs["features"].astype(jnp.float32)}


def _ncm_phases(method_cfg):
    return (TrainPhase("joint"), PassPhase("class_means", finish=_ncm_finish, collect=_collect_features))


for _m in (
    Method("crt", "cRT (Kang et al. 2020): joint BCE training, then the head re-initialised and retrained "
           "alone with class-aware sampling", _defaults("crt", "classifier"), standard_model, _bce, sigmoid_scores,
           phases=_crt_phases),
    Method("lws", "LWS (Kang et al. 2020): joint BCE training, then one learnable scale per class trained "
           "alone with class-aware sampling", _defaults("lws", "scale"), _lws_model, _bce, sigmoid_scores,
           phases=_lws_phases),
    Method("tau_norm", "tau-normalisation (Kang et al. 2020): joint BCE training, then w_c / ||w_c||^tau",
           _defaults("tau_norm", None, tau=1.0), standard_model, _bce, sigmoid_scores, phases=_tau_phases),
    Method("ncm", "NCM (Kang et al. 2020): joint BCE training, then scores by cosine to each class's mean "
           "training feature", _defaults("ncm"), standard_model, _bce, ncm_scores, phases=_ncm_phases,
           init_state=_ncm_init_state),
):
    METHODS.add(_m.name, _m)
