"""Tests of the yeast (real, fetched through ltjax.assets) and synthetic_lt datasets."""
from __future__ import annotations

import warnings

import ml_collections
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ltjax.data import synthetic, yeast
from ltjax.data.base import DATASETS
from ltjax.data.groups import class_groups
from ltjax.defaults import base_config

YEAST_LABEL_TOTALS = [762, 1038, 983, 862, 722, 597, 428, 480, 178, 253, 289, 1816, 1799, 34]


def _data_cfg(module, name, **overrides) -> ml_collections.ConfigDict:
    cfg = base_config().data
    cfg.name = name
    cfg.update(module.default_config())
    cfg.update(overrides)
    return cfg


# ---- yeast ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yeast_raw():
    return yeast.load_arrays()  # fetched for real into the default cache (LTJAX_CACHE_DIR or ~/.cache/ltjax)


@pytest.fixture(scope="module")
def yeast_ds():
    return yeast.build(_data_cfg(yeast, "yeast"))


def test_yeast_has_the_published_shape_and_label_counts(yeast_raw):
    x, y = yeast_raw
    assert x.shape == (2417, 103) and x.dtype == np.float32
    assert y.shape == (2417, 14) and y.dtype == np.float32
    assert y.sum(axis=0).astype(int).tolist() == YEAST_LABEL_TOTALS
    assert np.isfinite(x).all() and x.std(axis=0).min() > 0


def test_yeast_default_split_sizes_and_meta(yeast_ds):
    train, test = yeast_ds.split("train"), yeast_ds.split("test")
    assert (len(train), len(test)) == (1500, 917)  # the sizes of Mulan's official split
    meta = yeast_ds.meta
    assert meta.class_names == tuple(f"Class{i}" for i in range(1, 15))
    assert meta.num_train == 1500 and meta.input_shape == (103,) and meta.input_kind == "features"
    np.testing.assert_array_equal(meta.class_counts, train.labels.sum(axis=0).astype(np.int64))
    assert (test.labels.sum(axis=0) > 0).all()  # every class is evaluable with the default seed
    np.testing.assert_array_equal(train.labels.sum(0) + test.labels.sum(0), YEAST_LABEL_TOTALS)
    assert meta.info["sizes"] == {"train": 1500, "test": 917} and meta.info["split_seed"] == 0
    assert DATASETS.get("yeast") is yeast.build


def test_yeast_split_is_a_deterministic_partition(yeast_raw):
    train, test = yeast.split_indices(2417, 917 / 2417, 0)
    again_train, again_test = yeast.split_indices(2417, 917 / 2417, 0)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(test, again_test)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(2417))
    other_train, _ = yeast.split_indices(2417, 917 / 2417, 1)
    assert len(other_train) == len(train) and not np.array_equal(other_train, train)

    x, y = yeast_raw
    ds = yeast.build(_data_cfg(yeast, "yeast", standardize=False))
    np.testing.assert_array_equal(ds.split("train").inputs, x[train])
    np.testing.assert_array_equal(ds.split("test").labels, y[test])
    ds1 = yeast.build(_data_cfg(yeast, "yeast", standardize=False, split_seed=1))
    np.testing.assert_array_equal(ds1.split("train").inputs, x[other_train])


