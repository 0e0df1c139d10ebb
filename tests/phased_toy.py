"""A toy phased method that uses every part of the method framework, for the framework's tests.

``toy_phased`` on the tiny synthetic config: phase ``warm`` trains everything and keeps a running mean of
the predicted probabilities in the method state (``update_state``); pass ``means`` stores each class's
mean training feature in the method state; phase ``head`` re-initialises the head and trains it alone
on two streams (``main`` uniform, ``tail`` reverse-sampled), with its own learning rate.  Scores: NCM
on the stored means.  Importing this module registers the method (once).
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax import losses
from ltjax.methods import METHODS, Method, PassPhase, PassResult, TrainPhase, phase_config, standard_model
from ltjax.methods.decoupled import class_means, ncm_scores

NAME = "toy_phased"


def _bce(outputs, batch, stats, method_cfg, state=None):
    return losses.masked_mean(losses.sigmoid_bce(outputs["logits"], jnp.asarray(batch["labels"], jnp.float32)),
                              batch.get("mask")), {}


def _two_stream_bce(outputs, batch, stats, method_cfg, state=None):
    a, _ = _bce(outputs["main"], batch["main"], stats, method_cfg)
    b, _ = _bce(outputs["tail"], batch["tail"], stats, method_cfg)
    return 0.5 * (a + b), {"loss_tail": b}


def _running_mean(state, outputs, batch, method_cfg):
    p = jax.nn.sigmoid(outputs["logits"]).mean(axis=0)
    return {**state, "running_p": method_cfg.momentum * state["running_p"] + (1 - method_cfg.momentum) * p,
            "seen": state["seen"] + 1}


def _init_state(config, meta, dataset, outputs):
    d = int(outputs["features"].shape[-1])
    return {"running_p": np.zeros((meta.num_classes,), np.float32), "seen": np.zeros((), np.int32),
            "class_means": np.zeros((meta.num_classes, d), np.float32)}


def _means(ctx):
    return PassResult(state={**ctx.state, "class_means": class_means(ctx.gathered["features"], ctx.labels)},
                      info={"examples": len(ctx.labels)})


def _phases(method_cfg):
    return (
        TrainPhase("warm", update_state=_running_mean),
        PassPhase("means", finish=_means, collect=lambda outputs, batch: {"features": outputs["features"]}),
        TrainPhase("head", trainable=(r"^head/",), reinit=(r"^head/",), streams=("main", "tail"),
                   loss=_two_stream_bce),
    )


def _defaults():
    c = ml_collections.ConfigDict()
    c.name = NAME
    c.momentum = 0.9
    c.phases = ml_collections.ConfigDict()
    c.phases.warm = phase_config(epochs=1)
    c.phases.head = phase_config(epochs=1, optimizer={"lr": 0.005}, streams={"main": "uniform", "tail": "reverse"})
    return c


if NAME not in METHODS:
    METHODS.add(NAME, Method(NAME, "framework test method", _defaults, standard_model, _bce, ncm_scores,
                             phases=_phases, init_state=_init_state))


def config(**overrides):
    """The tiny synthetic config running ``toy_phased`` (dotted-path overrides)."""
    from helpers import small_synthetic_config

    c = small_synthetic_config(**overrides)
    c.method = METHODS.get(NAME).defaults()
    return c
