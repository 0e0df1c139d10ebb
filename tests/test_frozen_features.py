"""Frozen-feature runs (ltjax/training/frozen_features.py): training on the stored backbone outputs equals
training with the backbone frozen, the stored features are reused and invalidated, bad uses get clear
errors."""
import dataclasses

import chex
import jax
import numpy as np
import pytest

from helpers import set_fields, train_steps
from test_on_device import _png_dataset

from ltjax.defaults import experiment_config
from ltjax.training import frozen_features
from ltjax.training.loop import Experiment


def _config(tmp_path, **over):
    c = experiment_config("custom", "glyphnet", "bce")
    c.model.widths, c.model.convs = (8, 8, 16), 1
    c.model.frozen_stages, c.model.norm_eval = 2, True  # the whole trunk frozen, BatchNorm in eval mode
    c.data.image_size = 32
    c.data.augment = False
    c.data.batch_size = 8
    c.data.eval_batch_size = 8
    c.data.prepared_dir = str(tmp_path / "prepared")
    c.mesh.data = 1
    c.optimizer.lr = 0.05
    c.schedule.warmup_steps = 0
    c.train.progress_bar = "off"
    c.eval.top_k = (1, 3)
    return set_fields(c, over)



@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """24 PNG images read at 32 px, trained on un-augmented (the features are computed without
    augmentation; the equality below is with a fine-tuning run that does not augment either)."""
    ds = _png_dataset(str(tmp_path_factory.mktemp("png")))
    return dataclasses.replace(ds, train_transform=ds.eval_transform)


@pytest.mark.parametrize("level", [pytest.param("map", marks=pytest.mark.slow), "pooled"])  # map: ~10 s, slow
def test_training_on_stored_features_equals_training_with_the_backbone_frozen(tmp_path, pngs, level):
    full = Experiment(_config(tmp_path), dataset=pngs)
    stored = Experiment(_config(tmp_path, **{"data.frozen_features": level}), dataset=pngs)
    assert stored.meta.input_kind == "features"
    assert stored.meta.input_shape == ((8, 8, 16) if level == "map" else (16,))  # 32 px, stride 4; 16 channels
    assert "trunk" not in jax.tree_util.keystr(jax.tree_util.tree_leaves_with_path(stored.initial_state().params)[0][0])
    s_full, l_full = train_steps(full, 4)
    s_stored, l_stored = train_steps(stored, 4)
    np.testing.assert_allclose(l_stored, l_full, rtol=2e-5)
    assert l_full[-1] != l_full[0]  # the neck and head did train
    chex.assert_trees_all_close(s_stored.params["head"], s_full.params["head"], rtol=2e-5, atol=1e-6)
    chex.assert_trees_all_close(s_stored.params["backbone"]["neck"], s_full.params["backbone"]["neck"],
                                rtol=2e-5, atol=1e-6)
    # and the evaluation scores agree
    r_full = full.predict(s_full.params, s_full.batch_stats, "test")
    r_stored = stored.predict(s_stored.params, s_stored.batch_stats, "test")
    np.testing.assert_allclose(r_stored[0], r_full[0], rtol=2e-5, atol=1e-6)


def test_stored_features_are_reused_and_invalidated(tmp_path, pngs, monkeypatch):
    first = Experiment(_config(tmp_path, **{"data.frozen_features": "pooled"}), dataset=pngs)
    assert first.frozen.info["computed_now"] and first.frozen.folder.parent.name == pngs.meta.name
    stored = np.load(first.frozen.folder / "train.npy")

    def no_extraction(*a, **k):
        raise AssertionError("the stored features should have been reused")

    monkeypatch.setattr(frozen_features.FrozenFeatures, "_extract", staticmethod(no_extraction))
    again = Experiment(_config(tmp_path, **{"data.frozen_features": "pooled"}), dataset=pngs)
    assert again.frozen.folder == first.frozen.folder and not again.frozen.info["computed_now"]
    np.testing.assert_array_equal(again.dataset.split("train").inputs, stored)
    for change in ({"seed": 1},  # other trunk weights
                   {"data.frozen_features": "map"},
                   {"model.neck_pool": "avg"}):
        with pytest.raises(AssertionError, match="reused"):
            Experiment(_config(tmp_path, **{"data.frozen_features": "pooled", **change}), dataset=pngs)
    from ltjax.data.images import ImageTransform

    smaller = dataclasses.replace(pngs, eval_transform=ImageTransform(size=24))  # another evaluation transform
    with pytest.raises(AssertionError, match="reused"):
        Experiment(_config(tmp_path, **{"data.frozen_features": "pooled"}), dataset=smaller)


def test_pooled_features_are_the_pooled_map(tmp_path, pngs):
    m = Experiment(_config(tmp_path, **{"data.frozen_features": "map"}), dataset=pngs)
    p = Experiment(_config(tmp_path, **{"data.frozen_features": "pooled"}), dataset=pngs)
    np.testing.assert_allclose(p.dataset.split("test").inputs, m.dataset.split("test").inputs.max(axis=(1, 2)),
                               rtol=1e-6)


def test_clear_errors(tmp_path, pngs):
    with pytest.raises(ValueError, match="data.frozen_features must be '' .off. or one of map, pooled"):
        Experiment(_config(tmp_path, **{"data.frozen_features": "vectors"}), dataset=pngs)
    c = experiment_config("synthetic_lt", "mlp", "bce")
    c.data.frozen_features = "pooled"
    with pytest.raises(ValueError, match="is a features dataset: set data.frozen_features=''"):
        Experiment(c)


@pytest.mark.parametrize("on_device", [False, True])
def test_hidden_positives_survive_the_stored_features(tmp_path, pngs, on_device):
    """With data.missing_ratio the features' training split still says which observed zeros were hidden
    (COMIC counts its true and false label recalls from it), on the host and the device pipeline."""
    over = {"data.missing_ratio": 0.3, "data.on_device": on_device}
    full = Experiment(_config(tmp_path, **over), dataset=pngs)
    stored = Experiment(_config(tmp_path, **{"data.frozen_features": "pooled", **over}), dataset=pngs)
    want, got = full.dataset.split("train"), stored.dataset.split("train")
    assert want.hidden_mask.sum() > 0
    np.testing.assert_array_equal(got.hidden_mask, want.hidden_mask)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.full_labels, want.full_labels)
    np.testing.assert_array_equal(stored.meta.class_counts, full.meta.class_counts)
    batch = next(stored.train_iterator())
    idx = np.asarray(batch["index"])
    np.testing.assert_array_equal(np.asarray(batch["hidden"]), want.hidden_mask[idx])
    np.testing.assert_array_equal(np.asarray(batch["labels"]), want.labels[idx])
