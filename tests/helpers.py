"""Shared helpers for the tests: small configs and running the CLIs in subprocesses."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def small_synthetic_config(**overrides):
    """tests/configs/tiny_synthetic.py (a seconds-long BCE run), unlocked, with dotted-path overrides."""
    from ltjax.config import load_config

    c = load_config(str(REPO / "tests" / "configs" / "tiny_synthetic.py"))
    c.unlock()
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
