"""ltjax/training/optim.py: the one-cycle schedule by hand, parameter groups, Adam with L2, config errors."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ltjax.defaults import base_config
from ltjax.errors import ConfigError
from ltjax.training.optim import learning_rate_schedule, make_optimizer


def _cfg(**opt):
    c = base_config()
    c.optimizer.update(opt)
    return c


def test_one_cycle_schedule_equals_its_formula_by_hand():
    c = _cfg(lr=0.1)
    c.schedule.name = "one_cycle"
    c.schedule.warmup_steps = 0
    c.schedule.pct_start = 0.2
    c.schedule.div_factor = 25.0
    c.schedule.final_div_factor = 1e4
    total = 200
    sched = learning_rate_schedule(c.optimizer, c.schedule, 10, total)
    lo, hi, end = 0.1 / 25, 0.1, 0.1 / 25 / 1e4
    up = int(0.2 * total)

    def by_hand(t):
        if t <= up:  # half a cosine from lo up to hi
            return hi + (lo - hi) * (1 + math.cos(math.pi * t / up)) / 2
        frac = (t - up) / (total - up)  # half a cosine from hi down to end
        return end + (hi - end) * (1 + math.cos(math.pi * frac)) / 2

    for t in (0, 1, 17, up - 1, up, up + 1, 120, total - 1, total):
        np.testing.assert_allclose(float(sched(t)), by_hand(t), rtol=1e-5, atol=1e-9)


def test_one_cycle_refuses_a_second_warmup():
    c = _cfg()
    c.schedule.name = "one_cycle"
    with pytest.raises(ConfigError, match="warmup_steps=0"):
        learning_rate_schedule(c.optimizer, c.schedule, 10, 100)


def _params():
    return {"backbone": {"w": jnp.ones((3,))}, "head": {"w": jnp.full((2,), 2.0)}}


def _update(tx, params, grads):
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    return jax.device_get(updates)


def test_parameter_group_multipliers_and_weight_decay_reach_the_updates():
    params = _params()
    grads = {"backbone": {"w": jnp.asarray([0.5, -1.0, 2.0])}, "head": {"w": jnp.asarray([1.0, -3.0])}}
    c = _cfg(lr=0.1, momentum=0.0, weight_decay=0.0, grad_clip_norm=0.0)
    plain = _update(make_optimizer(c.optimizer, optax.constant_schedule(0.1)), params, grads)
    c.optimizer.param_groups = ml_collections.ConfigDict({"bb": {"pattern": "^backbone/", "lr_mult": 0.1, "weight_decay": 0.01}})
    grouped = _update(make_optimizer(c.optimizer, optax.constant_schedule(0.1), None, params), params, grads)
    np.testing.assert_allclose(grouped["head"]["w"], plain["head"]["w"], rtol=1e-6)
    # backbone: -0.1 * 0.1 * (g + 0.01 * p)
    want = -0.01 * (np.asarray(grads["backbone"]["w"]) + 0.01 * 1.0)
    np.testing.assert_allclose(grouped["backbone"]["w"], want, rtol=1e-6)


def test_parameter_groups_keep_clipping_global_and_frozen_parameters_still():
    params = _params()
    grads = {"backbone": {"w": jnp.asarray([30.0, 40.0, 0.0])}, "head": {"w": jnp.asarray([0.0, 0.0])}}
    c = _cfg(lr=1.0, momentum=0.0, weight_decay=0.0, grad_clip_norm=5.0)
    c.optimizer.param_groups = ml_collections.ConfigDict({"h": {"pattern": "^head/", "lr_mult": 2.0, "weight_decay": -1.0}})
    mask = {"backbone": {"w": True}, "head": {"w": True}}
    up = _update(make_optimizer(c.optimizer, optax.constant_schedule(1.0), mask, params), params, grads)
    np.testing.assert_allclose(up["backbone"]["w"], [-3.0, -4.0, 0.0], rtol=1e-6)  # norm 50 clipped to 5
    frozen = {"backbone": {"w": False}, "head": {"w": True}}
    up = _update(make_optimizer(c.optimizer, optax.constant_schedule(1.0), frozen, params), params, grads)
    np.testing.assert_array_equal(up["backbone"]["w"], 0.0)


def test_adam_adds_l2_to_the_gradient_like_torch_adam():
    params = _params()
    grads = {"backbone": {"w": jnp.asarray([0.5, -1.0, 2.0])}, "head": {"w": jnp.asarray([1.0, -3.0])}}
    c = _cfg(name="adam", lr=0.01, weight_decay=0.1, grad_clip_norm=0.0, b1=0.9, b2=0.999, eps=1e-8)
    tx = make_optimizer(c.optimizer, optax.constant_schedule(0.01))
    state = tx.init(params)
    p = jax.tree.map(np.asarray, params)
    m = jax.tree.map(np.zeros_like, p)
    v = jax.tree.map(np.zeros_like, p)
    for t in range(1, 4):  # torch.optim.Adam(weight_decay=0.1): g <- g + wd * p, then the Adam moments
        g = jax.tree.map(lambda gi, pi: np.asarray(gi) + 0.1 * pi, grads, p)
        m = jax.tree.map(lambda mi, gi: 0.9 * mi + 0.1 * gi, m, g)
        v = jax.tree.map(lambda vi, gi: 0.999 * vi + 0.001 * gi * gi, v, g)
        p = jax.tree.map(lambda pi, mi, vi: pi - 0.01 * (mi / (1 - 0.9 ** t)) / (np.sqrt(vi / (1 - 0.999 ** t)) + 1e-8),
                         p, m, v)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5), params, p)


@pytest.mark.parametrize("group,match", [
    ({"pattern": "^nothing/"}, "matches no trainable parameter"),
    ({"pattern": "^head/", "lr": 0.1}, "must have the fields pattern, lr_mult, weight_decay"),
    ({"pattern": "(", "lr_mult": 1.0}, "is not a regular expression"),
])
def test_parameter_group_mistakes_are_clear_errors(group, match):
    c = _cfg()
    c.optimizer.param_groups = ml_collections.ConfigDict({"g": group})
    with pytest.raises(ConfigError, match=match):
        make_optimizer(c.optimizer, optax.constant_schedule(0.1), None, _params())
