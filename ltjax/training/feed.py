"""The one data interface of the training loop: host pipeline and device-resident pipeline alike.

A :class:`Feed` gives the loop, for any phase and any of its streams,

* ``train_stream(sampler, num_steps, tag)``: the grain iterator of this process's batches (random access,
  ``get_state`` / ``set_state`` for checkpoints);
* ``global_batch(host_batch)`` and ``batch_shardings()``: the global batch a jitted step takes, and its
  shardings;
* ``train_inputs(batch, rng, tag)`` (inside the jitted step): the model inputs of a training batch;
* ``eval_batches(split)`` / ``eval_inputs(batch)``: a split in order, padded, as global batches with
  ``valid``, and their model inputs (evaluation and pass phases).

``HostFeed`` reads (and augments) examples on the host (:mod:`ltjax.data.pipeline`); ``DeviceFeed`` keeps
the split on the devices and gathers and augments inside the step (:mod:`ltjax.data.on_device`, selected
by ``data.on_device``).  ``tag`` names a stream: 0 for the first stream of the first phase (the draws a
single-phase run has always used), a distinct positive number for every other (phase, stream), so each
stream gets its own augmentation draws.
"""
from __future__ import annotations

import jax
import numpy as np

from ltjax.data.pipeline import eval_batches, eval_index_batches, to_global, train_dataset, train_index_dataset


class HostFeed:
    def __init__(self, dataset, config, batch_sharding, replicated):
        self.dataset = dataset
        self.config = config
        self.batch_sharding = batch_sharding
        self.replicated = replicated
        self.device_data = None
        self.messages: list[str] = []

    def train_stream(self, sampler, num_steps: int, tag: int = 0):
        d = self.config.data
        return iter(train_dataset(
            self.dataset.split("train"), sampler, int(d.batch_size), int(num_steps),
            transform=self.dataset.train_transform, seed=int(self.config.seed), num_workers=int(d.num_workers),
            read_threads=int(d.read_threads), prefetch_batches=int(d.prefetch_batches), stream_tag=int(tag),
        ))

    def batch_shardings(self):
        return self.batch_sharding

    def global_batch(self, host_batch: dict) -> dict:
        return to_global(host_batch, self.batch_sharding)

    def train_inputs(self, batch, rng, tag: int = 0):
        del rng, tag
        return batch["inputs"]

    def eval_batches(self, split_name: str, with_labels: bool = False):
        """The split in order, in global batches ``{"inputs", "valid"[, "labels"]}`` (padding: valid 0)."""
        split = self.dataset.split(split_name)
        for b in eval_batches(split, int(self.config.data.eval_batch_size), transform=self.dataset.eval_transform):
            keep = ("inputs", "valid", "labels") if with_labels else ("inputs", "valid")
            yield to_global({k: b[k] for k in keep}, self.batch_sharding)

    def eval_inputs(self, batch):
        return batch["inputs"]


class DeviceFeed(HostFeed):
    def __init__(self, dataset, config, batch_sharding, replicated):
        super().__init__(dataset, config, batch_sharding, replicated)
        from ltjax.data.on_device import DeviceData

        self.device_data = DeviceData(dataset, config.data, replicated)
        self.messages = self.device_data.messages  # the stores add their lines as they are built

    def train_stream(self, sampler, num_steps: int, tag: int = 0):
        d, dd = self.config.data, self.device_data
        return iter(train_index_dataset(
            self.dataset.split("train").labels, sampler, int(d.batch_size), int(num_steps),
            extras=dd.host_extras(), with_positions=dd.uses_positions, read_threads=min(int(d.read_threads), 1),
            prefetch_batches=int(d.prefetch_batches),
        ))

    def batch_shardings(self):  # the store is replicated; the per-example entries are split over "data"
        return {"store": self.replicated, **{k: self.batch_sharding for k in self.device_data.batch_keys()}}

    def global_batch(self, host_batch: dict) -> dict:
        batch = to_global(host_batch, self.batch_sharding)
        batch["store"] = self.device_data.train_store
        return batch

    def train_inputs(self, batch, rng, tag: int = 0):
        return self.device_data.batch_inputs(batch, rng, tag)

    def eval_batches(self, split_name: str, with_labels: bool = False):
        split = self.dataset.split(split_name)
        store = self.device_data.eval_store(split_name)
        labels = np.asarray(split.labels, np.float32) if with_labels else None
        for b in eval_index_batches(len(split), int(self.config.data.eval_batch_size)):
            if with_labels:
                b = {**b, "labels": labels[b["index"]]}
            g = to_global(b, self.batch_sharding)
            g["store"] = store
            yield g

    def eval_inputs(self, batch):
        return self.device_data.eval_inputs(batch["store"], batch["index"])


def make_feed(dataset, config, batch_sharding, replicated) -> HostFeed:
    cls = DeviceFeed if bool(config.data.get("on_device", False)) else HostFeed
    return cls(dataset, config, batch_sharding, replicated)


def gather_valid(arrays: list, valid: list):
    """Concatenate per-batch device outputs (a list of pytrees) and their ``valid`` masks over all
    processes; returns host numpy with the padding removed."""
    import numpy as np
    from jax.experimental import multihost_utils

    if jax.process_count() > 1:
        arrays, valid = multihost_utils.process_allgather((arrays, valid), tiled=True)
    arrays, valid = jax.device_get((arrays, valid))
    keep = np.concatenate([np.asarray(v) for v in valid]) > 0
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs])[keep], *arrays)
