"""ltjax.data.snapshot: a run's dataset snapshot round-trips the metadata, the split sizes and the training
labels, rebuilds the evaluation transform exactly (images, word vocabularies) or records none, re-applies
hidden positives as the run did, and its splits refuse to hand out examples.  Predict without the data on a
trained run: tests/test_predict.py."""
import dataclasses

import numpy as np
import pytest

from helpers import small_synthetic_config

from ltjax.data import build_dataset, snapshot
from ltjax.errors import SnapshotError


def _same_meta(a, b):
    assert a.to_dict() == b.to_dict()


def test_features_dataset_round_trips_and_its_splits_hold_no_examples(tmp_path):
    cfg = small_synthetic_config()
    ds = build_dataset(cfg.data)
    assert snapshot.write(str(tmp_path), ds, cfg.data)  # feature vectors: nothing to rebuild, still complete
    back = snapshot.load(str(tmp_path), cfg.data)
    _same_meta(back.meta, ds.meta)
    assert {k: len(v) for k, v in back.splits.items()} == {k: len(v) for k, v in ds.splits.items()}
    np.testing.assert_array_equal(back.split("train").labels, (np.asarray(ds.split("train").labels) > 0))
    assert back.eval_transform is None and ds.eval_transform is None
    with pytest.raises(SnapshotError, match="labels but no examples"):
        back.split("test")[0]


def test_a_transform_that_cannot_be_rebuilt_is_not_recorded(tmp_path):
    cfg = small_synthetic_config()
    ds = build_dataset(cfg.data)
    odd = dataclasses.replace(ds, eval_transform=lambda ex: ex)  # not one a snapshot knows how to make again
    assert not snapshot.write(str(tmp_path), odd, cfg.data)
    assert snapshot.exists(str(tmp_path)) and snapshot.load(str(tmp_path), cfg.data) is None


def test_hidden_positives_are_stored_before_hiding_and_reapplied_identically(tmp_path):
    from ltjax.data import partial
    from ltjax.training.experiment import Experiment

    cfg = small_synthetic_config(**{"data.missing_ratio": 0.4, "data.missing_seed": 3})
    exp = Experiment(cfg)
    snapshot.write(str(tmp_path), exp.dataset, cfg.data)
    back = snapshot.load(str(tmp_path), cfg.data)
    full = partial.hidden_split(exp.dataset).full_labels
    np.testing.assert_array_equal(back.split("train").labels, full > 0)  # before the hiding
    again = Experiment(cfg, back)
    np.testing.assert_array_equal(again.meta.class_counts, exp.meta.class_counts)  # observed n_c, as trained
    np.testing.assert_array_equal(partial.hidden_split(again.dataset).hidden_pairs,
                                  partial.hidden_split(exp.dataset).hidden_pairs)
    assert again.meta.groups.to_dict() == exp.meta.groups.to_dict()
    assert again.total_steps == exp.total_steps


def test_image_transform_is_rebuilt_from_the_config(tmp_path):
    import io

    from PIL import Image
    from test_custom import _many, cfg as custom_cfg

    from ltjax.data.custom import build

    buf = io.BytesIO()
    Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)).save(buf, format="JPEG")
    m = _many(tmp_path, buf.getvalue(), 12)
    data_cfg = custom_cfg(m, test_fraction=0.25, split_method="random", hflip_preserves_labels=False)
    ds = build(data_cfg)
    assert snapshot.write(str(tmp_path), ds, data_cfg)
    back = snapshot.load(str(tmp_path), data_cfg)
    assert back.eval_transform == ds.eval_transform and back.eval_transform.flip_prob == 0.0
    _same_meta(back.meta, ds.meta)


def test_snapshot_files_that_disagree_are_an_error_naming_the_fix(tmp_path):
    cfg = small_synthetic_config()
    ds = build_dataset(cfg.data)
    snapshot.write(str(tmp_path), ds, cfg.data)
    other = small_synthetic_config(**{"data.num_classes": 7})
    (tmp_path / "other").mkdir()
    snapshot.write(str(tmp_path / "other"), build_dataset(other.data), other.data)  # another dataset's npz
    (tmp_path / snapshot.SNAPSHOT_NPZ).write_bytes((tmp_path / "other" / snapshot.SNAPSHOT_NPZ).read_bytes())
    with pytest.raises(SnapshotError, match="delete both and run ltjax.evaluate once"):
        snapshot.load(str(tmp_path), cfg.data)


@pytest.mark.parametrize("tokenizer", ["words", "minilm"])
def test_text_transforms_are_rebuilt_and_encode_alike(tmp_path, tokenizer):
    from ltjax.data.text import text_defaults, text_transforms

    cfg = small_synthetic_config()
    ds = build_dataset(cfg.data)
    text_cfg = text_defaults()
    text_cfg.tokenizer = tokenizer
    text_cfg.max_length = 12
    text_cfg.min_freq = 1
    setup = text_transforms(["Pleural effusion, small.", "No acute disease", "cardiomegaly"], text_cfg)
    meta = dataclasses.replace(ds.meta, input_kind="text", input_shape=(12,), input_dtype="int32",
                               vocab_size=int(setup.vocab_size))
    text_ds = dataclasses.replace(ds, meta=meta, eval_transform=setup.eval_transform)
    assert snapshot.write(str(tmp_path), text_ds, cfg.data)
    back = snapshot.load(str(tmp_path), cfg.data)
    for doc in ("pleural effusion", "An unseen word: pneumothorax!", ""):
        np.testing.assert_array_equal(back.eval_transform({"inputs": doc})["inputs"],
                                      setup.eval_transform({"inputs": doc})["inputs"])
