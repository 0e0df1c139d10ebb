"""ltjax.data.stratify: the stratified splitter (every class with >= 2 units on both sides, groups never split,
the fraction kept, seeded) and data.val_from_train carving a validation split that train.select_on uses."""
import numpy as np
import pytest

from helpers import small_synthetic_config

from ltjax.data.stratify import stratified_split
from ltjax.errors import ConfigError


def _long_tail(rng, n, c):
    prevalence = 0.3 * np.arange(1, c + 1, dtype=float) ** -1.3  # a few head classes, many rare ones
    y = rng.random((n, c)) < prevalence
    for k in range(c):  # rare classes with 2 or 3 examples
        if y[:, k].sum() < 2:
            y[rng.choice(n, 2 + k % 2, replace=False), k] = True
    return y.astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_every_class_with_two_examples_is_on_both_sides_and_the_fraction_holds(seed):
    rng = np.random.default_rng(seed)
    y = _long_tail(rng, 300, 25)
    tr, va = stratified_split(y, 0.2, seed)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(300)) and not set(tr) & set(va)
    for k in range(25):
        if y[:, k].sum() >= 2:
            assert y[tr, k].sum() >= 1 and y[va, k].sum() >= 1, (k, y[:, k].sum())
    assert abs(len(va) - 60) <= 8
    # proportions follow the labels: the head class's share in val is close to the fraction
    assert abs(y[va, 0].sum() / y[:, 0].sum() - 0.2) < 0.05
    again = stratified_split(y, 0.2, seed)
    assert np.array_equal(again[1], va) and not np.array_equal(stratified_split(y, 0.2, seed + 100)[1], va)


def test_groups_stay_whole_and_still_cover_every_class():
    rng = np.random.default_rng(3)
    y = _long_tail(rng, 240, 15)
    groups = [f"p{i // 3}" for i in range(240)]  # 80 patients of 3 examples
    tr, va = stratified_split(y, 0.25, 0, groups)
    assert not {groups[i] for i in tr} & {groups[i] for i in va}
    unit = np.zeros((80, 15), bool)
    for i, g in enumerate(groups):
        unit[int(g[1:])] |= y[i] > 0
    for k in range(15):
        if unit[:, k].sum() >= 2:
            assert y[tr, k].sum() >= 1 and y[va, k].sum() >= 1


def test_bad_fractions_and_too_few_units_are_config_errors():
    y = np.eye(4, dtype=np.float32)
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        stratified_split(y, 1.0, 0)
    with pytest.raises(ConfigError, match="too few"):
        stratified_split(y[:1], 0.5, 0)


def test_val_from_train_carves_a_split_that_selection_uses(tmp_path):
    import json

    from ltjax.data import build_dataset
    from ltjax.training.loop import train_and_evaluate

    cfg = small_synthetic_config(**{"data.val_from_train": 0.25, "data.val_seed": 1, "train.num_epochs": 2,
                                    "train.select_on": "val:mAP"})
    full = build_dataset(small_synthetic_config().data)
    ds = build_dataset(cfg.data)
    train, val = ds.split("train"), ds.split("val")
    assert len(train) + len(val) == len(full.split("train")) and abs(len(val) - 128) <= 8
    np.testing.assert_array_equal(ds.meta.class_counts, (train.labels > 0).sum(axis=0))  # n_c from what trains
    assert ds.meta.num_train == len(train) and ds.meta.info["validation"]["val"] == len(val)
    i = int(train.index[5])
    np.testing.assert_array_equal(train[5]["inputs"], full.split("train")[i]["inputs"])
    np.testing.assert_array_equal(ds.split("test").labels, full.split("test").labels)  # test untouched
    result = train_and_evaluate(cfg, str(tmp_path / "run"))
    assert result["selection"]["split"] == "val" and result["split"] == "test"
    with pytest.raises(ConfigError, match="already has a 'val' split"):
        build_dataset(small_synthetic_config(**{"data.val_from_train": 0.2, "data.num_val": 50}).data)
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["selection"]["best_step"] == report["step"] and len(report["selection"]["history"]) == 2


def test_one_label_column_and_no_labels_split_too():
    """The package only takes a multilabel indicator (>= 2 columns): one column or none still splits."""
    y = np.zeros((10, 1))
    y[[1, 6]] = 1
    tr, va = stratified_split(y, 0.3, 0)
    assert len(tr) + len(va) == 10 and {1, 6} & set(va.tolist()) and {1, 6} & set(tr.tolist())
    tr, va = stratified_split(np.zeros((10, 0)), 0.3, 0)
    assert len(tr) + len(va) == 10 and 0 < len(va) < 10


def test_partition_cuts_test_then_val_and_covers_every_row_once():
    from ltjax.data.stratify import stratified_partition

    rng = np.random.default_rng(0)
    y = (rng.random((300, 8)) < 0.5 * 0.5 ** np.arange(8)).astype(float)
    groups = [f"g{i // 2}" for i in range(300)]
    part = stratified_partition(y, [("test", 0.2), ("val", 0.1)], "train", 0, groups)
    rows = np.concatenate(list(part.values()))
    assert sorted(rows.tolist()) == list(range(300))
    g = {k: {groups[i] for i in v} for k, v in part.items()}
    assert not g["train"] & g["test"] and not g["train"] & g["val"] and not g["val"] & g["test"]
    assert abs(len(g["test"]) - 30) <= 3 and abs(len(g["val"]) - 15) <= 3
    n_units = np.array([len({groups[i] for i in np.flatnonzero(y[:, c])}) for c in range(8)])
    for c in np.flatnonzero(n_units >= 2):
        assert y[part["test"], c].any() and y[np.concatenate([part["train"], part["val"]]), c].any()
    # the row order does not matter with groups: reversed rows give the same groups per split
    rev = stratified_partition(y[::-1], [("test", 0.2), ("val", 0.1)], "train", 0, groups[::-1])
    assert {k: {groups[::-1][i] for i in v} for k, v in rev.items()} == g
    assert stratified_partition(y, [("test", 0.2), ("val", 0.0)], "train", 0, groups)["val"].size == 0
    with pytest.raises(ConfigError, match="sum to less than 1"):
        stratified_partition(y, [("test", 0.6), ("val", 0.5)], "train", 0, groups)


def test_a_part_far_from_its_fraction_is_warned_about():
    from ltjax.data.stratify import stratified_partition

    y = np.eye(12)[np.arange(24) % 12]  # 12 classes, 2 examples each: test must take one of every class
    with pytest.warns(UserWarning, match=r"the stratified test split holds 12 of 24 examples \(50%\)"):
        part = stratified_partition(y, [("test", 0.2)], "train", 0)
    assert len(part["test"]) == 12
    rng = np.random.default_rng(1)
    big = (rng.random((500, 4)) < 0.3).astype(float)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stratified_partition(big, [("test", 0.2), ("val", 0.1)], "train", 0)  # close to 100 / 50: no warning
