"""Compare methods over seeds against a baseline: mean +- std, paired-bootstrap confidence intervals of the
mAP difference (overall and per group), and per-class AP against training frequency on one figure.

    python scripts/compare.py RUN_OR_METHOD_DIR... --baseline NAME [--names A B ...] [--reps 1000]
        [--seed 0] [--level 0.95] [--out DIR]

Each argument is a run folder (with ``eval.json``) or a method folder of ``seed_*`` runs as
``scripts/run_table.py`` writes them; a method's name is its folder's name unless ``--names`` gives them.
Scores come from each run's ``scores.npz`` (written by every evaluation; for older runs they are computed
once from the checkpoint, as ``ltjax.evaluate`` does, and saved).  Writes ``compare.md``, ``compare.json``
and ``ap_vs_frequency.png`` to ``--out`` (default: the first argument's parent folder) and prints the table.
The statistics: ``ltjax/compare.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from ltjax import compare

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", help="run folders or method folders of seed_* runs")
    ap.add_argument("--baseline", required=True, help="the method every other is compared with")
    ap.add_argument("--names", nargs="*", default=None, help="a name per folder (default: the folder names)")
    ap.add_argument("--reps", type=int, default=1000, help="bootstrap resamples of the test examples")
    ap.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    ap.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    ap.add_argument("--out", default=None, help="folder for compare.md / .json / ap_vs_frequency.png")
    args = ap.parse_args(argv)
    if args.names is not None and len(args.names) != len(args.dirs):
        ap.error(f"--names gives {len(args.names)} names for {len(args.dirs)} folders")
    names = args.names or [None] * len(args.dirs)
    methods = [compare.load_method(d, n) for d, n in zip(args.dirs, names)]
    result = compare.compare(methods, args.baseline, reps=args.reps, seed=args.seed, level=args.level)
    out = args.out or os.path.dirname(os.path.abspath(os.path.normpath(args.dirs[0])))
    os.makedirs(out, exist_ok=True)
    text = compare.markdown(result)
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump(result, f, indent=2)
    compare.plot_ap_vs_frequency(methods, os.path.join(out, "ap_vs_frequency.png"))
    print(text)
    print(f"wrote {os.path.join(out, 'compare.md')}, compare.json and ap_vs_frequency.png")
    return 0


if __name__ == "__main__":
    from ltjax.config import run_cli

    sys.exit(run_cli(main))
