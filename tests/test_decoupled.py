"""ltjax/methods/decoupled.py: cRT, LWS, tau-normalisation and NCM (Kang et al. 2020) as phased methods."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_synthetic_config
from ltjax.methods import METHODS
from ltjax.methods.decoupled import class_means, ncm_scores, tau_normalise
from ltjax.training.loop import Experiment, train_and_evaluate


def test_tau_normalise_by_hand():
    w = np.asarray([[3.0, 0.0, 1.0], [4.0, 0.0, 1.0]], np.float32)  # column norms 5, 0, sqrt 2
    np.testing.assert_allclose(tau_normalise(w, 1.0), [[0.6, 0.0, 2 ** -0.5], [0.8, 0.0, 2 ** -0.5]], rtol=1e-6)
    np.testing.assert_allclose(tau_normalise(w, 0.5), [[3 / 5 ** 0.5, 0, 2 ** -0.25], [4 / 5 ** 0.5, 0, 2 ** -0.25]],
                               rtol=1e-6)
    np.testing.assert_array_equal(tau_normalise(w, 0.0), w)


def test_class_means_by_hand_and_ncm_scores():
    f = np.asarray([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]], np.float32)
    y = np.asarray([[1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    mu = class_means(f, y)
    np.testing.assert_allclose(mu, [[0.5, 1.0], [1.5, 3.0], [0.0, 0.0]])
    logits = jnp.asarray([[0.3, -1.0, 2.0]])
    out = ncm_scores({"features": jnp.asarray([[2.0, 1.0]]), "logits": logits}, {"class_means": jnp.asarray(mu)})
    cos0 = (2 * 0.5 + 1 * 1.0) / (5 ** 0.5 * (1.25 ** 0.5))
    cos1 = (2 * 1.5 + 1 * 3.0) / (5 ** 0.5 * (11.25 ** 0.5))
    np.testing.assert_allclose(out[0], [(1 + cos0) / 2, (1 + cos1) / 2, jax.nn.sigmoid(2.0)], rtol=1e-6)


def _config(name, **over):
    c = small_synthetic_config(**{"mesh.data": 8, "train.keep_checkpoints": 50, **over})
    c.method = METHODS.get(name).defaults()
    for phase in ("classifier", "scale"):
        if phase in c.method.get("phases", {}):
            c.method.phases[phase].epochs = 1
    return c


def _run(tmp_path, name, **over):
    c = _config(name, **over)
    workdir = str(tmp_path / name)
    result = train_and_evaluate(c, workdir)
    return c, workdir, result


def _state_at(c, workdir, step):
    return jax.device_get(Experiment(c).restore(workdir, step)[0].params)


def test_crt_freezes_the_representation_and_retrains_a_fresh_head(tmp_path):
    c, w, result = _run(tmp_path, "crt")
    exp = Experiment(c)
    joint, clf = exp.phases
    assert clf.samplers["main"].__class__.__name__ == "ClassAwareSampler"
    before, after = _state_at(c, w, joint.end), _state_at(c, w, clf.end)
    chex.assert_trees_all_equal(before["backbone"], after["backbone"])
    assert not np.allclose(before["head"]["fc"]["kernel"], after["head"]["fc"]["kernel"], atol=1e-3)
    assert np.isfinite(result["mAP"])


def test_lws_learns_only_the_scales_and_tau_norm_keeps_each_class_ap(tmp_path):
    c, w, _ = _run(tmp_path, "lws")
    joint, scale = Experiment(c).phases
    before, after = _state_at(c, w, joint.end), _state_at(c, w, scale.end)
    np.testing.assert_array_equal(before["scale"], 1.0)  # held at 1 in the joint phase
    assert not np.allclose(after["scale"], 1.0)
    chex.assert_trees_all_equal({k: v for k, v in before.items() if k != "scale"},
                                {k: v for k, v in after.items() if k != "scale"})

    # tau-normalisation rescales each class's weight vector by a positive factor: every class's AP (a
    # ranking over the examples) stays what it was at the end of the joint phase
    from ltjax import metrics

    c, w, tau = _run(tmp_path, "tau_norm")
    exp = Experiment(c)
    joint_state, _ = exp.restore(w, exp.phases[0].end)
    scores, labels = exp.predict(joint_state.params, joint_state.batch_stats, "test")
    before = metrics.evaluate(scores, labels, exp.meta.groups, exp.meta.class_counts, exp.meta.class_names)
    assert [r["ap"] for r in before["per_class"]] != [None] * len(before["per_class"])
    np.testing.assert_allclose([r["ap"] for r in tau["per_class"]], [r["ap"] for r in before["per_class"]], atol=1e-9)
    final = _state_at(c, w, exp.total_steps)
    np.testing.assert_allclose(np.linalg.norm(final["head"]["fc"]["kernel"], axis=0), 1.0, rtol=1e-5)


def test_ncm_stores_the_class_means_of_the_trained_features(tmp_path):
    c, w, result = _run(tmp_path, "ncm")
    exp = Experiment(c)
    state, _ = exp.restore(w)
    train = exp.dataset.split("train")
    feats = exp.model.apply({"params": state.params}, jnp.asarray(train.inputs), train=False)["features"]
    np.testing.assert_allclose(jax.device_get(state.method_state["class_means"]),
                               class_means(np.asarray(feats), train.labels), rtol=1e-4, atol=1e-5)
    scores, _ = exp.predict(state.params, state.batch_stats, "test", state.method_state)
    assert scores.min() >= 0 and scores.max() <= 1 and np.isfinite(result["mAP"])


@pytest.mark.parametrize("bad", [-0.5])
def test_tau_must_be_non_negative(tmp_path, bad):
    c = _config("tau_norm")
    c.method.tau = bad
    with pytest.raises(ValueError, match="method.tau must be >= 0"):
        train_and_evaluate(c, str(tmp_path / "t"))
