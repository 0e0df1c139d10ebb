"""Make a long-tailed subset of a multi-label list with the DB-loss construction (ltjax.data.longtail).

  python scripts/make_longtail_subset.py LABELS.txt --max-count 800 --seed 0 --out subset.txt \
      [--compare ltjax/data/lists/voc_lt_meta.json]

LABELS.txt has one item per line, ``<id> <class index> <class index> ...`` (the format of the VOC-LT /
COCO-LT lists).  Writes the subset in the same format and prints its class counts and head / medium /
tail groups; with --compare, also the published counts and groups side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("labels", help="label list: '<id> <class index>...' per line")
    p.add_argument("--max-count", type=int, required=True, help="target of the most frequent class (VOC 800, COCO 1200)")
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("--pareto-shape", type=float, default=6.0)
    p.add_argument("--num-classes", type=int, default=0, help="default: 1 + the largest class index")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="write the subset list here")
    p.add_argument("--compare", default="", help="a *_meta.json with the published class_freq / class_split")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import numpy as np

    from ltjax.data.groups import class_groups
    from ltjax.data.longtail import make_longtail_subset

    ids, rows = [], []
    with open(args.labels) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                rows.append([int(c) for c in parts[1:]])
            except ValueError:
                p.error(f"{args.labels}:{n}: class indices must be integers, got {line.strip()!r}")
            ids.append(parts[0])
    num_classes = args.num_classes or 1 + max(c for r in rows for c in r)
    labels = np.zeros((len(rows), num_classes), np.float32)
    for i, r in enumerate(rows):
        labels[i, r] = 1
    idx, targets = make_longtail_subset(labels, args.max_count, args.min_count, args.pareto_shape, args.seed)
    counts = labels[idx].sum(axis=0).astype(int)
    groups = class_groups(counts)
    print(f"subset: {len(idx)} of {len(rows)} items; groups {groups.sizes()}")
    published = json.load(open(args.compare)) if args.compare else None
    header = "| class | target | subset n_c |" + (" published n_c |" if published else "")
    print(header)
    print("|---|---:|---:|" + ("---:|" if published else ""))
    for c in range(num_classes):
        name = published["classes"][c] if published else str(c)
        row = f"| {name} | {targets[c]} | {counts[c]} |"
        if published:
            row += f" {published['class_freq'][c]} |"
        print(row)
    if published:
        pub = {"head": published["class_split"]["head"], "medium": published["class_split"]["middle"],
               "tail": published["class_split"]["tail"]}
        same = all(sorted(groups[g].tolist()) == sorted(pub[g]) for g in pub)
        diff = np.abs(counts - np.asarray(published["class_freq"]))
        print(f"published: {published['num_train_images']} items, groups "
              f"{ {g: len(v) for g, v in pub.items()} }; same group membership: {same}; "
              f"|n_c - published| mean {diff.mean():.2f}, max {diff.max()}")
    if args.out:
        with open(args.out, "w") as f:
            for i in idx:
                f.write(" ".join([ids[i], *map(str, np.flatnonzero(labels[i]).tolist())]) + "\n")


if __name__ == "__main__":
    main()
