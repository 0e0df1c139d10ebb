"""Size, label count, head/medium/tail group sizes and the class-count distribution of datasets.

  python scripts/dataset_stats.py configs/padchest_reports.py configs/iu_xray_reports.py configs/tiles_voc_lt.py
  python scripts/dataset_stats.py configs/padchest_reports.py --config.data.physician_only=true

Each config spec is loaded like ``ltjax.train`` does (``--config.data.FIELD=VALUE`` overrides apply to
every spec) and its dataset built (fetching assets / preparing array_record copies on first use); prints
one Markdown row per dataset: train / test sizes, C, group sizes under the config's group rule,
percentiles 0/10/25/50/75/90/100 of the training class counts n_c, max/min n_c, labels per training
example, and the three most and least frequent classes.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def stats_row(spec: str, overrides) -> tuple[str, str]:
    from ltjax.config import apply_overrides, load_config
    from ltjax.data import build_dataset

    cfg = apply_overrides(load_config(spec), overrides)
    ds = build_dataset(cfg.data)
    meta = ds.meta
    n = np.asarray(meta.class_counts)
    sizes = " / ".join(f"{len(s):,}" for s in ds.splits.values())
    groups = " / ".join(str(len(i)) for i in meta.groups.indices)
    pct = ", ".join(str(int(round(v))) for v in np.percentile(n, [0, 10, 25, 50, 75, 90, 100]))
    order = np.argsort(-n, kind="stable")
    top = ", ".join(f"{meta.class_names[i]} {int(n[i])}" for i in order[:3])
    rare = ", ".join(f"{meta.class_names[i]} {int(n[i])}" for i in order[::-1][:3])
    row = (f"| {meta.name} | {sizes} | {len(n)} | {groups} | {pct} | {n.max() / max(n.min(), 1):,.0f} | "
           f"{n.sum() / meta.num_train:.2f} |")
    return row, f"{meta.name}: most frequent {top}; rarest {rare}; groups: {meta.groups.rule}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+", help="config specs, e.g. configs/tiles_voc_lt.py")
    args, rest = p.parse_known_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from ltjax.config import exit_on_config_error, parse_cli

    rows, notes = [], []
    with exit_on_config_error():  # a bad spec or override: the message, exit 2, no traceback
        # the --config.FIELD=VALUE / --config.FIELD VALUE overrides, parsed as ltjax.train parses them
        overrides = parse_cli(rest, prog="dataset_stats.py", description=__doc__, require_config=False,
                              require_workdir=False, accept_config=False).overrides
        for spec in args.configs:
            row, note = stats_row(spec, overrides)
            rows.append(row)
            notes.append(note)
    print("| dataset | splits (train / test ...) | C | head / medium / tail | n_c percentiles 0/10/25/50/75/90/100 | "
          "max/min n_c | labels per train example |")
    print("|---|---|---:|---|---|---:|---:|")
    print("\n".join(rows))
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
