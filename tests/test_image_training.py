"""ResNet through the training core: frozen stages and BN-in-eval survive real optimiser steps
(SGD with weight decay), while the rest of the network and the PFC neck's statistics train."""
import chex
import jax
import pytest
import numpy as np

from ltjax.data import ArraySplit, Dataset, make_meta
from ltjax.data.pipeline import to_global
from ltjax.defaults import experiment_config
from ltjax.training.loop import Experiment


def _image_dataset(n=16, size=32, classes=4):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, size, size, 3)).astype(np.float32)
    labels = (rng.random((n, classes)) < 0.4).astype(np.float32)
    labels[np.arange(n), np.arange(n) % classes] = 1
    groups_cfg = experiment_config("synthetic_lt", "resnet18", "bce").data.groups
    groups_cfg.mode = "quantile"
    meta = make_meta("random_images", [f"c{i}" for i in range(classes)], labels, groups_cfg,
                     (size, size, 3), input_kind="image")
    split = ArraySplit(images, labels)
    return Dataset(meta, {"train": split, "test": split})


@pytest.mark.slow  # ~12 s (the suite's time); frozen stages in the default suite: test_models.test_frozen_stages_get_exactly_zero_gradients
def test_resnet_frozen_stages_and_norm_eval_through_sgd_steps():
    c = experiment_config("synthetic_lt", "resnet18", "bce")
    c.model.frozen_stages = 1
    c.model.norm_eval = True
    c.data.batch_size = 8
    c.mesh.data = 2
    c.optimizer.weight_decay = 0.1  # large, so a frozen parameter that decayed would show
    c.schedule.warmup_steps = 0
    exp = Experiment(c, dataset=_image_dataset())
    before = jax.device_get(exp.initial_state())
    state = exp.initial_state()
    it = exp.train_iterator()
    for _ in range(2):
        state, metrics = exp.train_step(state, to_global(next(it), exp.batch_sharding), exp.train_rng)
    after = jax.device_get(state)
    assert np.isfinite(float(metrics["loss"]))

    trunk_b, trunk_a = before.params["backbone"]["trunk"], after.params["backbone"]["trunk"]
    for name in ("conv1", "bn1", "layer1_0", "layer1_1"):  # stem + layer1: frozen
        chex.assert_trees_all_equal(trunk_b[name], trunk_a[name])
    for name in ("layer2_0", "layer4_1"):  # later stages train
        assert not np.allclose(trunk_b[name]["conv1"]["kernel"], trunk_a[name]["conv1"]["kernel"])
    # norm_eval: every backbone BatchNorm keeps its running statistics; the PFC neck's BN updates
    chex.assert_trees_all_equal(before.batch_stats["backbone"]["trunk"], after.batch_stats["backbone"]["trunk"])
    neck_b = before.batch_stats["backbone"]["neck"]
    neck_a = after.batch_stats["backbone"]["neck"]
    assert not np.allclose(jax.tree.leaves(neck_b)[0], jax.tree.leaves(neck_a)[0])


def test_pretrained_backbone_is_loaded_into_a_fresh_run(tmp_path):
    from test_pretrained import _random_state_dict, _save

    from ltjax.models.pretrained import read_state_dict

    path = str(tmp_path / "resnet18.safetensors")
    _save(path, _random_state_dict(seed=3))
    sd = read_state_dict(path)
    c = experiment_config("synthetic_lt", "resnet18", "bce")
    c.model.pretrained = path
    c.data.batch_size = 8
    c.mesh.data = 2
    exp = Experiment(c, dataset=_image_dataset())
    state = jax.device_get(exp.initial_state())
    trunk = state.params["backbone"]["trunk"]
    np.testing.assert_allclose(trunk["conv1"]["kernel"], sd["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_allclose(trunk["layer2_0"]["downsample_bn"]["scale"], sd["layer2.0.downsample.1.weight"])
    np.testing.assert_allclose(state.batch_stats["backbone"]["trunk"]["bn1"]["var"], sd["bn1.running_var"])
    it = exp.train_iterator()
    new_state, m = exp.train_step(exp.initial_state(), to_global(next(it), exp.batch_sharding), exp.train_rng)
    assert np.isfinite(float(m["loss"]))
