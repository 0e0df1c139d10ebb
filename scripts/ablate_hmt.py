"""HMT-Net ablations: the paper's lambda sweep (0, 1, 2, 4, 8) and an eta sweep, over S seeds.

  python scripts/ablate_hmt.py --config configs/yeast.py:hmt --seeds 0 1 2 --workdir runs/hmt_ablation \
      [--lams 0 1 2 4 8] [--etas 0 0.25 0.5 0.75 1] [--config.train.num_epochs=20 ...]

Each point runs ``python -m ltjax.train`` (resuming finished runs) with ``--config.method.lam`` /
``--config.method.eta`` set (the other at its config value).  Writes WORKDIR/ablation.md (mean ± std
group-mAP tables), WORKDIR/ablation.json and WORKDIR/ablation.png (mAP against lambda and eta).
"""
from __future__ import annotations

import argparse
import os
import sys

from seed_runs import format_cell as _cell, train_and_read_eval as _run, write_table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/yeast.py:hmt")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lams", type=float, nargs="*", default=[0, 1, 2, 4, 8])
    p.add_argument("--etas", type=float, nargs="*", default=[0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--workdir", required=True)
    args, overrides = p.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        p.error(f"unknown arguments {bad}; only --config.FIELD=VALUE overrides are passed on")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from ltjax.report import summarize_runs

    sweeps = {"lam": args.lams, "eta": args.etas}
    results = {}
    for field, values in sweeps.items():
        results[field] = []
        for v in values:
            reports = [
                _run(args.config, os.path.join(args.workdir, f"{field}_{v:g}", f"seed_{s}"), s,
                     [*overrides, f"--config.method.{field}={v}"])
                for s in args.seeds
            ]
            results[field].append({"value": v, "summary": summarize_runs(reports)})

    first = results["lam"][0]["summary"] if results["lam"] else results["eta"][0]["summary"]
    groups = list(first["group_sizes"])
    lines = []
    for field, rows in results.items():
        if not rows:
            continue
        lines += [f"**HMT-Net {field} sweep** ({args.config}, seeds {', '.join(map(str, args.seeds))})", "",
                  f"| {field} | mAP total | " + " | ".join(f"{g} ({first['group_sizes'][g]})" for g in groups) + " |",
                  "|" + "---|" * (len(groups) + 2)]
        for r in rows:
            s = r["summary"]
            lines.append(f"| {r['value']:g} | {_cell(s['mAP'])} | " + " | ".join(_cell(s["group_mAP"].get(g)) for g in groups) + " |")
        lines.append("")
    command = " ".join(["python scripts/ablate_hmt.py --config", args.config, "--seeds", *map(str, args.seeds),
                        "--lams", *[f"{v:g}" for v in args.lams], "--etas", *[f"{v:g}" for v in args.etas],
                        "--workdir", args.workdir, *overrides])
    lines += ["mean ± sample std over seeds, percent", "", f"Command: `{command}`"]
    table = "\n".join(lines)
    write_table(args.workdir, "ablation", table, {"command": command, "results": results})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = [f for f in results if results[f]]
    fig, axes = plt.subplots(1, len(fields), figsize=(5 * len(fields), 3.6), squeeze=False)
    for ax, field in zip(axes[0], fields):
        xs = [r["value"] for r in results[field]]
        for key, label in [("mAP", "total"), *[((g,), g) for g in groups]]:
            stats = [r["summary"]["mAP"] if key == "mAP" else r["summary"]["group_mAP"][key[0]] for r in results[field]]
            if any(s is None or s["mean"] is None for s in stats):
                continue
            ys = [100 * s["mean"] for s in stats]
            err = [0 if s["std"] is None else 100 * s["std"] for s in stats]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        ax.set_xlabel(field)
        ax.set_ylabel("mAP (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"HMT-Net ablation ({args.config})")
    fig.tight_layout()
    fig.savefig(os.path.join(args.workdir, "ablation.png"), dpi=120)


if __name__ == "__main__":
    main()
