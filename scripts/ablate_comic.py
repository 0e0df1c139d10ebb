"""COMIC's table on one dataset: COMIC, its ablation and branch rows, and baselines, at several missing
ratios, over S seeds; plus the RLC analysis (recalled labels per epoch, true and false).

  python scripts/ablate_comic.py --config configs/iu_xray_reports.py:comic --ratios 0 0.4 --seeds 0 1 2 \
      --baselines configs/iu_xray_reports.py:bce configs/iu_xray_reports.py:asl configs/iu_xray_reports.py:hill \
      --workdir runs/comic_iu_table --jobs 2 [--rows comic no_rlc ...] [--config.X=Y ...]

Rows (``--rows``, default all): the rows of ``configs/comic_voc.py`` (``ROWS``) as ``--config.method``
overrides of ``--config``: ``comic``, ``no_rlc``, ``no_mfm``, ``no_htb``, ``mfm_pn``, ``mfm_ht``, ``plain``;
``--switches FIELD=VALUE ...`` adds a full-COMIC row each (the tau and alpha sweeps); the branch
rows ``head_model`` / ``tail_model`` are the ``comic`` runs scored by one branch (``python -m ltjax.evaluate
--out``: no extra training).  ``--baselines SPEC ...``: other configs on the same data with the same seeds,
ratios and overrides (an entry may carry its own overrides: ``"configs/x.py:hill --config.method.variant=splc"``).  Every run gets ``--config.data.missing_ratio=R`` (the hidden positives depend only on
the data, R and ``data.missing_seed``: the same for every row and seed).

Each (ratio, row, seed) is ``python -m ltjax.train`` in ``WORKDIR/missing_<R>/<row>/seed_<S>`` (a finished
run is read back, an interrupted one resumes); ``--jobs N`` runs N at a time.  Writes WORKDIR/comic.md and
WORKDIR/comic.json: per ratio, mAP total / head / medium / tail (groups counted on the observed labels of
that ratio) as mean ± sample std over seeds and the mean wall time of a run; then the RLC analysis of the
``comic`` rows (mean over seeds of the labels recalled per epoch on the instance stream, true recalls =
hidden positives, false = the rest).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time

from seed_runs import format_cell as _cell, parse_run_args, train_and_read_eval, write_table

ROWS = ("comic", "no_rlc", "no_mfm", "no_htb", "mfm_pn", "mfm_ht", "plain", "head_model", "tail_model")
BRANCH_ROWS = {"head_model": "head", "tail_model": "tail"}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def _row_overrides(row: str) -> list[str]:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
    import comic_voc

    out = []
    for k, v in comic_voc.ROWS[row].items():
        out.append(f"--config.method.{k}={str(v).lower() if isinstance(v, bool) else v}")
    return out


def plan_rows(config: str, rows, baselines, switches=()) -> list[tuple[str, str, list[str]]]:
    """``(row name, config spec, extra overrides)`` of every trained row, in order (branch rows excluded)."""
    plan = []
    for sw in switches:  # one full-COMIC row each: the tau and alpha sweeps
        field, eq, value = sw.partition("=")
        if not eq or not field or not value:
            raise SystemExit(f"--switches: {sw!r} is not FIELD=VALUE (a field of config.method, e.g. tau=0.6)")
        plan.append((_slug(f"comic_{field}={value}"), config, [f"--config.method.{field}={value}"]))
    for r in rows:
        if r not in ROWS:
            raise SystemExit(f"--rows: {r!r} is not one of {', '.join(ROWS)}")
        if r not in BRANCH_ROWS:
            plan.append((r, config, _row_overrides(r)))
    if any(r in BRANCH_ROWS for r in rows) and "comic" not in [p[0] for p in plan]:
        plan.insert(0, ("comic", config, []))
    for entry in baselines:  # "SPEC [--config.X=Y ...]": a baseline with its own overrides
        spec, *extra = entry.split()
        bad = [e for e in extra if not e.startswith("--config.")]
        if bad:
            raise SystemExit(f"--baselines {entry!r}: after the config spec only --config.FIELD=VALUE may follow")
        path, _, arg = spec.partition(":")
        name = f"{os.path.splitext(os.path.basename(path))[0]}_{arg}" if arg else path
        name += "".join(f"_{e.rpartition('.')[2]}" for e in extra)
        plan.append((_slug(name), spec, extra))
    names = [p[0] for p in plan]
    if len(set(names)) != len(names):
        raise SystemExit(f"two rows share a name: {names}")
    return plan


def score_branch(workdir: str, branch: str) -> dict:
    """A finished COMIC run scored by one branch (``ltjax.evaluate --out WORKDIR/branch_<b>``)."""
    out = os.path.join(workdir, f"branch_{branch}")
    path = os.path.join(out, "eval.json")
    if not os.path.exists(path):
        subprocess.run([sys.executable, "-m", "ltjax.evaluate", "--workdir", workdir, "--out", out,
                        f"--config.method.test_branch={branch}"], check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        return json.load(f)


def rlc_analysis(reports: list[dict]) -> list[dict]:
    """Mean over runs of the per-epoch recall counts in eval.json["method_summary"]."""
    per_run = [r.get("method_summary", {}).get("rlc_per_epoch", []) for r in reports]
    per_run = [p for p in per_run if p]
    if not per_run:
        return []
    epochs = min(len(p) for p in per_run)
    out = []
    for i in range(epochs):
        rows = [p[i] for p in per_run]
        out.append({k: sum(r[k] for r in rows) / len(rows) for k in ("recalled", "true", "false", "hidden_seen")}
                   | {"epoch": rows[0]["epoch"]})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a config spec whose method is comic, e.g. configs/tiles_voc_lt.py:comic")
    p.add_argument("--rows", nargs="*", default=list(ROWS))
    p.add_argument("--baselines", nargs="*", default=[])
    p.add_argument("--switches", nargs="*", default=[], help="FIELD=VALUE of config.method: one COMIC row each "
                                                             "(tau / alpha sweeps: tau=0.6 tau=0.8 alpha=1)")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.4])
    args, overrides = parse_run_args(p, argv)
    from ltjax.report import summarize_runs

    plan = plan_rows(args.config, args.rows, args.baselines, args.switches)

    def rundir(ratio, name, seed):
        return os.path.join(args.workdir, f"missing_{ratio:g}", name, f"seed_{seed}")

    def run(ratio, row, seed):
        name, spec, extra = row
        t = time.time()
        report = train_and_read_eval(spec, rundir(ratio, name, seed), seed,
                                     [*overrides, f"--config.data.missing_ratio={ratio}", *extra])
        return report, time.time() - t

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {(r, row[0], s): pool.submit(run, r, row, s) for r in args.ratios for row in plan for s in args.seeds}
        done = {key: f.result() for key, f in futures.items()}

    order = [n for n in args.rows if n in ROWS] + [p[0] for p in plan if p[0] not in ROWS and p[0] not in args.rows]
    specs = {name: (spec, extra) for name, spec, extra in plan}
    results, lines, first_any = {}, [], None
    for ratio in args.ratios:
        block = {}
        for name in order:
            if name in BRANCH_ROWS:
                reports = [score_branch(rundir(ratio, "comic", s), BRANCH_ROWS[name]) for s in args.seeds]
                walls = [0.0 for _ in args.seeds]
                spec, extra = specs["comic"][0], [f"--config.method.test_branch={BRANCH_ROWS[name]}"]
            else:
                reports = [done[(ratio, name, s)][0] for s in args.seeds]
                walls = [done[(ratio, name, s)][1] for s in args.seeds]
                spec, extra = specs[name]
            block[name] = {"spec": spec, "overrides": extra, "wall_s": walls, "summary": summarize_runs(reports),
                           "reports": reports}
        results[f"{ratio:g}"] = block
        first = block[order[0]]["reports"][0]
        first_any = first_any or first
        groups = list(first["group_sizes"])
        lines += [f"**missing ratio {ratio:g}** ({first['dataset']}; seeds {', '.join(map(str, args.seeds))})", "",
                  "| row | mAP total | " + " | ".join(f"{g} ({first['group_sizes'][g]})" for g in groups)
                  + " | s/run |", "|" + "---|" * (len(groups) + 3)]
        for name, r in block.items():
            s = r["summary"]
            lines.append(f"| {name} | {_cell(s['mAP'])} | " + " | ".join(_cell(s["group_mAP"].get(g)) for g in groups)
                         + f" | {sum(r['wall_s']) / len(r['wall_s']):.0f} |")
        lines.append("")
    analysis = {}
    for ratio in args.ratios:
        if "comic" not in results[f"{ratio:g}"]:
            continue
        rows = rlc_analysis(results[f"{ratio:g}"]["comic"]["reports"])
        analysis[f"{ratio:g}"] = rows
        if not rows:
            continue
        lines += [f"**RLC analysis, missing ratio {ratio:g}** (comic row; per epoch of the instance stream, mean "
                  "over seeds)", "", "| epoch | recalled | true | false | hidden positives seen |", "|---|---|---|---|---|"]
        picks = sorted({0, 1, 2, 4, len(rows) // 2, len(rows) - 1} & set(range(len(rows))))
        for i in picks:
            r = rows[i]
            lines.append(f"| {r['epoch']} | {r['recalled']:.0f} | {r['true']:.0f} | {r['false']:.0f} | "
                         f"{r['hidden_seen']:.0f} |")
        lines.append("")
    command = " ".join(["python scripts/ablate_comic.py --config", args.config, "--rows", *args.rows,
                        *(["--switches", *args.switches] if args.switches else []),
                        *(["--baselines", *(f'"{b}"' if " " in b else b for b in args.baselines)] if args.baselines else []),
                        "--ratios", *(f"{r:g}" for r in args.ratios), "--seeds", *map(str, args.seeds),
                        "--workdir", args.workdir, *([f"--jobs {args.jobs}"] if args.jobs > 1 else []), *overrides])
    lines += ["mean ± sample std over seeds, percent; " + str(first_any["group_rule"])
              + " (on the observed labels of each ratio); s/run: wall seconds of a run (a finished run read back "
              "counts ~0; the branch rows are evaluations of the comic runs)", "", f"Command: `{command}`"]
    write_table(args.workdir, "comic", "\n".join(lines),
                {"command": command, "seeds": args.seeds, "ratios": args.ratios, "results": results,
                 "rlc_analysis": analysis})


if __name__ == "__main__":
    main()
