"""Shared helpers for the tests: small configs and running the CLIs in subprocesses."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def small_synthetic_config(**overrides):
    """A seconds-long BCE run on a small synthetic_lt problem (unlocked ConfigDict)."""
    from ltjax.defaults import experiment_config

    c = experiment_config("synthetic_lt", "mlp", "bce")
    c.data.num_train = 512
    c.data.num_test = 256
    c.data.num_classes = 12
    c.data.num_features = 16
    c.data.min_prevalence = 0.02
    c.data.groups.mode = "quantile"
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.model.hidden = (32,)
    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-2
    c.schedule.name = "cosine"
    c.schedule.warmup_steps = 5
    c.train.num_epochs = 2
    c.train.log_every = 4
    c.train.checkpoint_every = 8
    c.train.progress_bar = "off"
    for path, value in overrides.items():
        node = c
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return c


def run_module(module: str, *args: str, env: dict | None = None, timeout: float = 300, **popen):
    """Run ``python -m module args`` from the repo root; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )
