"""The train state and the one jitted ``train_step(state, batch, rng)`` / ``eval_step``.

``train_step`` is pure: the step's key is ``fold_in(rng, state.step)``, split into the named streams
a model may use (``dropout``, ``noise``, ``sample``).  The state is donated.  With a bf16 compute
dtype the model computes in bfloat16 while parameters, gradients and the loss stay float32.
"""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

RNG_STREAMS = ("dropout", "noise", "sample")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, example_inputs) -> TrainState:
    variables = model.init({"params": rng, **{s: rng for s in RNG_STREAMS}}, example_inputs, train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )


def _variables(state_params, batch_stats):
    return {"params": state_params, **({"batch_stats": batch_stats} if batch_stats else {})}


def make_train_step(model, method, method_cfg, stats, tx, compute_dtype, schedule=None, input_fn=None):
    """A pure (state, batch, rng) -> (state, metrics) function; jit it with donated state.

    metrics: loss, gradient global norm, the learning rate used (when ``schedule`` is given) and
    the method's auxiliary values.  ``input_fn(batch, rng)``, when given, makes the model inputs from
    the batch inside the step (the device-resident pipeline: gather + augment, keyed by ``rng`` and
    each example's stream position); otherwise they are ``batch["inputs"]``."""

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        keys = jax.random.split(jax.random.fold_in(rng, state.step), len(RNG_STREAMS))
        rngs = dict(zip(RNG_STREAMS, keys))
        inputs = batch["inputs"] if input_fn is None else input_fn(batch, rng)
        if jnp.issubdtype(inputs.dtype, jnp.floating):
            inputs = inputs.astype(compute_dtype)

        def loss_fn(params):
            outputs, updates = model.apply(
                _variables(params, state.batch_stats), inputs, train=True, rngs=rngs, mutable=["batch_stats"]
            )
            loss, aux = method.loss(outputs, batch, stats, method_cfg)
            return loss, (aux, updates)

        (loss, (aux, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, param_updates),
            batch_stats=updates.get("batch_stats", state.batch_stats),
            opt_state=opt_state,
        )
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        if schedule is not None:
            metrics["lr"] = schedule(state.step)
        return new_state, metrics

    return train_step


def make_eval_step(model, method, compute_dtype):
    """(params, batch_stats, inputs) -> scores [B, C] float32, no randomness, no state change."""

    def eval_step(params, batch_stats, inputs):
        if jnp.issubdtype(inputs.dtype, jnp.floating):
            inputs = inputs.astype(compute_dtype)
        outputs = model.apply(_variables(params, batch_stats), inputs, train=False)
        return method.scores(outputs).astype(jnp.float32)

    return eval_step
