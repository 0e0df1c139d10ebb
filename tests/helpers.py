"""Shared helpers for the tests: small configs and running the CLIs in subprocesses."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def set_fields(c, overrides: dict):
    """``c`` with each dotted path of ``overrides`` (``"data.batch_size": 8``) set; returns ``c``."""
    for path, value in overrides.items():
        node = c
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return c


def small_synthetic_config(**overrides):
    """tests/configs/tiny_synthetic.py (a seconds-long BCE run), unlocked, with dotted-path overrides."""
    from ltjax.config import load_config

    c = load_config(str(REPO / "tests" / "configs" / "tiny_synthetic.py"))
    c.unlock()
    return set_fields(c, overrides)


def train_steps(exp, n):
    """``n`` train steps of an Experiment from its initial state: ``(host state, [loss per step])``."""
    import jax

    state = exp.initial_state()
    it = exp.train_iterator()
    losses = []
    for _ in range(n):
        state, m = exp.train_step(state, exp.global_batch(next(it)), exp.train_rng)
        losses.append(float(m["loss"]))
    return jax.device_get(state), losses


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


def import_script(name: str):
    """The module ``scripts/NAME.py`` (scripts import their siblings, so scripts/ is on the path meanwhile)."""
    import importlib

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "scripts"))


def train_and_kill(args, workdir: str, min_step: int, timeout: float = 240) -> None:
    """Start ``python -m ltjax.train ARGS --workdir WORKDIR`` and SIGKILL it as soon as a checkpoint of step >=
    ``min_step`` exists (a kill -9 mid-run; the checkpoints are saved in the background); asserts it had not
    finished."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "ltjax.train", *args, "--workdir", workdir], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = os.path.join(workdir, "checkpoints")
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [int(d) for d in os.listdir(ckpts) if d.isdigit()] if os.path.isdir(ckpts) else []
        if steps and max(steps) >= min_step:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(workdir, "eval.json")), "the run finished before it could be killed"


def kill_and_resume(args, tmp_path, min_step: int):
    """``python -m ltjax.train ARGS`` run once uninterrupted (``tmp_path/ref``) and once killed with SIGKILL at
    the first checkpoint of step >= ``min_step`` then started again (``tmp_path/killed``); returns
    ``(ref, killed, the step the second start resumed from)``."""
    import re

    ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
    r = run_module("ltjax.train", *args, "--workdir", ref)
    assert r.returncode == 0, r.stderr
    train_and_kill(args, killed, min_step)
    r = run_module("ltjax.train", *args, "--workdir", killed)
    assert r.returncode == 0, r.stderr
    return ref, killed, int(re.search(r"resumed from the checkpoint at step (\d+)", r.stdout).group(1))


def assert_same_final_states(ref: str, killed: str) -> None:
    """The latest checkpoints of two runs hold bit-identical parameters and method state."""
    import chex
    import jax

    from ltjax.config import load_saved_config
    from ltjax.training.experiment import Experiment

    exp = Experiment(load_saved_config(ref))
    sa, sb = exp.restore(ref)[0], exp.restore(killed)[0]
    chex.assert_trees_all_equal(jax.device_get(sa.params), jax.device_get(sb.params))
    chex.assert_trees_all_equal(jax.device_get(sa.method_state), jax.device_get(sb.method_state))
