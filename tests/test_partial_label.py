"""The partial-label baselines (ltjax/methods/partial_label.py): Hill, SPLC and pseudo_label."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax.methods import METHODS, partial_label
from ltjax.methods.base import PassContext
from ltjax.training.experiment import Experiment
from helpers import small_synthetic_config


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _hill_numpy(z, y, lamb=1.5, m=1.0, gamma=2.0):
    pm, p = _sigmoid(z - m), _sigmoid(z)
    return np.where(y > 0.5, -((1 - pm) ** gamma) * np.log(pm), (lamb - p) * p ** 2)


def _splc_numpy(z, y, tau=0.6, m=1.0, gamma=2.0, correct=True):
    zz = np.where(y > 0.5, z - m, z)
    yy = np.where(correct & (_sigmoid(zz) > tau), 1.0, y)
    p = _sigmoid(zz)
    pt = np.where(yy > 0.5, 1 - p, p)
    return -np.where(yy > 0.5, np.log(p), np.log(1 - p)) * pt ** gamma, yy


@pytest.mark.parametrize("variant", ["hill", "splc"])
def test_hill_and_splc_losses_by_hand_and_a_few_training_steps(variant):
    z = np.array([[2.0, -1.0, 3.0, 0.1], [0.3, 1.5, -2.0, 0.3]])
    y = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    cfg = partial_label._defaults()
    cfg.variant = variant
    state = {"steps": jnp.float32(4), "steps_per_epoch": jnp.float32(4)}
    got, aux = partial_label._loss({"logits": jnp.asarray(z)}, {"labels": jnp.asarray(y)}, None, cfg, state)
    if variant == "hill":
        want = _hill_numpy(z, y).sum()
        # the negatives' weight: a confident "negative" (p 0.95) costs less than a p 0.6 one would under BCE's slope
        assert _hill_numpy(np.array([3.0]), np.array([0.0]))[0] < -np.log(1 - _sigmoid(3.0))
    else:
        terms, yy = _splc_numpy(z, y)
        want = terms.sum()
        assert yy[0, 2] == 1 and yy[1, 0] == 0 and float(aux["recalled"]) == 1  # sigma(3) > 0.6 recalled
        before, _ = partial_label._loss({"logits": jnp.asarray(z)}, {"labels": jnp.asarray(y)}, None, cfg,
                                        {**state, "steps": jnp.float32(3)})
        np.testing.assert_allclose(float(before), _splc_numpy(z, y, correct=False)[0].sum(), rtol=1e-5)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    c = small_synthetic_config(**{"mesh.data": 1, "data.missing_ratio": 0.3, "train.steps_per_epoch": 3,
                                 "train.num_epochs": 3})
    c.method = METHODS.get("hill").defaults()
    c.method.variant = variant
    exp = Experiment(c)
    state, step = exp.initial_state(), exp.phase_step(0)
    it = exp.train_iterator()
    values = []
    for _ in range(8):
        state, m = step(state, {"main": exp.global_batch(next(it))}, exp.train_rng)
        values.append(float(m["loss"]))
    assert np.isfinite(values).all() and np.mean(values[-3:]) < np.mean(values[:3])
    assert float(jax.device_get(state.method_state["steps"])) == 8


def test_pseudo_label_pass_and_retrain_loss_by_hand():
    observed = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0]], np.float32)
    p = np.array([[0.99, 0.95, 0.2], [0.91, 0.5, 0.1], [0.3, 0.89, 0.97]], np.float32)
    cfg = small_synthetic_config()
    cfg.method = METHODS.get("pseudo_label").defaults()
    ctx = PassContext(gathered={"p": p}, labels=observed, params=None, state=None, config=cfg, meta=None)
    result = partial_label._pl_finish(ctx)
    want = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 1]], np.float32)  # p > 0.9 on unlabeled entries
    np.testing.assert_array_equal(result.state["pseudo"], want)
    assert result.info["pseudo_positives"] == 3 and result.info["observed_positives"] == 2
    z = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])
    batch = {"index": np.array([2, 0]), "labels": observed[[2, 0]]}
    got, _ = partial_label._bce_pseudo({"logits": jnp.asarray(z)}, batch, None, cfg.method, {"pseudo": jnp.asarray(want)})
    y = want[[2, 0]]
    bce = -(y * np.log(_sigmoid(z)) + (1 - y) * np.log(1 - _sigmoid(z)))
    np.testing.assert_allclose(float(got), bce.mean(), rtol=1e-5)


def test_training_batches_carry_their_example_index_for_the_pseudo_label_rows():
    c = small_synthetic_config(**{"mesh.data": 1, "data.missing_ratio": 0.4})
    c.method = METHODS.get("pseudo_label").defaults()
    exp = Experiment(c)
    plan = exp.phases[2]
    assert plan.name == "retrain" and [p.name for p in exp.phases] == ["train", "pseudo", "retrain"]
    it = exp.feed.train_stream(plan.samplers["main"], plan.length, plan.tags["main"])
    batch = next(it)
    idx = plan.samplers["main"].indices(np.arange(len(batch["labels"])))
    np.testing.assert_array_equal(batch["index"], idx)
    np.testing.assert_array_equal(batch["labels"], exp.dataset.split("train").labels[idx])


@pytest.mark.slow  # three phases through the loop: ~15 s here
def test_pseudo_label_runs_its_three_phases(tmp_path):
    from ltjax.training import loop

    c = small_synthetic_config(**{"data.missing_ratio": 0.4, "train.num_epochs": 1})
    c.method = METHODS.get("pseudo_label").defaults()
    c.method.threshold = 0.1  # a one-epoch model on the tiny data is not confident
    loop.train_and_evaluate(c, str(tmp_path))
    phases = json.load(open(os.path.join(tmp_path, "phases.json")))
    assert [p["name"] for p in phases] == ["train", "pseudo", "retrain"]
    rows = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
    info = [r for r in rows if r.get("kind") == "pass"][0]
    exp = Experiment(c)
    state, _ = exp.restore(str(tmp_path))
    pseudo = np.asarray(jax.device_get(state.method_state["pseudo"]))
    observed = exp.dataset.split("train").labels
    assert np.all(pseudo >= observed) and pseudo.sum() - observed.sum() == info["pseudo_positives"] > 0
