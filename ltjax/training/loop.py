"""The training loop: dataset -> model -> sharded jitted steps -> checkpoints -> evaluation.

``train_and_evaluate(config, workdir)`` resumes automatically from the latest checkpoint in
``workdir``.  Everything a step depends on (parameters, optimizer state, step, PRNG key, the grain
iterator position, the pending log window) is in the checkpoint, so a run killed at any moment and
started again with the same command ends with the same parameters and metrics as one that was not.
"""
from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import losses
from ltjax.data import build_dataset
from ltjax.data.pipeline import eval_batches, eval_index_batches, to_global, train_dataset, train_index_dataset
from ltjax.data.sampling import make_sampler
from ltjax.methods import METHODS
from ltjax.training import devices
from ltjax.training.checkpoint import Checkpointer
from ltjax.training.logs import RunLog
from ltjax.training.optim import learning_rate_schedule, make_optimizer
from ltjax.training.step import init_state, make_eval_step, make_train_step
from ltjax.errors import NonFiniteLossError  # noqa: F401 (re-exported)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config):
    try:
        return _DTYPES[config.train.compute_dtype]
    except KeyError:
        raise ValueError(
            f"train.compute_dtype must be one of {sorted(_DTYPES)}, got {config.train.compute_dtype!r}"
        ) from None


