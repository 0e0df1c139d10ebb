"""Shared by the multi-run scripts (run_table.py, ablate_*.py): their common command-line part, one training
run as a subprocess, the "mean ± std" table cell of a summarize_runs statistic, and printing + writing a table
with its JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def parse_run_args(parser, argv=None, jobs: bool = True):
    """Add ``--seeds``, ``--workdir`` (and ``--jobs``) to ``parser``, parse ``argv``, and return ``(args,
    overrides)``: the ``--config.FIELD=VALUE`` arguments passed on to every ``ltjax.train`` (anything else is
    an error).  With several jobs the processes share an accelerator's memory (no XLA preallocation).  Puts
    the repository on ``sys.path`` (for ``ltjax.report``)."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workdir", required=True)
    if jobs:
        parser.add_argument("--jobs", type=int, default=1, help="training runs at a time (default 1)")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        parser.error(f"unknown arguments {bad}; only --config.FIELD=VALUE overrides are passed on to ltjax.train")
    if jobs and args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if jobs and args.jobs > 1 and not any(k in os.environ for k in ("XLA_PYTHON_CLIENT_PREALLOCATE",
                                                                    "XLA_PYTHON_CLIENT_MEM_FRACTION")):
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    return args, overrides


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