def test_yeast_standardization_uses_train_statistics_only(yeast_raw, yeast_ds):
    x, _ = yeast_raw
    train_idx, test_idx = yeast.split_indices(2417, 917 / 2417, 0)
    mean = x[train_idx].astype(np.float64).mean(0)
    std = x[train_idx].astype(np.float64).std(0)
    xt, xs = yeast_ds.split("train").inputs, yeast_ds.split("test").inputs
    np.testing.assert_allclose(xt.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(xt.std(0), 1.0, atol=1e-4)
    np.testing.assert_allclose(xs, (x[test_idx] - mean) / std, rtol=1e-5, atol=1e-5)
    assert np.abs(xs.mean(0)).max() > 1e-2  # test statistics were not used (they differ from train's)


def test_yeast_groups_under_both_rules(yeast_ds):
    counts = yeast_ds.meta.class_counts
    assert yeast_ds.meta.groups.sizes() == {"head": 13, "medium": 0, "tail": 1}  # DB thresholds 100 / 20
    assert class_groups(counts, mode="quantile").sizes() == {"head": 5, "medium": 4, "tail": 5}


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, 1e-5])
def test_yeast_bad_test_fraction_is_rejected(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        yeast.split_indices(2417, fraction, 0)


# ---- synthetic_lt ---------------------------------------------------------------------------


def _gen(**overrides):
    cfg = synthetic.default_config()
    cfg.update(overrides)
    return synthetic.generate(cfg)


def test_synthetic_is_seeded():
    a, b, c = _gen(seed=3), _gen(seed=3), _gen(seed=4)
    for field in ("train_inputs", "train_labels", "test_inputs", "test_labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert not np.array_equal(getattr(a, field), getattr(c, field))
    assert not np.array_equal(a.train_labels, a.test_labels[: len(a.train_labels)])


def test_synthetic_target_profile_is_pareto_long_tailed():
    p = synthetic.target_prevalences(20, 0.4, 0.001, 6.0)
    assert p[0] == pytest.approx(0.4) and (np.diff(p) < 0).all()
    assert 0.001 < p[-1] < 0.003 and p[0] / p[-1] > 100
    # pdf(x) / b = x ** -(b + 1) at the Pareto ppf(0) .. ppf(0.99) grid
    x = np.linspace(1.0, 100 ** (1 / 6), 20)
    np.testing.assert_allclose(p, 0.001 + 0.399 * x**-7.0)


@pytest.mark.filterwarnings("ignore:synthetic_lt.*no positive in the test split")
def test_synthetic_class_counts_follow_the_target_profile():
    n = 60_000
    data = _gen(num_train=n, num_test=100, cooccurrence=0.5)
    counts = data.train_labels.sum(axis=0)
    np.testing.assert_allclose(data.expected_prevalences, data.target_prevalences)  # sum(p) >= 1 here
    e = data.target_prevalences
    z = (counts - n * e) / np.sqrt(n * e * (1 - e))
    assert np.abs(z).max() < 5, z  # every class count within binomial noise of its target
    assert counts.max() / counts.min() > 100
    assert 0 < data.latent_scale < 1


def test_synthetic_default_dataset_contract():
    ds = synthetic.build(_data_cfg(synthetic, "synthetic_lt"))
    train, test = ds.split("train"), ds.split("test")
    assert train.inputs.shape == (4000, 64) and test.inputs.shape == (2000, 64)
    assert train.labels.shape == (4000, 20) and train.inputs.dtype == train.labels.dtype == np.float32
    assert (train.labels.sum(1) >= 1).all() and (test.labels.sum(1) >= 1).all()
    np.testing.assert_array_equal(ds.meta.class_counts, train.labels.sum(0).astype(np.int64))
    assert ds.meta.num_train == 4000 and ds.meta.input_shape == (64,)
    assert ds.meta.class_names[0] == "class_00" and len(ds.meta.class_names) == 20
    sizes = ds.meta.groups.sizes()  # all three DB groups are populated by the default profile
    assert min(sizes.values()) >= 3, sizes
    assert DATASETS.get("synthetic_lt") is synthetic.build


def _max_pair_excess_z(y: np.ndarray) -> float:
    n = len(y)
    f = y.mean(0)
    joint = y.T @ y
    prod = np.outer(f, f)
    z = (joint - n * prod) / np.sqrt(n * prod * (1 - prod))
    return float(z[np.triu_indices(y.shape[1], 1)].max())


@pytest.mark.filterwarnings("ignore:synthetic_lt.*no positive in the test split")
def test_synthetic_cooccurrence():
    correlated = _gen(num_train=20_000, num_test=100, cooccurrence=0.8).train_labels
    independent = _gen(num_train=20_000, num_test=100, cooccurrence=0.0).train_labels
    assert _max_pair_excess_z(correlated) > 15  # some pair co-occurs far more often than chance
    assert _max_pair_excess_z(independent) < 4.5  # no pair does


def _probe_aucs(data) -> np.ndarray:
    x = np.c_[data.train_inputs.astype(np.float64), np.ones(len(data.train_inputs))]
    w = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ data.train_labels)
    scores = np.c_[data.test_inputs, np.ones(len(data.test_inputs))] @ w
    y = data.test_labels
    return np.array([roc_auc_score(y[:, c], scores[:, c]) for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)])


def test_synthetic_features_are_informative():
    informative = _probe_aucs(_gen())
    assert informative.mean() > 0.75 and np.median(informative) > 0.75
    blind = _probe_aucs(_gen(class_separation=0.0))
    assert abs(blind.mean() - 0.5) < 0.06


def test_synthetic_every_class_has_a_train_positive_and_features_match():
    with pytest.warns(UserWarning, match="no positive in the test split"):
        data = _gen(num_train=60, num_test=40, noise=0.0, class_separation=1.0)
    assert (data.train_labels.sum(0) >= 1).all()
    assert len(data.forced_train_positives) > 0  # the fix was exercised
    # with noise 0 the features are exactly the sum of the example's class means (forced ones included)
    np.testing.assert_allclose(data.train_inputs, data.train_labels @ data.class_means, atol=1e-4)
    np.testing.assert_allclose(data.test_inputs, data.test_labels @ data.class_means, atol=1e-4)


def test_synthetic_small_profile_is_scaled_with_a_warning():
    with pytest.warns(UserWarning, match="sum to"):
        data = _gen(num_classes=5, num_train=40_000, num_test=4000)
    assert data.target_prevalences.sum() < 1
    ratio = data.expected_prevalences / data.target_prevalences
    np.testing.assert_allclose(ratio, ratio[0])  # the shape of the profile is kept
    assert ratio[0] > 1
    e, n = data.expected_prevalences, 40_000
    z = (data.train_labels.sum(0) - n * e) / np.sqrt(n * e * (1 - e))
    assert np.abs(z).max() < 5
    assert (data.train_labels.sum(1) >= 1).all()


def test_synthetic_scales_sparsely():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = _gen(num_train=20_000, num_test=1000, num_classes=2000, num_features=16, seed=1)
    e, n = data.expected_prevalences, 20_000
    counts = data.train_labels.sum(0)
    assert abs(counts.sum() - n * e.sum()) < 6 * np.sqrt(n * e.sum())
    assert (counts >= 1).all() and (data.train_labels.sum(1) >= 1).all()


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_train": 0}, "num_train"),
        ({"min_prevalence": 0.5, "max_prevalence": 0.2}, "min_prevalence"),
        ({"max_prevalence": 1.5}, "max_prevalence"),
        ({"min_prevalence": 0.0}, "min_prevalence"),
        ({"cooccurrence": 1.2}, "cooccurrence"),
        ({"num_topics": 50}, "num_topics"),
        ({"noise": -1.0}, "noise"),
        ({"pareto_shape": 0.0}, "pareto_shape"),
    ],
)
def test_synthetic_bad_config_is_rejected(change, problem):
    with pytest.raises(ValueError, match=problem):
        _gen(**change)
