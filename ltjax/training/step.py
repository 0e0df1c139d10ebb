"""The train state and the jitted steps: ``train_step(state, batch, rng)``, the phase step, ``eval_step``.

A step is pure: its key is ``fold_in(rng, state.step)``, split into the named streams a model may use
(``dropout``, ``noise``, ``sample``).  The state is donated.  With a bf16 compute dtype the model computes
in bfloat16 while parameters, gradients and the loss stay float32.

``TrainState``: ``step`` (the run's step counter over all phases; a pass phase counts as one step),
``params``, ``batch_stats``, ``opt_state`` (of the current training phase), ``method_state`` (the method's
non-parameter arrays, ``{}`` when it has none) and ``ema`` (an exponential moving average of ``params``
with ``train.ema_decay`` > 0, else ``{}``).
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

RNG_STREAMS = ("dropout", "noise", "sample")
LOSS_RNG_TAG = 0x6C6F7373  # folded into the step's "sample" key for a phase's loss_rng key ("loss")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    method_state: Any = flax.struct.field(default_factory=dict)
    ema: Any = flax.struct.field(default_factory=dict)


def init_variables(model: nn.Module, rng: jax.Array, example_inputs) -> dict:
    """``{"params", "batch_stats"}`` of a freshly initialised model."""
    variables = model.init({"params": rng, **{s: rng for s in RNG_STREAMS}}, example_inputs, train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def _variables(state_params, batch_stats):
    return {"params": state_params, **({"batch_stats": batch_stats} if batch_stats else {})}


def _cast(inputs, compute_dtype):
    return inputs.astype(compute_dtype) if jnp.issubdtype(inputs.dtype, jnp.floating) else inputs


def make_phase_step(model, loss_fn_of_method: Callable, method_cfg, stats, tx, compute_dtype, *,
                    streams=("main",), schedule=None, input_fn=None, update_state=None, ema_decay: float = 0.0,
                    phase_start: int = 0, train_mode: bool = True, loss_rng: bool = False):
    """A pure ``(state, batches, rng) -> (state, metrics)`` for one training phase; jit it with donated state.

    ``batches`` maps each stream name to its batch.  The model runs on each stream in turn (batch
    statistics threaded through, as separate forward passes in training mode would); the loss gets that
    stream's outputs and batch when the phase has one stream, else dicts keyed by stream.
    ``input_fn(batch, rng, tag)`` makes a stream's model inputs inside the step (``tag`` = the stream's
    position in ``streams``; see :mod:`ltjax.training.feed`), default ``batch["inputs"]``.
    ``schedule`` is read at ``state.step - phase_start`` (each phase's schedule starts at 0).
    ``train_mode`` False applies the model in evaluation mode (see ``TrainPhase``).  ``loss_rng`` True calls
    the loss with ``rng=fold_in(<the step's "sample" key>, LOSS_RNG_TAG)``.

    metrics: loss, gradient global norm, the learning rate used (when ``schedule`` is given) and the
    loss's auxiliary values."""
    streams = tuple(streams)
    single = len(streams) == 1

    def train_step(state: TrainState, batches: dict, rng: jax.Array):
        keys = jax.random.split(jax.random.fold_in(rng, state.step), len(RNG_STREAMS))
        rngs = dict(zip(RNG_STREAMS, keys))
        inputs = {}
        for i, s in enumerate(streams):
            x = batches[s]["inputs"] if input_fn is None else input_fn(batches[s], rng, i)
            inputs[s] = _cast(x, compute_dtype)

        def loss_fn(params):
            outputs, batch_stats = {}, state.batch_stats
            for i, s in enumerate(streams):
                step_rngs = rngs if i == 0 else {k: jax.random.fold_in(v, i) for k, v in rngs.items()}
                outputs[s], updates = model.apply(
                    _variables(params, batch_stats), inputs[s], train=train_mode, rngs=step_rngs,
                    mutable=["batch_stats"]
                )
                batch_stats = updates.get("batch_stats", batch_stats)
            o, b = (outputs[streams[0]], batches[streams[0]]) if single else (outputs, batches)
            extra = {"rng": jax.random.fold_in(rngs["sample"], LOSS_RNG_TAG)} if loss_rng else {}
            loss, aux = loss_fn_of_method(o, b, stats, method_cfg, state.method_state, **extra)
            return loss, (aux, batch_stats, o, b)

        (loss, (aux, batch_stats, outputs, batch)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, param_updates)
        method_state = state.method_state
        if update_state is not None:
            method_state = update_state(state.method_state, jax.lax.stop_gradient(outputs), batch, method_cfg)
        ema = state.ema
        if ema_decay > 0:
            ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema, params)
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
            method_state=method_state, ema=ema,
        )
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        if schedule is not None:
            metrics["lr"] = schedule(state.step - phase_start)
        return new_state, metrics

    return train_step


def make_train_step(model, method, method_cfg, stats, tx, compute_dtype, schedule=None, input_fn=None,
                    ema_decay: float = 0.0):
    """The single-stream step ``(state, batch, rng) -> (state, metrics)`` with the method's loss (the
    default phase of every method that declares none)."""
    step = make_phase_step(
        model, method.loss, method_cfg, stats, tx, compute_dtype, schedule=schedule, ema_decay=ema_decay,
        input_fn=None if input_fn is None else (lambda batch, rng, tag: input_fn(batch, rng)),
    )
    return lambda state, batch, rng: step(state, {"main": batch}, rng)


def make_eval_step(model, method, compute_dtype, method_cfg=None):
    """(params, batch_stats, inputs[, method_state]) -> scores [B, C] float32, no randomness, no state change.
    A method with ``scores_use_config`` gets ``method_cfg`` too."""

    def eval_step(params, batch_stats, inputs, method_state=None):
        outputs = model.apply(_variables(params, batch_stats), _cast(inputs, compute_dtype), train=False)
        if getattr(method, "scores_use_config", False):
            return method.scores(outputs, method_state, method_cfg).astype(jnp.float32)
        return method.scores(outputs, method_state).astype(jnp.float32)

    return eval_step


def make_collect_step(model, collect, compute_dtype):
    """(params, batch_stats, inputs, batch) -> ``collect(outputs, batch)``: a pass phase's per-example arrays."""

    def collect_step(params, batch_stats, inputs, batch):
        outputs = model.apply(_variables(params, batch_stats), _cast(inputs, compute_dtype), train=False)
        return collect(outputs, batch)

    return collect_step
