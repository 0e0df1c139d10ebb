"""Training core: optimiser/schedule recipe, the jitted step (sharded == single device, one trace),
frozen parameters, and in-process resume."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ltjax.defaults import base_config
from ltjax.training.loop import Experiment
from ltjax.training.optim import learning_rate_schedule, make_optimizer

from helpers import small_synthetic_config


def test_db_recipe_learning_rate_schedule():
    c = base_config()  # defaults are the DB/HMT recipe: lr 0.02, warm-up 500 from lr/3, x0.1 at epochs 5, 7
    spe = 122
    lr = learning_rate_schedule(c.optimizer, c.schedule, spe, 8 * spe)
    np.testing.assert_allclose(float(lr(0)), 0.02 / 3, rtol=1e-6)
    np.testing.assert_allclose(float(lr(250)), 0.02 * (1 / 3 + (2 / 3) * 0.5), rtol=1e-6)
    np.testing.assert_allclose(float(lr(500)), 0.02, rtol=1e-6)
    np.testing.assert_allclose(float(lr(5 * spe - 1)), 0.02, rtol=1e-6)
    np.testing.assert_allclose(float(lr(5 * spe)), 0.002, rtol=1e-6)
    np.testing.assert_allclose(float(lr(7 * spe)), 0.0002, rtol=1e-6)


def test_sgd_matches_torch_style_update_by_hand():
    # torch.optim.SGD(lr, momentum, weight_decay) after clip_grad_norm_:
    #   g = clip(g); g += wd * p; buf = m * buf + g; p -= lr * buf
    c = base_config()
    c.optimizer.grad_clip_norm = 1.0
    tx = make_optimizer(c.optimizer, optax.constant_schedule(0.1))
    p = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([3.0, 4.0])}  # norm 5 -> clipped to [0.6, 0.8]
    state = tx.init(p)
    buf = np.zeros(2)
    p_ref = np.array([1.0, -2.0])
    for _ in range(3):
        upd, state = tx.update(g, state, p)
        p = optax.apply_updates(p, upd)
        gg = np.array([0.6, 0.8]) + 1e-4 * p_ref
        buf = 0.9 * buf + gg
        p_ref = p_ref - 0.1 * buf
    np.testing.assert_allclose(np.asarray(p["w"]), p_ref, rtol=1e-6)


def test_frozen_parameters_get_no_update_and_no_weight_decay():
    c = base_config()
    mask = {"frozen": False, "free": True}
    tx = make_optimizer(c.optimizer, optax.constant_schedule(0.1), mask)
    params = {"frozen": jnp.ones(3), "free": jnp.ones(3)}
    grads = {"frozen": jnp.ones(3), "free": jnp.ones(3)}
    upd, _ = tx.update(grads, tx.init(params), params)
    assert np.all(np.asarray(upd["frozen"]) == 0)
    assert np.all(np.asarray(upd["free"]) != 0)


def _run_steps(config, num_steps):
    exp = Experiment(config)
    state = exp.initial_state()
    it = exp.train_iterator()
    from ltjax.data.pipeline import to_global

    losses = []
    for _ in range(num_steps):
        state, m = exp.train_step(state, to_global(next(it), exp.batch_sharding), exp.train_rng)
        losses.append(float(m["loss"]))
    return jax.device_get(state), losses


@pytest.mark.parametrize("mesh, shard_params", [((8, 1), False), ((4, 2), True)])
def test_sharded_step_equals_single_device_step(mesh, shard_params):
    assert jax.device_count() == 8
    # SGD, not Adam: the bias before a BatchNorm has a true gradient of 0, and Adam would blow the
    # float rounding noise of that gradient up to full-size (and device-count-dependent) updates.
    kw = {"model.norm": "batch", "model.dropout": 0.2, "data.batch_size": 64, "model.hidden": (64,),
          "optimizer.name": "sgd", "optimizer.lr": 0.1}
    single = small_synthetic_config(**kw, **{"mesh.data": 1, "mesh.model": 1})
    sharded = small_synthetic_config(
        **kw, **{"mesh.data": mesh[0], "mesh.model": mesh[1], "mesh.shard_params": shard_params}
    )
    s1, l1 = _run_steps(single, 3)
    s8, l8 = _run_steps(sharded, 3)
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    chex.assert_trees_all_close(s1.params, s8.params, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(s1.batch_stats, s8.batch_stats, atol=1e-5, rtol=1e-5)
    assert int(s8.step) == 3


def test_sharded_params_are_really_sharded():
    c = small_synthetic_config(**{"mesh.data": 4, "mesh.model": 2, "mesh.shard_params": True, "model.hidden": (1024,)})
    exp = Experiment(c)
    state = exp.initial_state()
    leaves = jax.tree.leaves(state.params)
    big = [x for x in leaves if x.size >= 2**14]
    assert big, "expected a parameter large enough to be sharded"
    for x in big:
        assert not x.sharding.is_fully_replicated
        assert x.addressable_shards[0].data.size == x.size // 2


def test_train_step_traces_once():
    c = small_synthetic_config(**{"mesh.data": 8})
    exp = Experiment(c)
    from ltjax.data.pipeline import to_global
    from ltjax.training.step import make_train_step

    raw = make_train_step(exp.model, exp.method, c.method, exp.stats, exp.tx, exp.dtype)
    counted = jax.jit(chex.assert_max_traces(raw, n=1), donate_argnums=0)
    state = exp.initial_state()
    it = exp.train_iterator()
    for _ in range(4):
        state, _ = counted(state, to_global(next(it), exp.batch_sharding), exp.train_rng)
    assert int(state.step) == 4


def test_bf16_compute_keeps_float32_params_and_learns():
    c = small_synthetic_config(**{"train.compute_dtype": "bfloat16", "mesh.data": 1})
    state, losses = _run_steps(c, 30)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_step_key_depends_on_step_and_seed():
    # dropout masks differ between steps (fold_in of the step) but a rerun is identical.
    c = small_synthetic_config(**{"model.dropout": 0.5, "mesh.data": 1})
    a, la = _run_steps(c, 3)
    b, lb = _run_steps(c, 3)
    assert la == lb
    chex.assert_trees_all_equal(a.params, b.params)
    c2 = small_synthetic_config(**{"model.dropout": 0.5, "mesh.data": 1, "seed": 1})
    _, l2 = _run_steps(c2, 3)
    assert l2 != la
