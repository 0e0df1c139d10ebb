"""grain pipelines: process-local slices assemble the global batch; iterator state round trip; eval padding."""
import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ltjax.data.base import ArraySplit
from ltjax.data.pipeline import eval_batches, process_batch_size, to_global, train_dataset
from ltjax.data.sampling import ClassAwareSampler, UniformSampler


def _split(n=40, c=5):
    labels = np.zeros((n, c), np.float32)
    labels[np.arange(n), np.arange(n) % c] = 1
    return ArraySplit(np.arange(n, dtype=np.float32)[:, None], labels)


def _ids(batch):
    return batch["inputs"][:, 0].astype(int).tolist()


def test_processes_load_disjoint_slices_that_concatenate_to_the_global_batch():
    split = _split()
    sampler = ClassAwareSampler(split.labels, seed=0)
    one = list(train_dataset(split, sampler, 12, 6, process_index=0, process_count=1))
    parts = [list(train_dataset(split, sampler, 12, 6, process_index=p, process_count=3)) for p in range(3)]
    for k in range(6):
        assert _ids(one[k]) == sum((_ids(parts[p][k]) for p in range(3)), [])
    # and the stream equals the sampler's positions
    assert sum((_ids(b) for b in one), []) == [sampler(i) for i in range(72)]


def test_iterator_state_round_trip_continues_exactly():
    split = _split()
    sampler = UniformSampler(len(split), seed=5)
    ds = train_dataset(split, sampler, 8, 20, process_index=0, process_count=1)
    it = iter(ds)
    for _ in range(7):
        next(it)
    state = it.get_state()
    expected = [_ids(next(it)) for _ in range(5)]
    resumed = iter(train_dataset(split, sampler, 8, 20, process_index=0, process_count=1))
    resumed.set_state(state)
    assert [_ids(next(resumed)) for _ in range(5)] == expected


def test_worker_processes_give_the_same_stream():
    split = _split()
    sampler = UniformSampler(len(split), seed=1)
    plain = [_ids(b) for b in train_dataset(split, sampler, 8, 6, process_index=0, process_count=1)]
    workers = [_ids(b) for b in train_dataset(split, sampler, 8, 6, process_index=0, process_count=1, num_workers=2)]
    assert plain == workers


def test_eval_batches_pad_and_cover_every_example_once():
    split = _split(n=23)
    seen = []
    for p in range(2):
        for b in eval_batches(split, 10, process_index=p, process_count=2):
            assert b["inputs"].shape == (5, 1)
            seen += [i for i, v in zip(_ids(b), b["valid"]) if v]
    assert sorted(seen) == list(range(23))


def test_to_global_shards_the_batch_over_the_data_axis():
    mesh = Mesh(np.asarray(jax.devices()).reshape(8, 1), ("data", "model"))
    sharding = NamedSharding(mesh, P("data"))
    batch = {"inputs": np.arange(32, dtype=np.float32).reshape(16, 2), "labels": np.ones((16, 3), np.float32)}
    g = to_global(batch, sharding)
    assert g["inputs"].shape == (16, 2)
    assert len(g["inputs"].addressable_shards) == 8
    assert g["inputs"].addressable_shards[0].data.shape == (2, 2)
    np.testing.assert_array_equal(np.asarray(g["inputs"]), batch["inputs"])


def test_batch_size_must_divide_over_processes():
    with pytest.raises(ValueError, match="not divisible by the number of processes"):
        process_batch_size(10, 3)


def test_train_transform_gets_a_generator_seeded_by_stream_position():
    split = _split()
    sampler = UniformSampler(len(split), seed=2)

    def jitter(example, rng):
        return {"inputs": example["inputs"] + rng.random(1).astype(np.float32), "labels": example["labels"]}

    def read(process_index, process_count, seed=0):
        ds = train_dataset(split, sampler, 8, 4, transform=jitter, seed=seed,
                           process_index=process_index, process_count=process_count)
        return [b["inputs"][:, 0] for b in ds]

    one = read(0, 1)
    two = [np.concatenate([a, b]) for a, b in zip(read(0, 2), read(1, 2))]
    np.testing.assert_array_equal(np.concatenate(one), np.concatenate(two))  # same noise per position
    ids = np.floor(np.concatenate(one))
    assert not np.array_equal(np.concatenate(one), ids)  # the transform really ran
    assert not np.array_equal(np.concatenate(read(0, 1, seed=1)), np.concatenate(one))
