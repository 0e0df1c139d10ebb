"""Run several method configs over S seeds on one dataset; write a Markdown table and a JSON file.

  python scripts/run_table.py --configs configs/yeast.py:bce configs/yeast.py:db_focal \
      --seeds 0 1 2 --workdir runs/yeast_table [--config.train.num_epochs=20 ...]

Each (config, seed) runs ``python -m ltjax.train --config CONFIG --workdir WORKDIR/<name>/seed_<S>
--config.seed=S [overrides]`` (finished or interrupted runs resume); ``--jobs N`` runs N of them at a time
(e.g. several small runs sharing one GPU: JAX's memory preallocation is then turned off, unless
XLA_PYTHON_CLIENT_PREALLOCATE / XLA_PYTHON_CLIENT_MEM_FRACTION are set), then the table gives per
config: mAP total / head / medium / tail as mean ± sample std over the seeds (percent), plus the
wall time; ``--metrics P@1 P@3 micro_f1`` adds columns for other scalar entries of eval.json.  Below
them, the calibration rows of ``ltjax/calibration.py`` (class frequency with its training BCE; colour
only, for image datasets) on the first run's dataset (``--no-calibration`` leaves them out).  With
``--baseline SPEC`` the table is followed by ``scripts/compare.py``'s: every method against that one, with
paired-bootstrap intervals of the mAP differences (WORKDIR/compare.md / .json, ap_vs_frequency.png).  Output:
WORKDIR/table.md and WORKDIR/table.json (every run's eval report included).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import statistics
import time

from seed_runs import format_cell as _cell, parse_run_args, train_and_read_eval, write_table


def _name(spec: str) -> str:
    path, _, arg = spec.partition(":")
    base = os.path.splitext(os.path.basename(path))[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{base}_{arg}" if arg else base)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", required=True, help="config specs, e.g. configs/yeast.py:db_focal")
    p.add_argument("--title", default="")
    p.add_argument("--no-calibration", action="store_true",
                   help="leave out the calibration rows (class frequency, colour only: ltjax/calibration.py)")
    p.add_argument("--metrics", nargs="*", default=[],
                   help="further scalar eval.json entries as columns (percent), e.g. P@1 P@3 micro_f1")
    p.add_argument("--baseline", default="",
                   help="a config spec of --configs: adds scripts/compare.py's table against it (paired-bootstrap "
                        "intervals of every mAP difference; WORKDIR/compare.md, compare.json, ap_vs_frequency.png)")
    p.add_argument("--reps", type=int, default=1000, help="bootstrap resamples for --baseline")
    args, overrides = parse_run_args(p, argv)
    if args.baseline and args.baseline not in args.configs:
        p.error(f"--baseline {args.baseline!r} is not one of --configs")
    from ltjax.report import summarize_runs

    def run(spec, seed):
        workdir = os.path.join(args.workdir, _name(spec), f"seed_{seed}")
        t = time.time()
        report = train_and_read_eval(spec, workdir, seed, overrides)
        return report, time.time() - t

    pairs = [(spec, seed) for spec in args.configs for seed in args.seeds]
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pair: pool.submit(run, *pair) for pair in pairs}
        done = {pair: f.result() for pair, f in futures.items()}  # raises the first failed run's error

    rows, runs = [], {}
    for spec in args.configs:
        name = _name(spec)
        reports = [done[(spec, seed)][0] for seed in args.seeds]
        walls = [done[(spec, seed)][1] for seed in args.seeds]
        summary = summarize_runs(reports)
        rows.append((name, reports[0], summary, walls))
        runs[name] = {"spec": spec, "wall_s": walls, "summary": summary, "reports": reports}

    first = rows[0][1]
    groups = list(first["group_sizes"])
    title = args.title or f"{first['dataset']} ({len(args.seeds)} seeds: {', '.join(map(str, args.seeds))})"
    extra = list(args.metrics)
    missing = [m for m in extra if not isinstance(first.get(m), (int, float))]
    if missing:
        p.error(f"--metrics {missing} are not scalar entries of eval.json; scalar entries: "
                f"{', '.join(k for k, v in first.items() if isinstance(v, (int, float)))}")
    header = ("| method | mAP total | " + " | ".join(f"{g} ({first['group_sizes'][g]})" for g in groups)
              + "".join(f" | {m}" for m in extra) + " | s/run |")
    lines = [f"**{title}**", "", header, "|" + "---|" * (len(groups) + 3 + len(extra))]
    for name, report, summary, walls in rows:
        cells = [_cell(summary["mAP"])] + [_cell(summary["group_mAP"].get(g)) for g in groups]
        for m in extra:
            values = [float(r[m]) for r in runs[name]["reports"]]
            cells.append(_cell({"mean": statistics.mean(values),
                                "std": statistics.stdev(values) if len(values) > 1 else None}))
        lines.append(f"| {report['method']} ({name}) | " + " | ".join(cells) + f" | {sum(walls) / len(walls):.0f} |")
    calibration = []
    if not args.no_calibration:  # the no-learning floors, on the first run's dataset
        from ltjax.calibration import calibration_rows, format_rows
        from ltjax.config import load_saved_config
        from ltjax.data import build_dataset

        first_dir = os.path.join(args.workdir, _name(args.configs[0]), f"seed_{args.seeds[0]}")
        saved = load_saved_config(first_dir)
        calibration = calibration_rows(build_dataset(saved.data))
        blanks = " | ".join([""] * (len(extra) + 1))  # the metric and s/run cells stay empty
        lines += [f"{row} | {blanks} |" for row in format_rows(calibration, groups)]
    command = " ".join(["python scripts/run_table.py --configs", *args.configs, "--seeds", *map(str, args.seeds),
                        "--workdir", args.workdir, *([f"--jobs {args.jobs}"] if args.jobs > 1 else []),
                        *(["--metrics", *extra] if extra else []), *(["--no-calibration"] if args.no_calibration else []),
                        *([f"--baseline {args.baseline} --reps {args.reps}"] if args.baseline else []), *overrides])
    lines += ["", "mean ± sample std over seeds, percent; " + first["group_rule"], "", f"Command: `{command}`"]
    if args.baseline:  # the same runs with confidence intervals (ltjax/compare.py)
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "compare_script", os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare.py"))
        compare_script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(compare_script)

        names = [_name(spec) for spec in args.configs]
        compare_script.main([*(os.path.join(args.workdir, n) for n in names), "--baseline", _name(args.baseline),
                             "--reps", str(args.reps), "--out", args.workdir])
        with open(os.path.join(args.workdir, "compare.md")) as f:
            lines += ["", f.read().rstrip()]
    table = "\n".join(lines)
    write_table(args.workdir, "table", table, {"command": command, "seeds": args.seeds, "runs": runs, "calibration": calibration})


if __name__ == "__main__":
    main()
