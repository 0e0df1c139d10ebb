"""HMT-Net: groups and sigma_g, training-only group noise, per-group heads, the loss, sharded step."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import losses
from ltjax.data.groups import class_groups
from ltjax.data.pipeline import to_global
from ltjax.methods.hmt import HMTNet, group_sigmas, hmt_loss
from ltjax.methods import METHODS
from ltjax.models.classifier import Backbone
from ltjax.training.loop import Experiment

from helpers import small_synthetic_config


def test_voc_lt_groups_and_sigmas_by_hand(voc_lt_meta):
    counts = np.array(voc_lt_meta["class_freq"])
    groups = class_groups(counts)
    assert groups.sizes() == {"head": 6, "medium": 6, "tail": 8}
    sig = group_sigmas(counts, groups, lam=2.0)
    # head: 154, 249, 479, 240, 775, 100 -> mean 332.833; medium: 34, 29, 48, 20, 82, 64 -> 46.1667;
    # tail: 6, 8, 14, 17, 4, 11, 5, 7 -> 9.0
    np.testing.assert_allclose(sig, (2 / (1997 / 6), 2 / (277 / 6), 2 / 9.0), rtol=1e-12)
    assert group_sigmas(counts, groups, lam=0.0) == (0.0, 0.0, 0.0)


class _Identity(nn.Module):
    """A parameter-free trunk, so the tests see the heads' inputs exactly."""

    def __call__(self, x, *, train):
        return x


def _net(sigmas=(0.01, 0.1, 1.0), indices=((0, 3), (1,), (2, 4, 5))):
    return HMTNet(backbone=Backbone(trunk=_Identity()), group_names=("head", "medium", "tail"),
                  group_indices=indices, sigmas=sigmas, num_classes=6)


def test_noise_only_in_training_same_key_same_noise_and_right_scale():
    net = _net()
    x = jnp.ones((4000, 16))
    variables = net.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, x, train=False)
    ev = net.apply(variables, x, train=False)
    for f_g in ev["group_features"]:
        np.testing.assert_array_equal(np.asarray(f_g), np.asarray(x))  # no noise at evaluation
    a = net.apply(variables, x, train=True, rngs={"noise": jax.random.key(5)})
    b = net.apply(variables, x, train=True, rngs={"noise": jax.random.key(5)})
    c = net.apply(variables, x, train=True, rngs={"noise": jax.random.key(6)})
    chex.assert_trees_all_equal(a["group_features"], b["group_features"])
    assert not np.allclose(np.asarray(a["group_features"][2]), np.asarray(c["group_features"][2]))
    deltas = [np.asarray(f) - 1.0 for f in a["group_features"]]
    for d, sigma in zip(deltas, (0.01, 0.1, 1.0)):
        assert abs(d.mean()) < 3 * sigma / np.sqrt(d.size) + 1e-7
        np.testing.assert_allclose(d.std(), sigma, rtol=0.02)
    # independent across groups: correlation of the standardised noise ~ 0
    z = [d.ravel() / s for d, s in zip(deltas, (0.01, 0.1, 1.0))]
    for i in range(3):
        for j in range(i + 1, 3):
            assert abs(np.corrcoef(z[i], z[j])[0, 1]) < 0.02


def test_heads_cover_their_groups_and_fused_scores_keep_class_order():
    net = _net(sigmas=(0.0, 0.0, 0.0))
    x = jax.random.normal(jax.random.key(0), (3, 16))
    variables = net.init({"params": jax.random.key(0)}, x, train=False)
    params = variables["params"]
    assert params["head_head"]["fc"]["kernel"].shape == (16, 2)
    assert params["head_medium"]["fc"]["kernel"].shape == (16, 1)
    assert params["head_tail"]["fc"]["kernel"].shape == (16, 3)
    out = net.apply(variables, x, train=False)
    fused = np.asarray(out["logits"])
    for name, idx in (("head", [0, 3]), ("medium", [1]), ("tail", [2, 4, 5])):
        p = params[f"head_{name}"]["fc"]
        want = np.asarray(x) @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
        np.testing.assert_allclose(fused[:, idx], want, rtol=1e-5, atol=1e-6)


def _bce(z, y):
    p = 1 / (1 + np.exp(-z))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_loss_by_hand_and_eta_one_is_bce_on_fused_scores():
    rng = np.random.default_rng(0)
    indices = ((0, 3), (1,), (2, 4, 5))
    group_logits = tuple(rng.normal(size=(4, len(i))).astype(np.float32) for i in indices)
    fused = np.zeros((4, 6), np.float32)
    for s, i in zip(group_logits, indices):
        fused[:, list(i)] = s
    y = (rng.random((4, 6)) < 0.4).astype(np.float32)
    outputs = {"logits": jnp.asarray(fused), "group_logits": tuple(map(jnp.asarray, group_logits))}
    eta = 0.3
    want = eta * _bce(fused, y).mean() + (1 - eta) * sum(
        _bce(s, y[:, list(i)]).mean() for s, i in zip(group_logits, indices))
    np.testing.assert_allclose(float(hmt_loss(outputs, y, None, indices, eta)), want, rtol=1e-5)
    np.testing.assert_allclose(float(hmt_loss(outputs, y, None, indices, 1.0)),
                               float(losses.bce_loss(jnp.asarray(fused), y, None, None)), rtol=1e-6)


def test_sharded_hmt_step_equals_single_device_step():
    def run(mesh_data):
        c = small_synthetic_config(**{"mesh.data": mesh_data, "optimizer.name": "sgd", "optimizer.lr": 0.1,
                                      "data.batch_size": 64})
        c.method = METHODS.get("hmt").defaults()
        exp = Experiment(c)
        state = exp.initial_state()
        it = exp.train_iterator()
        for _ in range(3):
            state, m = exp.train_step(state, to_global(next(it), exp.batch_sharding), exp.train_rng)
        return jax.device_get(state), float(m["loss"])

    s1, l1 = run(1)
    s8, l8 = run(8)
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    chex.assert_trees_all_close(s1.params, s8.params, atol=1e-5, rtol=1e-5)
    assert set(s8.params) == {"backbone", "head_head", "head_medium", "head_tail"}
