"""Training-order samplers: which example each position of the training stream reads.

A sampler maps a global stream position ``i`` (0, 1, 2, ...) to an example index, deterministically
from a seed, so the stream is random-access: a resumed run, another process or a grain worker
computes exactly the same order.  Epoch ``e`` covers positions ``[e * L, (e + 1) * L)`` with
``L = epoch_length``; each epoch's order is drawn from a key derived from ``(seed, e)``.

* ``UniformSampler``: every epoch is a fresh permutation of the training set (``L = N``).
* ``ClassAwareSampler``: the class-aware re-sampler of the DB-loss code (REFERENCE section 2):
  classes are drawn by cycling through a shuffled class list (reshuffled whenever it is used up);
  each class draw takes the next ``draws_per_class`` (3) images from that class's own shuffled cycle
  of images (reshuffled whenever used up); ``L = max_c(n_c) * C / divisor`` (divisor 4), i.e. 3875
  for VOC-LT and 22560 for COCO-LT; or, with ``data.class_aware_epoch = "num_examples"``, ``L = N`` (the
  uniform sampler's epoch, so class-aware and uniform runs of the same ``num_epochs`` take the same
  number of steps: a compute-matched comparison; the DB length grows with C and with the head's n_c,
  e.g. 7x N on PadChest's 183 classes).  Difference from the reference, documented: the class cycle and
  the per-class cycles restart from a fresh shuffle at each epoch instead of continuing across epoch
  boundaries; every epoch has the same distribution, and any epoch can be computed on its own.
* ``ReverseSampler``: reverse sampling (BBN; COMIC's head-biased branch, LDRNet's virtual labels): each
  position draws a class ``c`` with probability proportional to ``n_max / n_c`` (classes without a
  training example are never drawn), then a uniform example of that class; ``L = N``.  Draws are
  independent within an epoch.

The samplers are registered by name in ``SAMPLERS`` (``data.sampler``, and each stream of a phase).
"""
from __future__ import annotations

import math

import numpy as np

from ltjax.errors import ConfigError
from ltjax.registry import Registry


def _epoch_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(stream)]))


