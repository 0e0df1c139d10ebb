"""Samplers: the class-aware re-sampler's epoch length, class frequencies and draws; uniform epochs."""
import collections

import numpy as np
import pytest

import ml_collections

from ltjax.data.sampling import ClassAwareSampler, UniformSampler, make_sampler


def test_class_aware_epoch_length_on_voc_lt(voc_lt_labels):
    sampler = ClassAwareSampler(voc_lt_labels, seed=0)
    assert voc_lt_labels.shape == (1142, 20)
    assert sampler.epoch_length == 3875  # max n_c (775) * 20 / 4
    assert len(sampler.epoch_order(0)) == 3875


def _data_cfg(**fields):
    c = ml_collections.ConfigDict(dict(sampler="class_aware", class_aware_draws=3, class_aware_epoch_divisor=4))
    c.update(fields)
    return c


def test_class_aware_epoch_num_examples_is_compute_matched_with_uniform(voc_lt_labels):
    db = make_sampler(_data_cfg(class_aware_epoch="db"), voc_lt_labels, seed=0)
    matched = make_sampler(_data_cfg(class_aware_epoch="num_examples"), voc_lt_labels, seed=0)
    uniform = make_sampler(_data_cfg(sampler="uniform"), voc_lt_labels, seed=0)
    assert db.epoch_length == 3875 and matched.epoch_length == uniform.epoch_length == 1142
    order = matched.epoch_order(0)
    assert len(order) == 1142
    # still class-aware: the rarest class (cow, n_c = 4) is drawn about 3 * 1142 / (3 * 20) ~ 57 times, not 4
    counts = voc_lt_labels[order].sum(axis=0)
    assert counts.min() >= 40
    with pytest.raises(ValueError, match="class_aware_epoch 'n'.*'num_examples'"):
        make_sampler(_data_cfg(class_aware_epoch="n"), voc_lt_labels, seed=0)