class Experiment:
    """Everything built from a config that training and evaluation share."""

    def __init__(self, config, dataset=None):
        self.config = config
        self.dataset = dataset if dataset is not None else build_dataset(config.data)
        self.meta = self.dataset.meta
        self.method = METHODS.get(config.method.name)
        self.dtype = compute_dtype(config)
        self.mesh = devices.make_mesh(config.mesh)
        self.model = self.method.build_model(config, self.meta, self.dtype)
        self.stats = losses.ClassStats.from_meta(self.meta)
        self.replicated = devices.replicated(self.mesh)
        self.device_data = None
        if bool(config.data.get("on_device", False)):  # the split on the devices, augmented in the step
            from ltjax.data.on_device import DeviceData

            self.device_data = DeviceData(self.dataset, config.data, self.replicated)
        train = self.dataset.split("train")
        self.sampler = make_sampler(config.data, train.labels, seed=config.seed)
        batch = int(config.data.batch_size)
        if batch % self.mesh.shape["data"]:
            raise ValueError(
                f"data.batch_size={batch} must be divisible by the data-parallel mesh axis "
                f"({self.mesh.shape['data']} devices)"
            )
        self.steps_per_epoch = int(config.train.steps_per_epoch) or math.ceil(self.sampler.epoch_length / batch)
        self.total_steps = int(config.train.num_epochs) * self.steps_per_epoch
        self.schedule = learning_rate_schedule(config.optimizer, config.schedule, self.steps_per_epoch, self.total_steps)
        example = np.zeros((1, *self.meta.input_shape), self.meta.input_dtype)
        rng = jax.random.key(int(config.seed))
        self.init_rng, self.train_rng = jax.random.split(rng)

        def abstract_params():
            return self.model.init({"params": self.init_rng, "dropout": self.init_rng}, example, train=False)["params"]

        mask = self.method.trainable_mask(config, jax.eval_shape(abstract_params))
        self.tx = make_optimizer(config.optimizer, self.schedule, mask)
        init = lambda key: init_state(self.model, self.tx, key, example)  # noqa: E731
        shapes = jax.eval_shape(init, self.init_rng)
        self.state_shardings = devices.state_shardings(shapes, self.mesh, bool(config.mesh.shard_params))
        self.abstract_state = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.state_shardings
        )
        self._init = jax.jit(init, out_shardings=self.state_shardings)
        self.batch_sharding = devices.batch_sharding(self.mesh)
        dd = self.device_data
        step = make_train_step(
            self.model, self.method, config.method, self.stats, self.tx, self.dtype, self.schedule,
            input_fn=None if dd is None else dd.batch_inputs,
        )
        batch_shardings = self.batch_sharding
        if dd is not None:  # the store is replicated; the per-example entries are split over "data"
            batch_shardings = {"store": self.replicated, **{k: self.batch_sharding for k in dd.batch_keys()}}
        self.train_step = jax.jit(
            step,
            in_shardings=(self.state_shardings, batch_shardings, self.replicated),
            out_shardings=(self.state_shardings, self.replicated),
            donate_argnums=0,
        )
        eval_step = make_eval_step(self.model, self.method, self.dtype)
        self.eval_step = jax.jit(eval_step, out_shardings=self.batch_sharding)
        if dd is not None:
            self.eval_from_store = jax.jit(
                lambda params, batch_stats, store, index: eval_step(params, batch_stats, dd.eval_inputs(store, index)),
                out_shardings=self.batch_sharding,
            )

    def initial_state(self):
        """The freshly initialised train state; with ``model.pretrained`` the backbone holds those weights."""
        state = self._init(self.init_rng)
        state = self._run_init_hook(state)  # the model's own weights (MiniLM encoder, GloVe rows), if any
        path = self.config.model.get("pretrained", "")
        if not path:
            return state
        from ltjax.models.pretrained import load_pretrained

        host = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
        # resnet*: a torchvision state dict; other models use their registered loader (efficientnet_lite0
        # also accepts the keyword "imagenet", which fetches its weights through ltjax.assets)
        loaded = load_pretrained(self.config.model.name, host, os.path.expanduser(path))
        params = jax.device_put(loaded["params"], self.state_shardings.params)
        batch_stats = jax.device_put(loaded["batch_stats"], self.state_shardings.batch_stats)
        opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings.opt_state)(params)
        return state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state)

    def _run_init_hook(self, state):
        """``state`` with the variables the model's ``ModelSpec.init_hook`` returns (it gets the host copies
        and ``self.dataset``, e.g. for the text vocabulary); its numbers go to ``self.init_info``."""
        from ltjax.models import MODELS

        self.init_info = {}
        hook = MODELS.get(self.config.model.name).init_hook
        if hook is None:
            return state
        host = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
        result = hook(self.config.model, host, self.dataset)
        if result is None:
            return state
        loaded, self.init_info = result
        params = jax.device_put(loaded["params"], self.state_shardings.params)
        batch_stats = jax.device_put(loaded["batch_stats"], self.state_shardings.batch_stats)
        opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings.opt_state)(params)
        return state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state)

    def checkpoint_target(self):
        """The abstract pytree a checkpoint restores into (train state and PRNG key data)."""
        return {"train": self.abstract_state, "rng": np.asarray(jax.random.key_data(self.train_rng))}

    def restore(self, workdir: str, step: int | None = None):
        """(train state, step) from a workdir's checkpoint (the latest when step is None)."""
        ckpt = Checkpointer(workdir, 1, async_save=False)
        try:
            step = ckpt.latest_step() if step is None else int(step)
            if step is None:
                raise FileNotFoundError(
                    f"no checkpoint in {ckpt.directory}; train first: python -m ltjax.train --config ... "
                    f"--workdir {workdir}"
                )
            restored, _ = ckpt.restore(step, self.checkpoint_target())
        finally:
            ckpt.close()
        return restored["train"], step

    def global_batch(self, host_batch: dict) -> dict:
        """A process-local host batch from :meth:`train_iterator` -> the global batch ``train_step`` takes."""
        batch = to_global(host_batch, self.batch_sharding)
        if self.device_data is not None:
            batch["store"] = self.device_data.train_store
        return batch

    def train_iterator(self):
        train = self.dataset.split("train")
        if self.device_data is not None:
            ds = train_index_dataset(
                train.labels,
                self.sampler,
                int(self.config.data.batch_size),
                self.total_steps,
                extras=self.device_data.host_extras(),
                with_positions=self.device_data.uses_positions,
                read_threads=min(int(self.config.data.read_threads), 1),
                prefetch_batches=int(self.config.data.prefetch_batches),
            )
            return iter(ds)
        ds = train_dataset(
            train,
            self.sampler,
            int(self.config.data.batch_size),
            self.total_steps,
            transform=self.dataset.train_transform,
            seed=int(self.config.seed),
            num_workers=int(self.config.data.num_workers),
            read_threads=int(self.config.data.read_threads),
            prefetch_batches=int(self.config.data.prefetch_batches),
        )
        return iter(ds)

    def predict(self, params, batch_stats, split_name: str):
        """Scores and labels for a whole split, gathered on every process (numpy)."""
        from jax.experimental import multihost_utils

        split = self.dataset.split(split_name)
        eval_batch = int(self.config.data.eval_batch_size)
        if self.device_data is not None:
            store = self.device_data.eval_store(split_name)
            batches = eval_index_batches(len(split), eval_batch)
        else:
            batches = eval_batches(split, eval_batch, transform=self.dataset.eval_transform)
        scores, valid = [], []
        for batch in batches:
            if self.device_data is not None:
                g = to_global(batch, self.batch_sharding)
                s = self.eval_from_store(params, batch_stats, store, g["index"])
            else:
                g = to_global({"inputs": batch["inputs"], "valid": batch["valid"]}, self.batch_sharding)
                s = self.eval_step(params, batch_stats, g["inputs"])
            if jax.process_count() > 1:
                s, v = multihost_utils.process_allgather((s, g["valid"]), tiled=True)
            else:
                v = g["valid"]  # stays on the device: no host round trip per batch (fetched once below)
            scores.append(s)
            valid.append(v)
        scores, valid = jax.device_get((scores, valid))
        scores = np.concatenate([np.asarray(s) for s in scores])[np.concatenate([np.asarray(v) for v in valid]) > 0]
        return scores, np.asarray(split.labels)