class _EpochCachedSampler:
    """Random access over an endless stream of epochs, caching the most recent epoch's order."""

    epoch_length: int

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._cache_epoch = -1
        self._cache: np.ndarray | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        raise NotImplementedError  # implemented by each sampler below

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._cache_epoch:
            self._cache = self.epoch_order(epoch)
            self._cache_epoch = epoch
        return self._cache

    def __call__(self, position: int) -> int:
        return int(self.indices(np.asarray([position]))[0])

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """Example indices of many stream positions at once (vectorised per epoch)."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and positions.min() < 0:
            raise IndexError(f"stream positions must be >= 0, got {positions.min()}")
        epochs, offsets = np.divmod(positions, self.epoch_length)
        out = np.empty_like(positions)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            out[sel] = self._order(int(epoch))[offsets[sel]]
        return out

    def __getstate__(self):  # pickled into grain workers without the cache
        state = dict(self.__dict__)
        state["_cache_epoch"], state["_cache"] = -1, None
        return state


class UniformSampler(_EpochCachedSampler):
    def __init__(self, num_examples: int, seed: int):
        super().__init__(seed)
        if num_examples <= 0:
            raise ValueError("the training split is empty: nothing to sample")
        self.num_examples = int(num_examples)
        self.epoch_length = self.num_examples

    def epoch_order(self, epoch: int) -> np.ndarray:
        return _epoch_rng(self.seed, epoch, 0).permutation(self.num_examples)


class ClassAwareSampler(_EpochCachedSampler):
    def __init__(self, labels: np.ndarray, seed: int, draws_per_class: int = 3, epoch_divisor: float = 4,
                 epoch_length: int | None = None):
        super().__init__(seed)
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise ValueError(f"class-aware sampling needs a [N, C] label matrix, got shape {labels.shape}")
        if draws_per_class < 1:
            raise ValueError(f"data.class_aware_draws must be >= 1, got {draws_per_class}")
        positives = labels > 0
        self.class_members = [np.flatnonzero(positives[:, c]) for c in range(labels.shape[1])]
        # Classes without a training example cannot be drawn (the reference would crash on them).
        self.classes = np.array([c for c, m in enumerate(self.class_members) if len(m) > 0], dtype=np.int64)
        if len(self.classes) == 0:
            raise ValueError("class-aware sampling: no class has a training example")
        counts = positives.sum(axis=0)
        self.draws_per_class = int(draws_per_class)
        if epoch_length is None:  # the DB-loss protocol's length
            epoch_length = int(counts.max() * labels.shape[1] / epoch_divisor)
        self.epoch_length = int(epoch_length)
        if self.epoch_length <= 0:
            raise ValueError(
                f"class-aware sampling: epoch length must be > 0, got {self.epoch_length} "
                "(max(n_c) * C / data.class_aware_epoch_divisor, or N with data.class_aware_epoch='num_examples')"
            )

    def epoch_order(self, epoch: int) -> np.ndarray:
        rng = _epoch_rng(self.seed, epoch, 1)
        k = self.draws_per_class
        num_draws = math.ceil(self.epoch_length / k)
        num_cycles = math.ceil(num_draws / len(self.classes))
        class_seq = np.concatenate([rng.permutation(self.classes) for _ in range(num_cycles)])[:num_draws]
        order = np.empty((num_draws, k), dtype=np.int64)
        for c in np.unique(class_seq):
            rows = np.flatnonzero(class_seq == c)
            members = self.class_members[c]
            needed = len(rows) * k
            cycles = math.ceil(needed / len(members))
            images = np.concatenate([rng.permutation(members) for _ in range(cycles)])[:needed]
            order[rows] = images.reshape(len(rows), k)
        return order.reshape(-1)[: self.epoch_length]


class ReverseSampler(_EpochCachedSampler):
    """Class c with probability proportional to n_max / n_c, then a uniform example of c (module doc)."""

    def __init__(self, labels: np.ndarray, seed: int, epoch_length: int | None = None):
        super().__init__(seed)
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise ValueError(f"reverse sampling needs a [N, C] label matrix, got shape {labels.shape}")
        positives = labels > 0
        self.class_members = [np.flatnonzero(positives[:, c]) for c in range(labels.shape[1])]
        counts = positives.sum(axis=0).astype(np.float64)
        self.classes = np.flatnonzero(counts > 0)
        if len(self.classes) == 0:
            raise ValueError("reverse sampling: no class has a training example")
        weights = counts.max() / counts[self.classes]
        self.class_probs = weights / weights.sum()
        self.epoch_length = int(epoch_length or len(labels))

    def epoch_order(self, epoch: int) -> np.ndarray:
        rng = _epoch_rng(self.seed, epoch, 2)
        drawn = rng.choice(self.classes, size=self.epoch_length, p=self.class_probs)
        picks = rng.random(self.epoch_length)
        order = np.empty(self.epoch_length, np.int64)
        for c in np.unique(drawn):
            rows = drawn == c
            members = self.class_members[c]
            order[rows] = members[np.minimum((picks[rows] * len(members)).astype(np.int64), len(members) - 1)]
        return order


CLASS_AWARE_EPOCHS = ("db", "num_examples")


def _uniform(data_cfg, labels, seed):
    return UniformSampler(len(labels), seed)


def _class_aware(data_cfg, labels, seed):
    epoch = data_cfg.get("class_aware_epoch", "db")
    if epoch not in CLASS_AWARE_EPOCHS:
        raise ValueError(
            f"unknown data.class_aware_epoch {epoch!r}; valid: 'db' (max(n_c) * C / class_aware_epoch_divisor, "
            "the DB-loss protocol) or 'num_examples' (N, as long as a uniform epoch)"
        )
    return ClassAwareSampler(
        labels, seed, data_cfg.class_aware_draws, data_cfg.class_aware_epoch_divisor,
        epoch_length=len(labels) if epoch == "num_examples" else None,
    )


def _reverse(data_cfg, labels, seed):
    return ReverseSampler(labels, seed)


# name -> (data_cfg, train labels [N, C], seed) -> sampler
SAMPLERS: Registry = Registry("sampler")
SAMPLERS.add("uniform", _uniform)
SAMPLERS.add("class_aware", _class_aware)
SAMPLERS.add("reverse", _reverse)


def make_sampler(data_cfg, train_labels: np.ndarray, seed: int, name: str | None = None):
    """The training sampler named ``name`` (default: ``config.data.sampler``)."""
    name = data_cfg.sampler if name is None else name
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; valid samplers: {', '.join(map(repr, SAMPLERS.names()))}")
    return SAMPLERS.get(name)(data_cfg, np.asarray(train_labels), seed)