def test_class_aware_draws_balance_classes_and_follow_each_class_cycle(voc_lt_labels):
    sampler = ClassAwareSampler(voc_lt_labels, seed=3, draws_per_class=3)
    order = sampler.epoch_order(0)
    draws = order[: (len(order) // 3) * 3].reshape(-1, 3)
    num_classes = voc_lt_labels.shape[1]
    # Recover the class of every draw: the one class that all three images share and that keeps the
    # class cycle a permutation.  Check via the class cycle: each block of C draws covers every class.
    counts = collections.Counter()
    for block_start in range(0, len(draws) - num_classes + 1, num_classes):
        block = draws[block_start : block_start + num_classes]
        shared = [set(np.flatnonzero(voc_lt_labels[d].min(axis=0) > 0)) for d in block]
        # a perfect matching of draws to distinct classes exists (each class exactly once per cycle)
        assigned = _match(shared, num_classes)
        assert assigned is not None, f"cycle starting at draw {block_start} does not cover every class"
        counts.update(assigned)
    per_class = np.array([counts[c] for c in range(num_classes)])
    assert per_class.min() == per_class.max()  # perfectly balanced over whole cycles
    # Images of the rarest class (cow, n_c = 4) are repeated evenly: each appears ~draws*3/4 times.
    cow = 9
    members = np.flatnonzero(voc_lt_labels[:, cow] > 0)
    assert len(members) == 4


def _match(candidate_sets, num_classes):
    """Bipartite matching (draw -> class) by augmenting paths; None when impossible."""
    owner = {}

    def try_assign(i, seen):
        for c in candidate_sets[i]:
            if c in seen:
                continue
            seen.add(c)
            if c not in owner or try_assign(owner[c], seen):
                owner[c] = i
                return True
        return False

    for i in range(len(candidate_sets)):
        if not try_assign(i, set()):
            return None
    return list(owner.keys()) if len(owner) == num_classes else None


def test_class_aware_class_frequencies_are_flat_not_long_tailed(voc_lt_labels):
    sampler = ClassAwareSampler(voc_lt_labels, seed=0)
    order = np.concatenate([sampler.epoch_order(e) for e in range(3)])
    sampled_counts = voc_lt_labels[order].sum(axis=0)
    natural_counts = voc_lt_labels.sum(axis=0)
    # every class is drawn ~ len/(3*C) times as the drawn class, so even the rarest class (n_c = 4)
    # appears at least that often; in natural sampling it would appear 4/1142 of the time.
    min_expected = len(order) / 20 * 0.9
    assert sampled_counts.min() >= min_expected
    ratio_sampled = sampled_counts.max() / sampled_counts.min()
    ratio_natural = natural_counts.max() / natural_counts.min()
    assert ratio_sampled < ratio_natural / 5


def test_per_class_cycle_visits_every_member_before_repeating():
    # 3 classes, disjoint members: class 0 has 5 images, the draws of class 0 must be a shuffled
    # cycle of its 5 images (each image once per 5 consecutive picks).
    labels = np.zeros((5 + 2 + 1, 3), np.float32)
    labels[0:5, 0] = 1
    labels[5:7, 1] = 1
    labels[7, 2] = 1
    sampler = ClassAwareSampler(labels, seed=1, draws_per_class=3, epoch_divisor=1)  # L = 5 * 3 = 15
    order = sampler.epoch_order(0)
    picks0 = [i for i in order if i < 5]
    for start in range(0, len(picks0) - 4, 5):
        assert sorted(picks0[start : start + 5]) == [0, 1, 2, 3, 4]
    draws = order.reshape(-1, 3)
    for d in draws:  # all three images of one draw share their class
        assert len({int(np.argmax(labels[i])) for i in d}) == 1


def test_samplers_are_deterministic_and_random_access():
    labels = (np.random.default_rng(0).random((50, 6)) < 0.3).astype(np.float32)
    labels[0] = 1
    for make in (lambda s: UniformSampler(50, s), lambda s: ClassAwareSampler(labels, s)):
        a, b, c = make(7), make(7), make(8)
        positions = [0, 1, 49, 50, 123, 7, 0]
        assert [a(p) for p in positions] == [b(p) for p in reversed(positions)][::-1]
        assert [a(p) for p in range(100)] != [c(p) for p in range(100)]


def test_uniform_sampler_epochs_are_permutations_that_differ():
    s = UniformSampler(10, seed=0)
    e0 = [s(i) for i in range(10)]
    e1 = [s(i) for i in range(10, 20)]
    assert sorted(e0) == sorted(e1) == list(range(10))
    assert e0 != e1


def test_class_aware_sampler_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        ClassAwareSampler(np.ones(5), seed=0)
    with pytest.raises(ValueError, match="no class"):
        ClassAwareSampler(np.zeros((4, 3)), seed=0)


def test_reverse_sampler_draws_classes_in_proportion_to_n_max_over_n_c():
    from ltjax.data.sampling import ReverseSampler

    counts = [200, 50, 20, 5, 0]  # single-label rows, so a drawn example names its drawn class
    labels = np.zeros((sum(counts), len(counts)), np.float32)
    labels[np.arange(sum(counts)), np.repeat(np.arange(len(counts)), counts)] = 1
    s = ReverseSampler(labels, seed=0)
    assert s.epoch_length == len(labels)
    idx = s.indices(np.arange(1000 * len(labels)))
    freq = np.bincount(labels[idx].argmax(1), minlength=len(counts)) / len(idx)
    w = np.asarray([200 / c for c in counts[:4]])
    p = w / w.sum()
    sigma = np.sqrt(p * (1 - p) / len(idx))
    assert (np.abs(freq[:4] - p) < 5 * sigma).all(), (freq, p)
    assert freq[4] == 0  # a class without examples is never drawn
    # within a class the examples are uniform
    tail = idx[labels[idx, 3] > 0]
    per = np.bincount(tail, minlength=len(labels))[labels[:, 3] > 0]
    assert per.min() > 0.7 * per.mean() and per.max() < 1.3 * per.mean()


def test_reverse_sampler_is_random_access_and_resumes_in_the_pipeline(voc_lt_labels):
    from ltjax.data.pipeline import train_index_dataset
    from ltjax.data.sampling import ReverseSampler

    s = ReverseSampler(voc_lt_labels, seed=0)
    pos = np.arange(3 * s.epoch_length)
    seq = s.indices(pos)
    shuffled = np.random.default_rng(1).permutation(pos)
    np.testing.assert_array_equal(ReverseSampler(voc_lt_labels, seed=0).indices(shuffled), seq[shuffled])
    assert not np.array_equal(seq[: s.epoch_length], seq[s.epoch_length: 2 * s.epoch_length])
    it = iter(train_index_dataset(voc_lt_labels, s, 16, 20, with_positions=False))
    first = [next(it)["index"] for _ in range(5)]
    saved = it.get_state()
    rest = [next(it)["index"] for _ in range(5)]
    it2 = iter(train_index_dataset(voc_lt_labels, ReverseSampler(voc_lt_labels, seed=0), 16, 20, with_positions=False))
    it2.set_state(saved)
    for a, b in zip(rest, [next(it2)["index"] for _ in range(5)]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.concatenate(first + rest), seq[:160])


def test_sampler_registry_names_and_errors():
    from ltjax.data.sampling import SAMPLERS
    from ltjax.errors import ConfigError

    assert {"uniform", "class_aware", "reverse"} <= set(SAMPLERS.names())
    cfg = ml_collections.ConfigDict({"sampler": "sideways"})
    with pytest.raises(ConfigError, match="unknown sampler 'sideways'.*'reverse'"):
        make_sampler(cfg, np.eye(3), 0)
