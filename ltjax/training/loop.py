"""The training loop: a method's phases in order -> sharded jitted steps and passes -> checkpoints -> evaluation.

``train_and_evaluate(config, workdir)`` resumes automatically from the latest checkpoint in ``workdir``.
Everything a step depends on (parameters, optimizer state, method state, EMA, step, PRNG key, the phase and
the position in it, every stream's grain iterator, the pending log window) is in the checkpoint, so a run
killed at any moment and started again with the same command ends with the same parameters and metrics as
one that was not.  Every phase boundary is a checkpoint; a pass phase is repeated from the boundary before
it when a run was killed inside it (passes are deterministic).

``phases.json`` in the workdir lists the resolved phases (names, kinds, first step, steps, epochs,
samplers); for methods with more than one phase ``metrics.jsonl`` names the phase on every record; TensorBoard tags are ``train/<name>`` for a
single-phase method and ``train/<phase>/<name>`` otherwise; the progress bar shows the phase.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time

import jax
import numpy as np

from ltjax.data import partial, snapshot
from ltjax.errors import NonFiniteLossError, RunInterrupted
from ltjax.training import selection
from ltjax.training.checkpoint import Checkpointer
from ltjax.training.experiment import Experiment, compute_dtype  # noqa: F401 (re-exported)
from ltjax.training.logs import RunLog
from ltjax.training.phases import describe


SCORES_FILE = "scores.npz"  # the evaluated split's per-example scores, next to eval.json (scripts/compare.py)


def _eval_result(exp: Experiment, params, batch_stats, method_state, step: int, split: str | None = None,
                 keep=None, threshold=None) -> dict:
    """The evaluation report of ``split``; ``keep`` (a dict) receives its ``scores`` and ``labels``;
    ``threshold``: per-class thresholds [C] (default: ``eval.threshold``)."""
    from ltjax import metrics

    cfg = exp.config
    split = split or cfg.eval.split
    threshold = float(cfg.eval.threshold) if threshold is None else threshold
    scores, labels = exp.predict(params, batch_stats, split, method_state)
    if keep is not None:
        keep.update(scores=scores, labels=labels)
    result = metrics.evaluate(
        scores,
        labels,
        exp.meta.groups,
        exp.meta.class_counts,
        exp.meta.class_names,
        threshold=threshold,
        top_k=tuple(int(k) for k in cfg.eval.top_k),
    )
    result.update({"step": int(step), "split": split, "dataset": exp.meta.name, "method": cfg.method.name})
    if "odir" in exp.meta.info.get("extra_metrics", ()):  # the ODIR-5K challenge scores (metrics.odir_scores)
        result["odir"] = metrics.odir_scores(labels, scores, threshold=threshold)
    return result


def write_scores(path: str, scores, labels, class_names, *, split: str, step: int) -> None:
    """``scores.npz``: float32 scores [N, C], uint8 labels [N, C] (the evaluated split, dataset order),
    the class names, the split and the step (written atomically)."""
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, scores=np.asarray(scores, np.float32), labels=np.asarray(labels, np.uint8),
                        class_names=np.asarray(list(class_names)), split=np.asarray(split), step=np.asarray(int(step)))
    os.replace(tmp, path)


def _write_json(path: str, value) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


def _reported_weights(exp: Experiment, state):
    """(the parameters the report uses, whether they are the EMA, whether the run keeps an EMA)."""
    has_ema = bool(jax.tree.leaves(state.ema))
    use_ema = has_ema and bool(exp.config.eval.get("use_ema", True))
    return (state.ema if use_ema else state.params), use_ema, has_ema


def evaluate_and_report(exp: Experiment, state, workdir: str, step: int, log=None, selection=None) -> dict:
    """Evaluate on config.eval.split; write eval.json, the per-class AP plot and print the table.

    With an EMA of the parameters (``train.ema_decay`` > 0) both weights are evaluated: the top level of
    eval.json holds the ones ``eval.use_ema`` selects (``"weights": "ema"`` or ``"raw"``) and the key
    ``"raw"`` / ``"ema"`` the other.  ``selection``: the record of ``train.select_on``
    (:mod:`ltjax.training.selection`); ``state`` then holds the selected weights and ``step`` their step."""
    from ltjax import report

    cfg = exp.config
    from ltjax import thresholds

    main, use_ema, has_ema = _reported_weights(exp, state)
    mode = str(cfg.eval.get("thresholds", "fixed"))
    tuned = None
    if mode != "fixed":  # tuned on the validation split with the reported weights; eval.split never used
        val_scores, val_labels = exp.predict(main, state.batch_stats, "val", state.method_state)
        tuned = thresholds.tune(val_scores, val_labels, mode, float(cfg.eval.threshold))
        if jax.process_index() == 0:
            os.makedirs(workdir, exist_ok=True)
            thresholds.save(workdir, tuned, mode, exp.meta.class_names, step)
    kept = {}
    result = _eval_result(exp, main, state.batch_stats, state.method_state, step, keep=kept, threshold=tuned)
    if tuned is not None:
        result["thresholds"] = {"mode": mode, "split": "val", "file": thresholds.FILE}
    if selection is not None:
        result["selection"] = dict(selection)
    if exp.method.summary is not None and jax.tree.leaves(state.method_state):
        result["method_summary"] = exp.method.summary(jax.device_get(state.method_state), result)
    if "partial_labels" in exp.meta.info:  # data.missing_ratio > 0 (ltjax/data/partial.py)
        result["partial_labels"] = dict(exp.meta.info["partial_labels"])
    if has_ema:
        result["weights"] = "ema" if use_ema else "raw"
        other = state.params if use_ema else state.ema
        result["raw" if use_ema else "ema"] = _eval_result(exp, other, state.batch_stats, state.method_state, step,
                                                           threshold=tuned)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        _write_json(os.path.join(workdir, "eval.json"), result)
        write_scores(os.path.join(workdir, SCORES_FILE), kept["scores"], kept["labels"], exp.meta.class_names,
                     split=str(cfg.eval.split), step=step)
        report.plot_ap_vs_frequency(result, os.path.join(workdir, "ap_vs_frequency.png"))
        weights = f", {result['weights']} weights" if has_ema else ""
        title = f"{cfg.method.name} on {exp.meta.name} ({cfg.eval.split} split, step {step}{weights})"
        print(report.format_table(result, title=title), flush=True)
        if selection is not None:
            print(f"checkpoint: step {selection['best_step']}, the best {selection['split']} "
                  f"{selection['metric']} ({selection['best_value']:.4f}) of {len(selection['history'])} "
                  f"candidates (train.select_on; {cfg.eval.split} was never used to choose)", flush=True)
        if "partial_labels" in result:
            p = result["partial_labels"]
            print(f"partial labels: {p['hidden']} of {p['positives']} training positives hidden "
                  f"(data.missing_ratio {p['missing_ratio']:g}, data.missing_seed {p['missing_seed']}); "
                  f"{p['groups']}", flush=True)
        if has_ema:
            o = result["raw" if use_ema else "ema"]
            print(f"({'raw' if use_ema else 'EMA'} weights: mAP {100 * o['mAP']:.2f})", flush=True)
        if "odir" in result:
            o = result["odir"]
            cells = ", ".join(f"{k} {'n/a' if o[k] is None else f'{o[k]:.4f}'}" for k in ("kappa", "f1", "auc", "final"))
            print(f"ODIR scores (threshold {o['threshold']:g}): {cells}", flush=True)
        if log is not None:
            scalars = {"mAP": result["mAP"]}
            scalars.update({f"mAP_{g}": v for g, v in result["group_mAP"].items() if v is not None})
            log.write(step, "eval", scalars, echo=False)
    return result


class _Run:
    """One call of :func:`train_and_evaluate`: the loop over phases with its checkpoint and log."""

    def __init__(self, exp: Experiment, workdir: str, ckpt: Checkpointer):
        self.exp, self.workdir, self.ckpt = exp, workdir, ckpt
        cfg = exp.config
        self.rng = exp.train_rng
        self.rng_data = np.asarray(jax.random.key_data(self.rng))  # host numpy: saved once, not per device
        self.log_every = max(int(cfg.train.log_every), 1)
        self.ckpt_every = max(int(cfg.train.checkpoint_every), 1)
        self.eval_every = int(cfg.train.eval_every_epochs)
        self.multi = len(exp.phases) > 1
        self.log = None
        self.select_every = max(int(cfg.train.get("select_every_epochs", 1)), 1)
        self.selection = None if exp.select is None else selection.new_record(*exp.select)
        self.best = None if exp.select is None else selection.BestWeights(workdir)
        self.on_start = lambda: None  # called once the state (fresh or restored) is ready
        self.fresh_start = False
        self.interrupted = False  # set by Ctrl-C (SIGINT) during a training phase
        self.in_train_phase = False

    def save(self, state, step: int, phase: int, phase_step: int, iterators: dict, window: list):
        loop_state = {
            "phase": phase, "phase_step": phase_step, "data": {s: it.get_state() for s, it in iterators.items()},
            # a copy: the background save must not see losses appended after this step
            "window": list(window), "epoch": phase_step // max(self.exp.phases[phase].steps_per_epoch, 1),
        }
        if self.selection is not None:
            loop_state["selection"] = json.loads(json.dumps(self.selection))  # a copy, as for the window
        self.ckpt.save(step, {"train": state, "rng": self.rng_data}, loop_state)

    def check(self, step_metrics, step_number):
        loss = float(step_metrics["loss"])
        if not math.isfinite(loss):
            self.ckpt.wait()
            last = self.ckpt.latest_step()
            where = f"step {last} in {self.ckpt.directory}" if last is not None else "none (no checkpoint was written)"
            raise NonFiniteLossError(
                f"non-finite loss ({loss}) at step {step_number}; the run stopped. Last good checkpoint: {where}. "
                "Lower optimizer.lr, enable optimizer.grad_clip_norm, or check the inputs for NaN/inf."
            )
        return loss, float(step_metrics["lr"])

    def train_phase(self, state, index: int, k0: int, loop: dict):
        exp, log, plan = self.exp, self.log, self.exp.phases[index]
        phase = plan.name if self.multi else None
        iterators = {s: exp.feed.train_stream(plan.samplers[s], plan.length, plan.tags[s]) for s in plan.streams}
        self.in_train_phase = True
        try:
            if k0:
                for s, it in iterators.items():
                    it.set_state(loop["data"][s])
            step_fn = exp.phase_step(index)
            spe = plan.steps_per_epoch
            window = list(loop.get("window", [])) if k0 else []
            pending = None  # (metrics, step) of the step in flight: read one step late to keep dispatch async
            t_window = time.time()
            lr = float("nan")
            for k in range(k0 + 1, plan.length + 1):
                batches = {s: exp.global_batch(next(it)) for s, it in iterators.items()}
                state, step_metrics = step_fn(state, batches, self.rng)
                step = plan.start + k
                if pending is not None:
                    loss, lr = self.check(*pending)
                    window.append(loss)
                pending = (step_metrics, step)
                last = k == plan.length
                boundary = step % self.log_every == 0 or step % self.ckpt_every == 0 or k % spe == 0 or last
                if boundary:  # drain the in-flight step so the window and checkpoint agree
                    loss, lr = self.check(*pending)
                    window.append(loss)
                    pending = None
                log.advance(1, loss=window[-1] if window else float("nan"))
                if step % self.log_every == 0 or last:
                    elapsed = time.time() - t_window
                    values = {
                        "loss": float(np.mean(window)) if window else float("nan"),
                        "lr": lr,
                        "epoch": (k - 1) // spe + 1,
                        "examples_per_s": len(window) * int(exp.config.data.batch_size) / max(elapsed, 1e-9),
                    }
                    log.write(step, "train", values, echo=not log.has_progress_bar, phase=phase)
                    window, t_window = [], time.time()
                if self.selection is not None and (k % (self.select_every * spe) == 0 or last):
                    self.select(state, step, phase)  # before the checkpoint that records it
                if step % self.ckpt_every == 0 or k % spe == 0 or last:
                    self.save(state, step, index, k, iterators, window)
                    if last:  # a phase boundary: committed before the next phase starts
                        self.ckpt.wait()
                if self.eval_every and k % (self.eval_every * spe) == 0 and step < exp.total_steps:
                    evaluate_and_report(exp, state, self.workdir, step, log)
                if self.interrupted:  # Ctrl-C: a checkpoint of this step, then stop
                    if pending is not None:
                        loss, lr = self.check(*pending)
                        window.append(loss)
                        pending = None
                    if not (step % self.ckpt_every == 0 or k % spe == 0 or last):
                        self.save(state, step, index, k, iterators, window)
                    self.ckpt.wait()
                    raise RunInterrupted(
                        f"interrupted (Ctrl-C) at step {step} of {exp.total_steps}; saved a checkpoint of step "
                        f"{step} in {self.ckpt.directory}. Run the same command again to resume from it")
        finally:
            self.in_train_phase = False
            for it in iterators.values():
                if hasattr(it, "close"):  # stops grain worker processes and frees their shared memory
                    it.close()
        return state

    def select(self, state, step: int, phase) -> None:
        """Score the selection split at this candidate; keep the weights when they are the best so far."""
        exp, (split, metric) = self.exp, self.exp.select
        weights, _, _ = _reported_weights(exp, state)
        value = selection.metric_value(
            _eval_result(exp, weights, state.batch_stats, state.method_state, step, split=split), metric)
        better = selection.consider(self.selection, step, value)
        if better:
            self.best.save(step, state)
        self.log.write(step, "select", {f"{split}_{metric}": value, "best": self.selection["best_value"],
                                        "best_step": self.selection["best_step"]},
                       echo=not self.log.has_progress_bar, phase=phase)

    def pass_phase(self, state, index: int):
        plan = self.exp.phases[index]
        t0 = time.time()
        state, info = self.exp.run_pass(index, state)
        info = {k: v for k, v in info.items() if isinstance(v, (int, float, np.floating, np.integer))}
        info["seconds"] = time.time() - t0
        self.log.advance(1)
        self.log.write(plan.end, "pass", info, echo=not self.log.has_progress_bar, phase=plan.name)
        self.save(state, plan.end, index, 1, {}, [])
        self.ckpt.wait()  # a phase boundary: committed before the next phase starts
        return state

    def _phases(self, state, index: int, k: int, loop: dict):
        """Run the phases from phase ``index``, step ``k`` in it; returns the final state."""
        exp, log = self.exp, self.log
        while index < len(exp.phases):
            plan = exp.phases[index]
            if k >= plan.length:  # the phase is complete: move on to the next one
                index, k = index + 1, 0
                if index < len(exp.phases):
                    state = exp.enter(index, state)
                continue
            if self.multi:
                log.set_phase(plan.name)
                log.message(f"phase {index + 1}/{len(exp.phases)}: {plan.name} ({plan.kind}, "
                            f"steps {plan.start + 1}..{plan.end})")
            if plan.kind == "train":
                state = self.train_phase(state, index, k, loop)
            else:
                state = self.pass_phase(state, index)
            k = plan.length
        return state

    @contextlib.contextmanager
    def _checkpoint_on_sigint(self):
        """The first Ctrl-C during a training phase asks the loop to checkpoint the current step and stop
        (:class:`RunInterrupted`); elsewhere, or a second Ctrl-C, interrupts at once.  Only in the main
        thread of a single-process run (a multi-process save needs every process: there, Ctrl-C stops at
        once and the run resumes from its last periodic checkpoint)."""
        if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
            yield
            return

        def handler(signum, frame):
            if self.in_train_phase and not self.interrupted:
                self.interrupted = True
                return
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def run(self) -> dict:
        exp, ckpt = self.exp, self.ckpt
        index, k = 0, 0
        latest, restored, loop = ckpt.restore_newest(exp.checkpoint_target_of)
        if latest is None:
            state = exp.initial_state()
        else:
            index, k = int(loop.get("phase", 0)), int(loop.get("phase_step", latest))
            state = restored["train"]
            if self.selection is not None and loop.get("selection") is not None:
                self.selection = loop["selection"]
            if not np.array_equal(np.asarray(restored["rng"]), np.asarray(self.rng_data)):
                raise RuntimeError(
                    f"the checkpoint in {ckpt.directory} was made with another seed; use a fresh --workdir "
                    "or the original config.seed"
                )
        start = 0 if latest is None else int(latest)
        self.on_start()  # config.json: the run exists from here on
        self.log = log = RunLog(self.workdir, start, exp.total_steps, exp.config.train.progress_bar)
        try:
            if self.fresh_start:
                log.message(f"note: the earlier run in {self.workdir} stopped before its first checkpoint; "
                            "this one starts afresh with its own config")
            if jax.process_index() == 0 and (not start or not os.path.exists(os.path.join(self.workdir, "phases.json"))):
                # (also for a run started from a copied checkpoint, e.g. scripts/ablate_ldrnet.py's branches)
                _write_json(os.path.join(self.workdir, "phases.json"), describe(exp.phases))
            if jax.process_index() == 0 and not os.path.exists(os.path.join(self.workdir, partial.HIDDEN_FILE)):
                partial.write_hidden(self.workdir, exp.dataset)  # the hidden training positives, if any
            if jax.process_index() == 0 and not snapshot.exists(self.workdir) and exp.frozen is None:
                snapshot.write(self.workdir, exp.dataset, exp.config.data)  # for predict without the data
            if not start:
                if getattr(exp, "init_info", None):  # e.g. GloVe coverage of the vocabulary
                    log.write(0, "init", exp.init_info)
            for line in exp.feed.messages:
                log.message(line)
            if getattr(exp, "frozen", None) is not None:
                log.message(exp.frozen.describe())
            if start:
                log.message(f"resumed from the checkpoint at step {start} in {ckpt.directory}")
            with self._checkpoint_on_sigint():
                state = self._phases(state, index, k, loop)
            ckpt.wait()
            if self.selection is None:
                return evaluate_and_report(exp, state, self.workdir, exp.total_steps, log)
            record = self.selection
            step = int(record["best_step"])
            if step != exp.total_steps:
                state = state.replace(**self.best.restore(step, exp._abstract(0)))
            if jax.process_index() == 0:
                selection.write_record(self.workdir, record)
            log.message(f"selected the checkpoint of step {step} (best {record['split']} {record['metric']} "
                        f"{record['best_value']:.4f} of {len(record['history'])} candidates)")
            return evaluate_and_report(exp, state, self.workdir, step, log, selection=record)
        finally:
            log.close()
            if self.best is not None:
                self.best.close()


def train_and_evaluate(config, workdir: str, *, dataset=None) -> dict:
    """Train ``config`` into ``workdir`` (resuming from its newest intact checkpoint) and evaluate.

    Holds the workdir's lock throughout (process 0; a second run into it stops at once), refuses a workdir
    that holds a run with another config, and writes ``config.json`` only once everything that can be
    checked before the first step has been (the dataset, the model, the state or the checkpoint to resume):
    a start that fails leaves the workdir free for the corrected command."""
    from ltjax.config import save_config
    from ltjax.training.workdir import WorkdirLock, check_same_run

    os.makedirs(workdir, exist_ok=True)
    lock = WorkdirLock(workdir)
    if jax.process_index() == 0:
        lock.acquire()
    try:
        fresh = check_same_run(config, workdir)
        exp = Experiment(config, dataset)
        ckpt = Checkpointer(workdir, int(config.train.keep_checkpoints))
        try:
            run = _Run(exp, workdir, ckpt)
            run.on_start = lambda: save_config(config, workdir) if jax.process_index() == 0 else None
            run.fresh_start = fresh
            return run.run()
        finally:
            ckpt.close()
    finally:
        lock.release()
