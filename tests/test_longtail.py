"""The DB long-tailed subset construction: Pareto targets, co-occurrence order, add/remove to target."""
import numpy as np
import pytest

from ltjax.data.longtail import cooccurrence_order, make_longtail_subset, pareto_targets


def test_pareto_targets_by_hand():
    t = pareto_targets(4, max_count=800, min_count=1, pareto_shape=6)
    # x = linspace(1, 100**(1/6), 4); target = int(6 / x**7 * 799 / 6 + 1)
    x = np.linspace(1, 100 ** (1 / 6), 4)
    assert t.tolist() == [int(799 / xi**7 + 1) for xi in x]
    assert t[0] == 800 and t[-1] == int(799 / 100 ** (7 / 6) + 1)
    assert np.all(np.diff(pareto_targets(20, 800)) <= 0)
    with pytest.raises(ValueError, match="min_count <= max_count"):
        pareto_targets(3, max_count=1, min_count=5)


def test_cooccurrence_order_by_hand():
    # class 0 always with 1; class 2 alone. P(0|1) = 2/3, P(1|0) = 1, P(0|2) = P(2|0) = 0, ...
    y = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]])
    # scores: s0 = P(0|1) + P(0|2) = 2/3; s1 = P(1|0) + P(1|2) = 1; s2 = 0
    assert cooccurrence_order(y).tolist() == [1, 0, 2]


def test_subset_hits_the_targets_when_classes_are_disjoint():
    rng = np.random.default_rng(0)
    c = 6
    labels = np.zeros((3000, c))
    labels[np.arange(3000), rng.integers(0, c, 3000)] = 1  # single-label: every target reachable exactly
    idx, targets = make_longtail_subset(labels, max_count=400, seed=1)
    np.testing.assert_array_equal(labels[idx].sum(axis=0), targets)
    assert sorted(targets.tolist(), reverse=True) == pareto_targets(c, 400).tolist()
    again, _ = make_longtail_subset(labels, max_count=400, seed=1)
    other, _ = make_longtail_subset(labels, max_count=400, seed=2)
    assert again.tolist() == idx.tolist() and other.tolist() != idx.tolist()