def evaluate_and_report(exp: Experiment, params, batch_stats, workdir: str, step: int, log=None) -> dict:
    """Evaluate on config.eval.split; write eval.json, the per-class AP plot and print the table."""
    from ltjax import metrics, report

    cfg = exp.config
    scores, labels = exp.predict(params, batch_stats, cfg.eval.split)
    result = metrics.evaluate(
        scores,
        labels,
        exp.meta.groups,
        exp.meta.class_counts,
        exp.meta.class_names,
        threshold=float(cfg.eval.threshold),
        top_k=tuple(int(k) for k in cfg.eval.top_k),
    )
    result.update({"step": int(step), "split": cfg.eval.split, "dataset": exp.meta.name, "method": cfg.method.name})
    if "odir" in exp.meta.info.get("extra_metrics", ()):  # the ODIR-5K challenge scores (metrics.odir_scores)
        result["odir"] = metrics.odir_scores(labels, scores, threshold=float(cfg.eval.threshold))
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        tmp = os.path.join(workdir, "eval.json.tmp")
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, os.path.join(workdir, "eval.json"))
        report.plot_ap_vs_frequency(result, os.path.join(workdir, "ap_vs_frequency.png"))
        title = f"{cfg.method.name} on {exp.meta.name} ({cfg.eval.split} split, step {step})"
        print(report.format_table(result, title=title), flush=True)
        if "odir" in result:
            o = result["odir"]
            cells = ", ".join(f"{k} {'n/a' if o[k] is None else f'{o[k]:.4f}'}" for k in ("kappa", "f1", "auc", "final"))
            print(f"ODIR scores (threshold {o['threshold']:g}): {cells}", flush=True)
        if log is not None:
            scalars = {"mAP": result["mAP"]}
            scalars.update({f"mAP_{g}": v for g, v in result["group_mAP"].items() if v is not None})
            log.write(step, "eval", scalars, echo=False)
    return result


