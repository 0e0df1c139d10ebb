"""LDRNet's ablation rows (stage 1 only, uniform sampling, an alpha sweep) over S seeds, sharing stage 1.

  python scripts/ablate_ldrnet.py --config configs/tiles_voc_lt.py:ldrnet --seeds 0 1 2 \
      --workdir runs/ldr_tiles_ablation [--alphas 0 0.5 0.9 1.5] [--no-uniform] [--jobs 2] [--config.X=Y ...]

Rows: ``stage1`` (``method.rounds=0``: the paper's stage-1-only row), ``uniform`` (p_c = F_c, instance-uniform: Table 6) and
``alpha=A`` for each ``--alphas`` (reverse sampling, eq. 12; 0.9 is the full LDRNet).

Stage 1 does not read ``method.alpha``, ``method.sampling`` or ``method.rounds`` (they act from the first
pass on), and a run resumed from a checkpoint continues bit-identically, so stage 1 runs once per seed:
the ``stage1`` row trains it in ``WORKDIR/stage1/seed_<S>``, and every EM row starts from a copy of that
run's final checkpoint (the stage-1 boundary), written into ``WORKDIR/<row>/seed_<S>/checkpoints`` before
``python -m ltjax.train`` resumes there.  ``--stage1-from DIR`` takes the stage-1 boundary checkpoint of
DIR/seed_<S> instead (e.g. the full runs of ``run_table.py`` made with a large
``--config.train.keep_checkpoints``), and trains the stage1 row from it the same way.  A finished row is
read back.  Writes WORKDIR/ablation.md and WORKDIR/ablation.json: mAP total / head / medium / tail, AUC and
mACC as mean ± sample std over the seeds, and the mean wall time of a row's run.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import time

from seed_runs import format_cell as _cell, parse_run_args, train_and_read_eval, write_table


def plan_rows(alphas, uniform: bool) -> list[tuple[str, list[str]]]:
    """``(row name, overrides)`` of every row; the first is the stage-1 row the others branch from."""
    rows = [("stage1", ["--config.method.rounds=0"])]
    if uniform:
        rows.append(("uniform", ["--config.method.sampling=uniform"]))
    for a in alphas:
        if not a >= 0:
            raise SystemExit(f"--alphas: {a} is not >= 0")
        rows.append((f"alpha={a:g}", ["--config.method.sampling=reverse", f"--config.method.alpha={a:g}"]))
    names = [r[0] for r in rows]
    if len(set(names)) != len(names):
        raise SystemExit(f"two rows share a name: {names}")
    return rows


def stage1_end(workdir: str) -> int:
    """The last step of stage 1, from a run's phases.json (start + steps of the phase named stage1)."""
    path = os.path.join(workdir, "phases.json")
    if not os.path.exists(path):
        raise SystemExit(f"{path} is missing: {workdir} is not an LDRNet run (train it first)")
    with open(path) as f:
        for phase in json.load(f):
            if phase["name"] == "stage1":
                return int(phase["start"]) + int(phase["steps"])
    raise SystemExit(f"{path} has no stage1 phase")


def branch(source: str, step: int, target: str) -> None:
    """Copy ``source``'s checkpoint of ``step`` into the empty run directory ``target``."""
    src = os.path.join(source, "checkpoints", str(step))
    if not os.path.isdir(src):
        raise SystemExit(f"{src} is missing: the stage-1 boundary checkpoint of {source} (train it first, or keep "
                         f"it with --config.train.keep_checkpoints)")
    dst = os.path.join(target, "checkpoints", str(step))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copytree(src, dst + ".tmp")
    os.replace(dst + ".tmp", dst)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the LDRNet config spec, e.g. configs/tiles_voc_lt.py:ldrnet")
    p.add_argument("--alphas", type=float, nargs="*", default=[0.0, 0.5, 0.9, 1.5])
    p.add_argument("--no-uniform", action="store_true", help="leave out the uniform-sampling row")
    p.add_argument("--stage1-from", default="", help="runs DIR/seed_<S> whose stage-1 checkpoint to branch from")
    args, overrides = parse_run_args(p, argv)
    from ltjax.report import summarize_runs

    rows = plan_rows(args.alphas, not args.no_uniform)
    walls = {}

    def run(name, extra, seed, source=None):
        workdir = os.path.join(args.workdir, name, f"seed_{seed}")
        if source is not None and not os.path.exists(os.path.join(workdir, "checkpoints")):
            branch(source, stage1_end(source), workdir)
        t = time.time()
        report = train_and_read_eval(args.config, workdir, seed, [*overrides, *extra])
        walls[(name, seed)] = time.time() - t
        return report

    def seed_rows(seed):
        stage1_dir = os.path.join(args.workdir, "stage1", f"seed_{seed}")
        source = os.path.join(args.stage1_from, f"seed_{seed}") if args.stage1_from else None
        out = {"stage1": run("stage1", rows[0][1], seed, source)}
        for name, extra in rows[1:]:
            out[name] = run(name, extra, seed, stage1_dir)
        return out

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        per_seed = dict(zip(args.seeds, pool.map(seed_rows, args.seeds)))

    results = {}
    for name, extra in rows:
        reports = [per_seed[s][name] for s in args.seeds]
        results[name] = {"overrides": extra, "wall_s": [walls[(name, s)] for s in args.seeds],
                         "summary": summarize_runs(reports), "reports": reports}
    first = results["stage1"]["reports"][0]
    groups = list(first["group_sizes"])
    lines = [f"**LDRNet ablation on {first['dataset']}** ({args.config}; seeds {', '.join(map(str, args.seeds))})", "",
             "| row | mAP total | " + " | ".join(f"{g} ({first['group_sizes'][g]})" for g in groups)
             + " | AUC | mACC | s/run |", "|" + "---|" * (len(groups) + 5)]
    for name, r in results.items():
        s = r["summary"]
        lines.append(f"| {name} | {_cell(s['mAP'])} | " + " | ".join(_cell(s["group_mAP"].get(g)) for g in groups)
                     + f" | {_cell(s.get('auc_macro'))} | {_cell(s.get('mACC'))}"
                     + f" | {sum(r['wall_s']) / len(r['wall_s']):.0f} |")
    command = " ".join(["python scripts/ablate_ldrnet.py --config", args.config, "--alphas",
                        *(f"{a:g}" for a in args.alphas), *(["--no-uniform"] if args.no_uniform else []),
                        *([f"--stage1-from {args.stage1_from}"] if args.stage1_from else []),
                        "--seeds", *map(str, args.seeds), "--workdir", args.workdir,
                        *([f"--jobs {args.jobs}"] if args.jobs > 1 else []), *overrides])
    lines += ["", "mean ± sample std over seeds, percent; " + first["group_rule"] + "; every EM row resumes from "
              "its seed's stage-1 checkpoint; s/run: wall seconds of that row's run (the stage1 row's counts stage "
              "1 unless it was branched too; a finished run read back counts ~0)", "", f"Command: `{command}`"]
    table = "\n".join(lines)
    write_table(args.workdir, "ablation", table, {"command": command, "seeds": args.seeds, "rows": results})


if __name__ == "__main__":
    main()
