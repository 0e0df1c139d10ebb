"""Train and evaluate one config over several seeds and print the mean +- std group-mAP table.

  python scripts/run_seeds.py --config configs/bce_yeast.py --seeds 0 1 2 --workdir runs/bce_yeast_seeds \
      [--config.train.num_epochs=20 ...]

Each seed runs ``python -m ltjax.train --config CONFIG:SEED --workdir WORKDIR/seed_SEED`` (so the
config's get_config must take the seed as its argument, as configs/bce_yeast.py does), resuming
finished or interrupted seeds.  Writes WORKDIR/summary.md and WORKDIR/summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="configs/NAME.py whose get_config(arg) takes the seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workdir", required=True)
    args, overrides = p.parse_known_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from ltjax.report import format_summary_table, summarize_runs

    reports, walls = [], []
    for seed in args.seeds:
        workdir = os.path.join(args.workdir, f"seed_{seed}")
        cmd = [sys.executable, "-m", "ltjax.train", "--config", f"{args.config}:{seed}", "--workdir", workdir]
        cmd += [*overrides, "--config.train.progress_bar=off"]
        print("$", " ".join(cmd), flush=True)
        t = time.time()
        subprocess.run(cmd, check=True)
        walls.append(time.time() - t)
        with open(os.path.join(workdir, "eval.json")) as f:
            reports.append(json.load(f))
    summary = summarize_runs(reports)
    title = f"{reports[0]['method']} on {reports[0]['dataset']}, seeds {', '.join(map(str, args.seeds))}"
    table = format_summary_table(summary, title=title)
    print(table)
    os.makedirs(args.workdir, exist_ok=True)
    command = " ".join(["python scripts/run_seeds.py", "--config", args.config, "--seeds",
                        *map(str, args.seeds), "--workdir", args.workdir, *overrides])
    with open(os.path.join(args.workdir, "summary.md"), "w") as f:
        f.write(f"{table}\n\nCommand: `{command}`\n")
    with open(os.path.join(args.workdir, "summary.json"), "w") as f:
        json.dump({"command": command, "seeds": args.seeds, "wall_s": walls, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
