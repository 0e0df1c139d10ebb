"""Checkpoint selection on a validation split: ``train.select_on = "SPLIT:METRIC"`` (e.g. ``"val:mAP"``).

At every ``train.select_every_epochs``-th epoch end of every training phase and at the end of each training
phase, the run scores SPLIT (never ``eval.split``, the split that is reported) with the weights that would
be reported (EMA where ``eval.use_ema`` picks them) and reads METRIC from the evaluation report; higher is
better.  METRIC: ``mAP``, ``mAP_<group>`` (``mAP_head``, ...), ``auc_macro`` (alias ``AUC``), ``mACC``,
``micro_f1``, ``macro_f1``, ``P@k``, ``nDCG@k``, and on ODIR-5K ``odir_final`` (the challenge's final score).  A strictly better value (ties keep the earlier
checkpoint) writes the weights (parameters, BatchNorm statistics, method state, EMA) to ``WORKDIR/best``;
the final report scores ``eval.split`` with the best weights and ``eval.json`` says which step was chosen,
its value and every candidate's value (``"selection"``).

Exact resume: the selection record (history, best step and value) is part of the loop state of every
checkpoint, and a best checkpoint is written before the training checkpoint of the same step records it
(synchronously), so a run killed anywhere re-reaches the same candidates with the same record.  ``best``
keeps its two newest steps: the one the last training checkpoint names is always among them.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from ltjax.errors import CheckpointError, ConfigError
from ltjax.training.checkpoint import inspect_step, seal

ALIASES = {"AUC": "auc_macro", "auc": "auc_macro"}
TOP_LEVEL = ("mAP", "auc_macro", "mACC", "micro_f1", "macro_f1")


def parse_select_on(spec: str, eval_split: str, splits, group_names, top_k, extra=()) -> tuple[str, str] | None:
    """``"SPLIT:METRIC"`` -> (split, metric key), or None for ``""`` (keep the last checkpoint); a
    :class:`ConfigError` naming the valid choices for anything else."""
    spec = str(spec or "").strip()
    if not spec:
        return None
    valid = [*TOP_LEVEL, *[f"mAP_{g}" for g in group_names], *[f"P@{k}" for k in top_k],
             *[f"nDCG@{k}" for k in top_k], *extra]
    if ":" not in spec:
        raise ConfigError(f"train.select_on={spec!r} must read SPLIT:METRIC, e.g. 'val:mAP'; metrics: {', '.join(valid)}")
    split, metric = (s.strip() for s in spec.split(":", 1))
    metric = ALIASES.get(metric, metric)
    if split == eval_split:
        raise ConfigError(
            f"train.select_on={spec!r} selects on {split!r}, the split that is reported (eval.split); the "
            "reported split is never used for selection: select on a validation split, e.g. 'val:mAP'"
        )
    if split not in splits:
        raise ConfigError(
            f"train.select_on={spec!r}: the dataset has no {split!r} split (it has {', '.join(sorted(splits))}); "
            "give it a validation split (data.val_fraction for custom and chestxray14, data.split='patient' "
            "for the medical datasets, data.num_val for synthetic_lt) or leave train.select_on empty"
        )
    if metric not in valid:
        raise ConfigError(f"train.select_on={spec!r}: unknown metric {metric!r}; choose one of: {', '.join(valid)}")
    return split, metric


def metric_value(result: dict, metric: str) -> float:
    """METRIC from an evaluation report (``ltjax.metrics.evaluate``); None/NaN -> -inf (never selected)."""
    if metric.startswith("mAP_"):
        value = result["group_mAP"].get(metric[4:])
    elif metric == "odir_final":
        value = result["odir"]["final"]
    else:
        value = result.get(metric)
    if value is None or not math.isfinite(float(value)):
        return -math.inf
    return float(value)


def new_record(split: str, metric: str) -> dict:
    return {"split": split, "metric": metric, "best_step": None, "best_value": None, "history": []}


def consider(record: dict, step: int, value: float) -> bool:
    """Add a candidate to the record; True when it is the new best (strictly better)."""
    record["history"].append([int(step), float(value)])
    best = record["best_value"]
    if best is None or value > best:
        record["best_step"], record["best_value"] = int(step), float(value)
        return True
    return False


class BestWeights:
    """``WORKDIR/best``: the selected weights, one orbax step directory per improvement (two kept)."""

    def __init__(self, workdir: str):
        self.directory = os.path.join(os.path.abspath(workdir), "best")
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    @staticmethod
    def weights_of(state) -> dict:
        return {"params": state.params, "batch_stats": state.batch_stats, "method_state": state.method_state,
                "ema": state.ema}

    def save(self, step: int, state) -> None:
        if int(step) in self.manager.all_steps():  # a resumed run re-reached it: the same weights
            return
        self.manager.save(int(step), args=ocp.args.StandardSave(self.weights_of(state)), force=True)
        self.manager.wait_until_finished()
        if jax.process_index() == 0:
            seal(os.path.join(self.directory, str(int(step))))  # checked on restore (ltjax.training.checkpoint)

    def restore(self, step: int, abstract_state) -> dict:
        if int(step) not in self.manager.all_steps():
            raise FileNotFoundError(
                f"the selected checkpoint (step {step}) is missing from {self.directory}; it holds "
                f"{sorted(self.manager.all_steps())}. Evaluate a step of the run with --step N instead"
            )
        status, reason = inspect_step(os.path.join(self.directory, str(int(step))))
        if status == "damaged":
            raise CheckpointError(
                f"the selected weights (step {step}) in {self.directory} are damaged: {reason}. Evaluate a step "
                "of the run with --step N instead (the steps are the folder names under WORKDIR/checkpoints)")
        return self.manager.restore(int(step), args=ocp.args.StandardRestore(self.weights_of(abstract_state)))

    def close(self) -> None:
        self.manager.close()


def write_record(workdir: str, record: dict) -> None:
    path = os.path.join(workdir, "selection.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
    os.replace(path + ".tmp", path)


def read_record(workdir: str) -> dict[str, Any] | None:
    path = os.path.join(workdir, "selection.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