def train_and_evaluate(config, workdir: str, *, dataset=None) -> dict:
    os.makedirs(workdir, exist_ok=True)
    exp = Experiment(config, dataset)
    ckpt = Checkpointer(workdir, int(config.train.keep_checkpoints))
    rng = exp.train_rng
    rng_data = np.asarray(jax.random.key_data(rng))  # host numpy: saved once, not per device
    iterator = exp.train_iterator()
    loop = {"window": []}
    start = 0
    latest = ckpt.latest_step()
    if latest is None:
        state = exp.initial_state()
    else:
        restored, loop = ckpt.restore(latest, exp.checkpoint_target())
        state = restored["train"]
        if not np.array_equal(np.asarray(restored["rng"]), np.asarray(rng_data)):
            raise RuntimeError(
                f"the checkpoint in {ckpt.directory} was made with another seed; use a fresh --workdir "
                "or the original config.seed"
            )
        iterator.set_state(loop["data"])
        start = int(latest)
    log = RunLog(workdir, start, exp.total_steps, config.train.progress_bar)
    if not start and getattr(exp, "init_info", None):  # e.g. GloVe coverage of the vocabulary
        log.write(0, "init", exp.init_info)
    for line in exp.device_data.messages if exp.device_data is not None else ():
        log.message(line)
    if start:
        log.message(f"resumed from the checkpoint at step {start} in {ckpt.directory}")
    log_every = max(int(config.train.log_every), 1)
    ckpt_every = max(int(config.train.checkpoint_every), 1)
    spe = exp.steps_per_epoch
    eval_every = int(config.train.eval_every_epochs)

    def save(step):
        loop_state = {"data": iterator.get_state(), "window": window, "epoch": step // spe}
        ckpt.save(step, {"train": state, "rng": rng_data}, loop_state)

    window = list(loop.get("window", []))
    pending = None  # (step, metrics) of the step in flight: read one step late to keep dispatch async
    t_window = time.time()

    def check(step_metrics, step_number):
        loss = float(step_metrics["loss"])
        if not math.isfinite(loss):
            ckpt.wait()
            last = ckpt.latest_step()
            where = f"step {last} in {ckpt.directory}" if last is not None else "none (no checkpoint was written)"
            raise NonFiniteLossError(
                f"non-finite loss ({loss}) at step {step_number}; the run stopped. Last good checkpoint: {where}. "
                "Lower optimizer.lr, enable optimizer.grad_clip_norm, or check the inputs for NaN/inf."
            )
        return loss, float(step_metrics["lr"])

    step = start
    try:
        while step < exp.total_steps:
            batch = exp.global_batch(next(iterator))
            state, step_metrics = exp.train_step(state, batch, rng)
            step += 1
            if pending is not None:
                loss, lr = check(*pending)
                window.append(loss)
            pending = (step_metrics, step)
            boundary = step % log_every == 0 or step % ckpt_every == 0 or step % spe == 0 or step == exp.total_steps
            if boundary:  # drain the in-flight step so the window and checkpoint agree
                loss, lr = check(*pending)
                window.append(loss)
                pending = None
            log.advance(1, loss=window[-1] if window else float("nan"))
            if step % log_every == 0 or step == exp.total_steps:
                elapsed = time.time() - t_window
                n = len(window)
                log.write(
                    step,
                    "train",
                    {
                        "loss": float(np.mean(window)) if window else float("nan"),
                        "lr": lr,
                        "epoch": (step - 1) // spe + 1,
                        "examples_per_s": n * int(config.data.batch_size) / max(elapsed, 1e-9),
                    },
                    echo=not log.has_progress_bar,
                )
                window, t_window = [], time.time()
            if step % ckpt_every == 0 or step % spe == 0 or step == exp.total_steps:
                save(step)
            if eval_every and step % (eval_every * spe) == 0 and step < exp.total_steps:
                evaluate_and_report(exp, state.params, state.batch_stats, workdir, step, log)
        ckpt.wait()
        result = evaluate_and_report(exp, state.params, state.batch_stats, workdir, step, log)
    finally:
        ckpt.close()
        log.close()
        if hasattr(iterator, "close"):  # stops grain worker processes and frees their shared memory
            iterator.close()
    return result
