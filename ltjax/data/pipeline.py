"""grain input pipelines: the training stream, evaluation batches, and global sharded arrays.

The training stream is random access end to end: global position ``i`` -> sampler -> example.
Global batch ``k`` holds positions ``[k * B, (k + 1) * B)``; process ``p`` of ``P`` loads only its
slice ``[k * B + p * B / P, k * B + (p + 1) * B / P)`` and ``jax.make_array_from_process_local_data``
assembles the global batch, so one process and many processes see identical global batches.
The grain iterator's state (``get_state``/``set_state``) is saved in every checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator

import grain
import jax
import numpy as np

from ltjax.data.base import Split


def _stack(examples):
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


@dataclasses.dataclass(frozen=True)
class _BatchPositions:
    """Batch number k -> the global stream positions this process reads for it."""

    global_batch: int
    local_batch: int
    process_index: int

    def __call__(self, k: int) -> np.ndarray:
        start = int(k) * self.global_batch + self.process_index * self.local_batch
        return np.arange(start, start + self.local_batch, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class _ReadBatch:
    """Stream positions -> a batch of examples, with ``index`` (the example indices, int32).

    Splits that can gather many examples at once (``split.get_batch(indices)``, e.g. in-memory
    arrays) are read with one fancy-indexing call; others example by example.
    """

    split: Any
    sampler: Any  # has .indices(positions) -> example indices
    transform: Callable[[dict, np.random.Generator], dict] | None
    seed: int = 0
    stream_tag: int = 0  # 0: the first stream of the first phase; others get their own augmentation draws

    def __call__(self, positions: np.ndarray) -> dict:
        indices = self.sampler.indices(positions)
        batch = self._read(indices, positions)
        batch["index"] = np.asarray(indices, np.int32)  # which examples (methods with per-example state use it)
        return batch

    def _read(self, indices, positions) -> dict:
        if self.transform is None and hasattr(self.split, "get_batch"):
            return dict(self.split.get_batch(indices))
        examples = [self.split[int(i)] for i in indices]
        if self.transform is not None:
            # one generator per stream position: the augmentation of an example depends only on
            # (seed, position), whatever the process, worker or resume point that reads it
            tag = [int(self.stream_tag)] if self.stream_tag else []
            examples = [
                self.transform(e, np.random.default_rng([self.seed & 0xFFFFFFFF, 2, int(p), *tag]))
                for e, p in zip(examples, positions)
            ]
        return _stack(examples)


@dataclasses.dataclass(frozen=True)
class _ReadIndices:
    """Stream positions -> ``{"index", "labels", ["position"], **extras}``: the batch of the device-resident
    pipeline (:mod:`ltjax.data.on_device`), whose inputs are gathered (and augmented) on the devices.

    ``position`` (with ``with_positions``) is the global stream position modulo 2**32 (uint32), the key
    of the example's augmentation; ``extras`` are per-example arrays gathered by example index (e.g.
    image sizes).
    """

    labels: np.ndarray
    sampler: Any
    extras: dict
    with_positions: bool = True

    def __call__(self, positions: np.ndarray) -> dict:
        indices = self.sampler.indices(positions)
        out = {"index": indices.astype(np.int32), "labels": self.labels[indices]}
        if self.with_positions:
            out["position"] = (np.asarray(positions, np.int64) & 0xFFFFFFFF).astype(np.uint32)
        out.update({k: v[indices] for k, v in self.extras.items()})
        return out


def process_batch_size(global_batch: int, process_count: int | None = None) -> int:
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch % process_count:
        raise ValueError(
            f"data.batch_size={global_batch} is not divisible by the number of processes ({process_count}); "
            "choose a global batch size that is a multiple of it"
        )
    return global_batch // process_count


def train_dataset(
    split: Split,
    sampler,
    global_batch: int,
    num_steps: int,
    *,
    transform: Callable[[dict, np.random.Generator], dict] | None = None,
    seed: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    num_workers: int = 0,
    read_threads: int = 2,
    prefetch_batches: int = 4,
    stream_tag: int = 0,
) -> grain.IterDataset:
    """The training stream of this process: ``num_steps`` process-local batches (dicts of arrays).

    One dataset element is one batch, so the grain iterator's state is the number of batches read.
    ``read_threads``/``prefetch_batches`` bound the in-process prefetch (memory = prefetch_batches
    batches); ``num_workers`` > 0 reads in that many worker processes instead.
    """
    read = _ReadBatch(split, sampler, transform, int(seed), int(stream_tag))
    return _batch_stream(read, global_batch, num_steps, process_index, process_count, num_workers, read_threads,
                         prefetch_batches)


def train_index_dataset(
    labels: np.ndarray,
    sampler,
    global_batch: int,
    num_steps: int,
    *,
    extras: dict | None = None,
    with_positions: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    read_threads: int = 1,
    prefetch_batches: int = 4,
) -> grain.IterDataset:
    """The training stream of the device-resident pipeline: the same sampler positions and batches as
    :func:`train_dataset`, but each batch holds example indices (plus labels and ``extras``), not inputs."""
    read = _ReadIndices(np.asarray(labels), sampler, dict(extras or {}), bool(with_positions))
    return _batch_stream(read, global_batch, num_steps, process_index, process_count, 0, read_threads,
                         prefetch_batches)


def _batch_stream(read, global_batch, num_steps, process_index, process_count, num_workers, read_threads,
                  prefetch_batches) -> grain.IterDataset:
    process_index = jax.process_index() if process_index is None else process_index
    local = process_batch_size(global_batch, process_count)
    ds = grain.MapDataset.range(num_steps).map(_BatchPositions(global_batch, local, process_index)).map(read)
    it_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=max(int(read_threads), 0), prefetch_buffer_size=max(int(prefetch_batches), 0))
    )
    if num_workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; we parse our own command line
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return it_ds


def eval_batches(
    split: Split,
    global_batch: int,
    *,
    transform: Callable[[dict], dict] | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict]:
    """The evaluation split in order, in process-local batches padded to a fixed size.

    Each batch carries ``valid`` (1 for a real example, 0 for padding); every process yields the
    same number of batches, so collective evaluation steps line up across processes.
    """
    for positions in eval_index_batches(len(split), global_batch, process_index=process_index,
                                        process_count=process_count):
        examples = [split[int(i)] for i in positions["index"]]  # padding reads example 0
        if transform is not None:
            examples = [transform(e) for e in examples]
        batch = _stack(examples)
        batch["valid"] = positions["valid"]
        yield batch


def eval_index_batches(
    num_examples: int,
    global_batch: int,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict]:
    """The batches of :func:`eval_batches` as example indices: ``{"index": int32, "valid": float32}`` per
    process-local batch (padding points at example 0 with ``valid`` 0).  A device-resident split is
    evaluated from these directly."""
    process_index = jax.process_index() if process_index is None else process_index
    local = process_batch_size(global_batch, process_count)
    for k in range(max(1, math.ceil(num_examples / global_batch))):
        idx = np.arange(k * global_batch + process_index * local, k * global_batch + (process_index + 1) * local)
        valid = idx < num_examples
        yield {"index": np.where(valid, idx, 0).astype(np.int32), "valid": valid.astype(np.float32)}


def to_global(batch: dict, sharding: jax.sharding.Sharding) -> dict:
    """Assemble process-local numpy batches into global jax.Arrays sharded along the batch axis."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}
