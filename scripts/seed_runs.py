"""Shared by the multi-run scripts (run_table.py, ablate_*.py): one training run as a subprocess, the
"mean ± std" table cell of a summarize_runs statistic, and printing + writing a table with its JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def train_and_read_eval(spec: str, workdir: str, seed: int, overrides) -> dict:
    """``python -m ltjax.train --config SPEC --workdir WORKDIR --config.seed=SEED [overrides]`` (resuming a
    finished or interrupted run), then its eval.json."""
    cmd = [sys.executable, "-m", "ltjax.train", "--config", spec, "--workdir", workdir, f"--config.seed={seed}",
           *overrides, "--config.train.progress_bar=off"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(workdir, "eval.json")) as f:
        return json.load(f)


def format_cell(stat) -> str:
    """A {"mean", "std"} statistic (fractions) as "mean ± std" in percent; "n/a" when undefined."""
    if stat is None or stat["mean"] is None:
        return "n/a"
    return f"{100 * stat['mean']:.2f}" + ("" if stat["std"] is None else f" ± {100 * stat['std']:.2f}")


def write_table(workdir: str, stem: str, table: str, payload: dict) -> None:
    """Print the Markdown ``table`` and write it to WORKDIR/STEM.md, ``payload`` to WORKDIR/STEM.json."""
    print(table)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, f"{stem}.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(workdir, f"{stem}.json"), "w") as f:
        json.dump(payload, f, indent=2)
