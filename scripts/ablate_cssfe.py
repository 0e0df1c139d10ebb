"""CSSFE's ablation (the paper's Figure 4: Net-0 .. Net-3) and its baselines, over S seeds, in one table.

  python scripts/ablate_cssfe.py --config configs/tiles_voc_lt.py:cssfe --seeds 0 1 2 \
      --baselines configs/tiles_voc_lt.py:bce configs/tiles_voc_lt.py:db_focal configs/tiles_voc_lt.py:hmt \
      --workdir runs/cssfe_tiles --jobs 2 [--switches mask_mode=multiply residual=false] [--config.X=Y ...]

Rows:

* ``net0`` .. ``net3`` (``--variants``): ``--config.method.variant=netK`` on ``--config``.  Net-0 is the
  backbone and the CAM head (logit = spatial mean of the CAM), Net-1 adds the label embeddings and the
  Transformer, Net-2 the attention enhancement without the mask, Net-3 the full CSSFE;
* ``--switches FIELD=VALUE ...``: one more row each, the full CSSFE with ``--config.method.FIELD=VALUE``
  (e.g. ``mask_mode=multiply``, the released code's mask; ``residual=false``, its block; ``projection=linear``,
  the paper text's projection; ``encoder=random``, no language model);
* ``--baselines SPEC ...``: other configs on the same data, run with the same seeds and overrides.

Each (row, seed) is ``python -m ltjax.train`` in ``WORKDIR/<row>/seed_<S>`` (a finished run is read back,
an interrupted one resumes); ``--jobs N`` runs N at a time.  Writes WORKDIR/ablation.md and
WORKDIR/ablation.json: mAP total / head / medium / tail as mean ± sample std over seeds, and the mean
wall time of a run.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import time

from seed_runs import format_cell as _cell, parse_run_args, train_and_read_eval, write_table

VARIANTS = ("net0", "net1", "net2", "net3")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def plan_rows(config: str, variants, switches, baselines) -> list[tuple[str, str, list[str]]]:
    """``(row name, config spec, extra overrides)`` for every row of the table, in order."""
    rows = []
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"--variants: {v!r} is not one of {', '.join(VARIANTS)}")
        rows.append((f"cssfe_{v}", config, [f"--config.method.variant={v}"]))
    for s in switches:
        field, eq, value = s.partition("=")
        if not eq or not field or not value:
            raise SystemExit(f"--switches: {s!r} is not FIELD=VALUE (a field of config.method, e.g. mask_mode=multiply)")
        rows.append((_slug(f"cssfe_net3_{field}={value}"), config,
                     ["--config.method.variant=net3", f"--config.method.{field}={value}"]))
    for spec in baselines:
        path, _, arg = spec.partition(":")
        rows.append((_slug(f"{os.path.splitext(os.path.basename(path))[0]}_{arg}" if arg else path), spec, []))
    names = [r[0] for r in rows]
    if len(set(names)) != len(names):
        raise SystemExit(f"two rows share a name: {names}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/cssfe_voc.py", help="the CSSFE config spec the variants run on")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--switches", nargs="*", default=[], help="FIELD=VALUE of config.method: one full-CSSFE row each")
    p.add_argument("--baselines", nargs="*", default=[], help="config specs of the baseline rows")
    args, overrides = parse_run_args(p, argv)
    from ltjax.report import summarize_runs

    rows = plan_rows(args.config, args.variants, args.switches, args.baselines)

    def run(row, seed):
        name, spec, extra = row
        t = time.time()
        report = train_and_read_eval(spec, os.path.join(args.workdir, name, f"seed_{seed}"), seed, [*overrides, *extra])
        return report, time.time() - t

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {(row[0], s): pool.submit(run, row, s) for row in rows for s in args.seeds}
        done = {key: f.result() for key, f in futures.items()}

    results = {}
    for name, spec, extra in rows:
        reports = [done[(name, s)][0] for s in args.seeds]
        walls = [done[(name, s)][1] for s in args.seeds]
        results[name] = {"spec": spec, "overrides": extra, "wall_s": walls, "summary": summarize_runs(reports),
                         "reports": reports}
    first = results[rows[0][0]]["reports"][0]
    groups = list(first["group_sizes"])
    lines = [f"**CSSFE ablation and baselines on {first['dataset']}** (seeds {', '.join(map(str, args.seeds))})", "",
             "| row | method | mAP total | " + " | ".join(f"{g} ({first['group_sizes'][g]})" for g in groups)
             + " | s/run |", "|" + "---|" * (len(groups) + 4)]
    for name, r in results.items():
        s = r["summary"]
        lines.append(f"| {name} | {r['reports'][0]['method']} | {_cell(s['mAP'])} | "
                     + " | ".join(_cell(s["group_mAP"].get(g)) for g in groups)
                     + f" | {sum(r['wall_s']) / len(r['wall_s']):.0f} |")
    command = " ".join(["python scripts/ablate_cssfe.py --config", args.config, "--variants", *args.variants,
                        *(["--switches", *args.switches] if args.switches else []),
                        *(["--baselines", *args.baselines] if args.baselines else []),
                        "--seeds", *map(str, args.seeds), "--workdir", args.workdir,
                        *([f"--jobs {args.jobs}"] if args.jobs > 1 else []), *overrides])
    lines += ["", "mean ± sample std over seeds, percent; " + first["group_rule"]
              + "; s/run: wall seconds of a run (a finished run read back counts ~0)", "", f"Command: `{command}`"]
    table = "\n".join(lines)
    write_table(args.workdir, "ablation", table, {"command": command, "seeds": args.seeds, "rows": results})


if __name__ == "__main__":
    main()
