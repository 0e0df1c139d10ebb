"""Partial labels (ltjax/data/partial.py): which positives are hidden, what the pipeline and the metadata see."""
from __future__ import annotations

import numpy as np
import pytest

from ltjax.data import build_dataset, partial
from ltjax.errors import ConfigError
from helpers import small_synthetic_config


def _labels(seed=0, n=300, c=9):
    rng = np.random.default_rng(seed)
    prevalence = np.geomspace(0.5, 0.02, c)
    y = (rng.random((n, c)) < prevalence).astype(np.float32)
    y[0, :] = 1.0
    return y


@pytest.mark.parametrize("floor", [0, 1, 3])
def test_exact_fraction_of_positives_hidden_seeded_and_only_positives(floor):
    y = _labels()
    positives = int(y.sum())
    pairs = partial.hide_positives(y, 0.4, seed=5, min_observed=floor)
    assert len(pairs) == round(0.4 * positives)
    assert len({tuple(p) for p in pairs}) == len(pairs)  # no pair twice
    assert np.all(y[pairs[:, 0], pairs[:, 1]] == 1)  # only positives
    np.testing.assert_array_equal(pairs, partial.hide_positives(y, 0.4, seed=5, min_observed=floor))
    assert not np.array_equal(pairs, partial.hide_positives(y, 0.4, seed=6, min_observed=floor))
    observed = y.copy()
    observed[pairs[:, 0], pairs[:, 1]] = 0
    counts = y.sum(0)
    assert np.all(observed.sum(0) >= np.minimum(counts, floor))  # the floor holds for every class


def test_uniform_over_positive_pairs_without_floor():
    """With min_observed 0 every positive is hidden with probability r: over many seeds, the frequency with
    which each pair is hidden is r for head and tail classes alike."""
    y = _labels(n=60, c=5)
    hits = np.zeros_like(y)
    for seed in range(400):
        p = partial.hide_positives(y, 0.3, seed, 0)
        hits[p[:, 0], p[:, 1]] += 1
    freq = hits[y > 0] / 400
    assert abs(freq.mean() - 0.3) < 0.01 and freq.min() > 0.18 and freq.max() < 0.42


def test_a_quota_the_floor_cannot_meet_and_a_bad_ratio_are_config_errors():
    y = np.eye(4, dtype=np.float32)  # one positive per class
    with pytest.raises(ConfigError, match="missing_min_observed"):
        partial.hide_positives(y, 0.5, 0, 1)
    assert len(partial.hide_positives(y, 0.5, 0, 0)) == 2
    with pytest.raises(ConfigError, match="missing_ratio"):
        partial.hide_positives(y, 1.0, 0)


def test_dataset_train_split_hides_test_split_keeps_and_meta_counts_the_observed_labels():
    full = build_dataset(small_synthetic_config().data)
    c = small_synthetic_config(**{"data.missing_ratio": 0.4, "data.missing_seed": 3})
    ds = build_dataset(c.data)
    train, full_train = ds.split("train"), full.split("train")
    np.testing.assert_array_equal(ds.split("test").labels, full.split("test").labels)
    np.testing.assert_array_equal(train.full_labels, full_train.labels)
    hidden = train.hidden_mask > 0
    assert hidden.sum() == round(0.4 * full_train.labels.sum())
    np.testing.assert_array_equal(train.labels, np.where(hidden, 0, full_train.labels))
    # examples (host pipeline) and batches carry the observed labels and the hidden flags
    for i in (0, 7, len(train) - 1):
        e = train[i]
        np.testing.assert_array_equal(e["labels"], train.labels[i])
        np.testing.assert_array_equal(e["hidden"], train.hidden_mask[i])
        np.testing.assert_array_equal(e["inputs"], full_train[i]["inputs"])
    b = train.get_batch(np.array([3, 1]))
    np.testing.assert_array_equal(b["labels"], train.labels[[3, 1]])
    # n_c and the groups come from the observed labels
    np.testing.assert_array_equal(ds.meta.class_counts, train.labels.sum(0))
    assert ds.meta.class_counts.sum() < full.meta.class_counts.sum()
    info = ds.meta.info["partial_labels"]
    assert info["hidden"] == hidden.sum() and info["missing_ratio"] == 0.4 and "observed" in info["groups"]


def test_the_hidden_set_depends_on_the_data_and_missing_seed_only_not_on_the_method_or_seed():
    a = small_synthetic_config(**{"data.missing_ratio": 0.3, "seed": 0})
    b = small_synthetic_config(**{"data.missing_ratio": 0.3, "seed": 7})
    b.method = __import__("ltjax.methods", fromlist=["METHODS"]).METHODS.get("comic").defaults()
    pa, pb = (build_dataset(c.data).split("train").hidden_pairs for c in (a, b))
    np.testing.assert_array_equal(pa, pb)


def test_ratio_zero_leaves_the_dataset_alone_and_write_read_round_trip(tmp_path):
    ds0 = build_dataset(small_synthetic_config().data)
    assert partial.hidden_split(ds0) is None and partial.write_hidden(str(tmp_path), ds0) is None
    ds = build_dataset(small_synthetic_config(**{"data.missing_ratio": 0.5}).data)
    path = partial.write_hidden(str(tmp_path), ds)
    np.testing.assert_array_equal(partial.read_hidden(str(tmp_path)), ds.split("train").hidden_pairs)
    assert path.endswith(partial.HIDDEN_FILE)
