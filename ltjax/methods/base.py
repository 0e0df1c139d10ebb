"""The method contract: what a method declares and the training loop runs, with no special cases.

A :class:`Method` is a model, a loss, a scoring function and, optionally,

* **phases** (:class:`TrainPhase` / :class:`PassPhase`), run in order by :mod:`ltjax.training.loop`.
  A method without phases trains in one phase named ``"train"`` (``train.num_epochs`` epochs of
  ``data.sampler`` with ``config.optimizer`` / ``config.schedule``), as every loss baseline does.
* **method state**: non-parameter arrays the method owns (running means, class statistics, prototypes,
  label embeddings).  ``init_state`` makes them on the host once; they live in the train state (placed on
  the mesh, checkpointed, restored), a train phase's ``update_state`` changes them inside the jitted
  step, a pass phase's ``finish`` rewrites them, and the loss and ``scores`` receive them.

What a phase *does* is code (which parameters train, its loss, its streams, its pass); how *long* it
runs and how it is *optimised* are config fields under ``config.method.phases.<phase name>``:

* ``epochs`` (float; with ``steps`` 0 and ``epochs`` 0 the phase runs ``train.num_epochs`` epochs) and
  ``steps`` (int; overrides ``epochs`` when > 0).  An epoch is the epoch of the phase's first stream's
  sampler (``train.steps_per_epoch`` overrides it for every phase);
* ``optimizer`` / ``schedule``: every field of ``config.optimizer`` / ``config.schedule``; ``None`` keeps
  the run's value, anything else overrides it in this phase (e.g. ``lr`` 0.1); a field those sections
  lack is an error naming the valid ones;
* ``streams``: stream name -> sampler name (``""`` = ``data.sampler``), for every stream the phase's code
  declares.

Losses: ``loss(outputs, batch, stats, method_cfg, state=None) -> (scalar, aux dict)``.  In a phase with one
stream ``outputs`` / ``batch`` are that stream's; with several they are dicts keyed by stream name.
Scores: ``scores(outputs, state=None) -> [B, C]`` in [0, 1].
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax import models
from ltjax.optim_defaults import optimizer_defaults, schedule_defaults
from ltjax.params import param_path, path_mask  # noqa: F401 (re-exported)
from ltjax.registry import Registry
from ltjax.training.step import LOSS_RNG_TAG  # noqa: F401 (re-exported; TrainPhase.loss_rng)

MAIN_STREAM = "main"


@dataclasses.dataclass(frozen=True)
class TrainPhase:
    """A phase of gradient steps.

    ``trainable``: regular expressions searched in each parameter's path (``"backbone/trunk/conv1/kernel"``);
    only matching parameters train (and get weight decay); ``()`` = every parameter the model does not
    freeze (``model.frozen_stages``).  ``reinit``: expressions of parameters re-initialised (fresh values
    from the model's initialiser, keyed by the seed and the phase) when the phase starts.  ``streams``: the
    named batch streams drawn at every step (each with its own sampler and augmentation keys).
    ``loss``: ``None`` = the method's loss.  ``update_state(state, outputs, batch, method_cfg) -> state``:
    the method state after the step, from the step's outputs, without gradient.  ``train_mode``: False
    applies the model in evaluation mode (no dropout or feature noise, BatchNorm statistics frozen), e.g.
    to retrain a head on a fixed representation.  ``block``: several phases (e.g. the rounds of an EM
    loop) may share one config block for their length and optimiser.  ``loss_rng``: the loss is called with a keyword ``rng``,
    a PRNG key of its own for the step (``fold_in`` of the step's "sample" key with :data:`LOSS_RNG_TAG`),
    for losses that draw (e.g. virtual features sampled from class statistics in the method state).
    """

    name: str
    trainable: tuple[str, ...] = ()
    reinit: tuple[str, ...] = ()
    streams: tuple[str, ...] = (MAIN_STREAM,)
    loss: Callable[..., tuple[jax.Array, dict]] | None = None
    update_state: Callable[..., Any] | None = None
    train_mode: bool = True
    loss_rng: bool = False
    block: str = ""  # the config block (method.phases.<block>) this phase reads; "" = its own name

    @property
    def block_name(self) -> str:
        return self.block or self.name

    kind = "train"


@dataclasses.dataclass(frozen=True)
class PassContext:
    """What a pass phase's ``finish`` receives (all host numpy).

    ``gathered``: the ``collect`` outputs of every example of the split, in split order (all processes'
    examples, padding removed); ``labels`` the split's label matrix; ``params`` / ``state`` the current
    parameters and method state."""

    gathered: dict
    labels: np.ndarray
    params: Any
    state: Any
    config: Any
    meta: Any


@dataclasses.dataclass(frozen=True)
class PassResult:
    """``params`` / ``state``: the new parameters / method state (``None`` keeps them; the tree structure,
    shapes and dtypes must not change); ``info``: numbers for the run log."""

    params: Any = None
    state: Any = None
    info: Mapping[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PassPhase:
    """A pass over a split in order, without augmentation and without gradients, then a host step.

    ``collect(outputs, batch) -> dict`` of per-example arrays ``[B, ...]`` runs in a jitted, sharded
    evaluation step (``outputs`` are the model's evaluation-mode outputs); ``None`` skips the data pass
    (a host step on the parameters only, e.g. tau-normalisation).  For statistics too large to gather per
    example, ``reduce(outputs, labels, valid, state) -> dict`` instead returns arrays already summed over
    the batch's valid examples (``labels`` [B, C] float32, ``valid`` [B] 1/0, ``state`` the method state,
    e.g. means from an earlier pass to centre second moments); the pass adds them over all batches on the
    devices, and ``finish`` receives the totals as ``ctx.gathered``.  ``finish(PassContext) -> PassResult``
    runs on every process with the same gathered arrays, so every process writes the same values.  A pass
    counts as one step of the run's step counter; a run killed inside it repeats it from the checkpoint
    written where the previous phase ended.
    """

    name: str
    finish: Callable[[PassContext], PassResult]
    collect: Callable[[dict, dict], dict] | None = None
    split: str = "train"
    reduce: Callable[[dict, jax.Array, jax.Array, Any], dict] | None = None

    def __post_init__(self):
        if self.collect is not None and self.reduce is not None:
            raise ValueError(f"pass {self.name!r}: give collect (per-example arrays) or reduce (sums), not both")

    kind = "pass"


Phase = TrainPhase | PassPhase


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    description: str
    defaults: Callable[[], ml_collections.ConfigDict]
    # (config, meta, compute dtype) -> flax module whose outputs carry "logits"
    build_model: Callable[[Any, Any, Any], nn.Module]
    # (outputs, batch, stats, method_cfg, state=None) -> (loss, aux dict of scalars)
    loss: Callable[..., tuple[jax.Array, dict]]
    # (outputs, state=None) -> scores [B, C] in [0, 1]; with scores_use_config (outputs, state, method_cfg)
    scores: Callable[..., jax.Array]
    # (config, params) -> pytree of bool, False for frozen parameters
    trainable_mask: Callable[[Any, Any], Any] = None
    # dotted config paths outside config.method that the method sets, e.g. {"data.sampler": "class_aware"}
    config_updates: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # method_cfg -> the ordered phases; None: one TrainPhase("train")
    phases: Callable[[Any], tuple[Phase, ...]] | None = None
    # (config, meta, dataset, outputs) -> pytree of numpy arrays (the initial method state); None: {}.
    # ``outputs``: the shapes (jax.ShapeDtypeStruct) of the model's outputs for a batch of one example
    init_state: Callable[..., Any] | None = None
    # the dataset input kinds the method's model accepts (DatasetMeta.input_kind); CSSFE needs images
    input_kinds: tuple[str, ...] = ("features", "image", "text")
    # scores(outputs, state, method_cfg): scoring that a config field chooses (e.g. COMIC's test branch)
    scores_use_config: bool = False
    # (final method state, the evaluation result) -> JSON-able dict for eval.json["method_summary"] (e.g.
    # COMIC's label recalls, HTTN's tail-split mAP)
    summary: Callable[[Any], dict] | None = None

    def __post_init__(self):
        if self.trainable_mask is None:
            object.__setattr__(self, "trainable_mask", lambda config, params: models.trainable_mask(config.model, params))

    def phase_list(self, method_cfg) -> tuple[Phase, ...]:
        phases = (TrainPhase("train"),) if self.phases is None else tuple(self.phases(method_cfg))
        names = [p.name for p in phases]
        if not phases or len(set(names)) != len(names):
            raise ValueError(f"method {self.name!r} must declare at least one phase, with distinct names; got {names}")
        if not any(p.kind == "train" for p in phases):
            raise ValueError(f"method {self.name!r} has no training phase")
        return phases


METHODS: Registry[Method] = Registry("method")


# ---- the parts most methods share ---------------------------------------------------------------


def standard_model(config, meta, dtype) -> nn.Module:
    """The model named by config.model on the dataset's classes and input shape."""
    return models.build_model(config.model, meta.num_classes, meta.input_shape, dtype, vocab_size=meta.vocab_size)


def sigmoid_scores(outputs: dict, state=None) -> jax.Array:
    del state
    return jax.nn.sigmoid(outputs["logits"].astype(jnp.float32))


def phase_config(epochs: float = 0.0, steps: int = 0, optimizer=None, schedule=None, streams=None):
    """The config block of one phase (``config.method.phases.<name>``; module docstring).

    ``optimizer`` / ``schedule`` hold every field of ``config.optimizer`` / ``config.schedule``, ``None``
    (= the run's value) unless given here, so any of them can be set per phase on the command line
    (``--config.method.phases.head.optimizer.lr=0.01``)."""

    def block(section, overrides):
        out = ml_collections.ConfigDict({k: None for k in section.keys()})
        for k, v in dict(overrides or {}).items():
            if k not in out:
                raise ValueError(f"phase_config: {k!r} is not a field of that section; valid: {sorted(out.keys())}")
            out[k] = v
        return out

    c = ml_collections.ConfigDict()
    c.epochs = float(epochs)
    c.steps = int(steps)
    c.optimizer = block(optimizer_defaults(), optimizer)
    c.schedule = block(schedule_defaults(), schedule)
    c.streams = ml_collections.ConfigDict(dict(streams or {}))
    return c
