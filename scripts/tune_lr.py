"""Pick each method's learning rate on a validation split, then run its seeds on the test split at that rate.

  python scripts/tune_lr.py --configs configs/tiles_voc_lt.py:comic configs/tiles_voc_lt.py:bce \
      --factors 1 2 4 8 --seeds 0 1 2 --workdir runs/lr_table --jobs 2 [--config.data.missing_ratio=0.4 ...]

A comparison that runs every method at one step size favours the method the step was tuned for (the image
benchmark's SGD lr was tuned for mean BCE; a loss that rescales BCE's gradient, e.g. COMIC's focal factors,
then takes a smaller effective step).  This script gives every method the same search instead:

1. **Selection.**  For each config and each factor f of ``--factors``, one run at seed ``--tune-seed`` with
   ``optimizer.lr`` = f x the config's own lr (its recipe, after the overrides; schedule shape, warm-up and
   clipping unchanged), ``data.val_from_train`` = ``--val-fraction`` (a seeded, multi-label stratified
   validation split carved from the training split: the run trains on the rest; ``ltjax/data/stratify.py``)
   and ``eval.split=val``; in ``WORKDIR/tune/<name>/x<f>``.  The factor with the best validation mAP is
   chosen (a tie: the smaller factor).  When it lies at an edge of the grid, the grid grows past that edge
   (f / 2 below, 2 f above), up to ``--extend`` times, so that a chosen rate is an interior optimum of the
   grid whenever the budget allows (the table marks a choice still at an edge).  ``--val-fraction 0`` uses
   the dataset's own ``val`` split instead.  With partial labels (``data.missing_ratio``) the carved
   validation split keeps every label, as the test split does (``ltjax/data/partial.py``).
2. **Report.**  The seeds (``--seeds``), trained on the whole training split and scored on ``eval.split``
   (test), at the chosen rate: ``WORKDIR/<name>/x<f>/seed_<S>``.

A finished run is read back and an interrupted one resumes, so the command can be re-run.  ``--jobs N`` runs N
at a time.  A config spec may carry its own overrides: ``"configs/x.py:hill --config.method.variant=splc"``.
Output: WORKDIR/tune_lr.md and WORKDIR/tune_lr.json: per config the validation mAP at each factor, the chosen
factor and lr, and the test mAP total / head / medium / tail as mean ± sample std over the seeds.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shlex

from seed_runs import format_cell, parse_run_args, train_and_read_eval, write_table


def name_of(spec: str) -> str:
    """A directory name for a config spec (with its own overrides, if any)."""
    head, *extra = shlex.split(spec)
    path, _, arg = head.partition(":")
    base = os.path.splitext(os.path.basename(path))[0]
    text = "_".join([f"{base}_{arg}" if arg else base,
                     *(e.removeprefix("--config.").replace("method.", "") for e in extra)])
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def split_spec(spec: str) -> tuple[str, list[str]]:
    """``"configs/x.py:m --config.a=1"`` -> ``("configs/x.py:m", ["--config.a=1"])``."""
    head, *extra = shlex.split(spec)
    bad = [e for e in extra if not e.startswith("--config.")]
    if bad:
        raise SystemExit(f"config spec {spec!r}: only --config.FIELD=VALUE overrides may follow the config, got {bad}")
    return head, extra


def base_lr(spec: str, overrides) -> float:
    """The config's own ``optimizer.lr`` after the overrides."""
    from ltjax.config import parse_cli, resolve_config

    config, extra = split_spec(spec)
    args = parse_cli(["--config", config, *extra, *overrides], prog="tune_lr", description="",
                     require_workdir=False)
    return float(resolve_config(args).optimizer.lr)


def factor_text(f: float) -> str:
    return f"{f:g}"


def choose(val_maps: dict[float, float]) -> float:
    """The factor with the highest validation mAP; among equal ones the smallest."""
    best = max(val_maps.values())
    return min(f for f, v in val_maps.items() if v == best)


def next_factor(val_maps: dict[float, float]) -> float | None:
    """The factor that extends the grid past the edge the current choice sits on, else None."""
    chosen, grid = choose(val_maps), sorted(val_maps)
    if chosen == grid[0]:
        return grid[0] / 2
    if chosen == grid[-1]:
        return grid[-1] * 2
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", required=True, help="config specs, e.g. configs/yeast.py:db_focal")
    p.add_argument("--factors", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0],
                   help="multiples of each config's own lr to try (default 1 2 4 8)")
    p.add_argument("--extend", type=int, default=1,
                   help="how many times the grid may grow past an edge the choice sits on (default 1)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="data.val_from_train of the selection runs (default 0.2); 0: the dataset's own val split")
    p.add_argument("--tune-seed", type=int, default=0, help="config.seed of the selection runs (default 0)")
    args, overrides = parse_run_args(p, argv)
    if any(f <= 0 for f in args.factors):
        p.error("--factors must be positive")
    if not 0 <= args.val_fraction < 1:
        p.error("--val-fraction must lie in [0, 1)")
    if args.extend < 0:
        p.error("--extend must be >= 0")
    from ltjax.report import summarize_runs

    specs = {spec: (name_of(spec), *split_spec(spec), base_lr(spec, overrides)) for spec in args.configs}
    names = [v[0] for v in specs.values()]
    if len(set(names)) != len(names):
        p.error(f"two config specs share a directory name: {names}")
    val_overrides = [f"--config.data.val_from_train={args.val_fraction}"] if args.val_fraction else []
    val_overrides.append("--config.eval.split=val")

    def run(spec, factor, seed, tune):
        name, config, extra, lr = specs[spec]
        if tune:
            workdir = os.path.join(args.workdir, "tune", name, f"x{factor_text(factor)}")
        else:
            workdir = os.path.join(args.workdir, name, f"x{factor_text(factor)}", f"seed_{seed}")
        return train_and_read_eval(config, workdir, seed, [*extra, *overrides, f"--config.optimizer.lr={lr * factor!r}",
                                                           *(val_overrides if tune else [])])

    val_maps: dict[str, dict[float, float]] = {spec: {} for spec in specs}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        todo = [(spec, float(f)) for spec in specs for f in args.factors]
        for _round in range(args.extend + 1):
            futures = {(spec, f): pool.submit(run, spec, f, args.tune_seed, True) for spec, f in todo}
            for (spec, f), fut in futures.items():
                val_maps[spec][f] = float(fut.result()["mAP"])
            todo = [(spec, nf) for spec in specs if (nf := next_factor(val_maps[spec])) is not None
                    and nf not in val_maps[spec]]
            if not todo:
                break
        chosen = {spec: choose(val_maps[spec]) for spec in specs}
        finals = {(spec, s): pool.submit(run, spec, chosen[spec], s, False) for spec in specs for s in args.seeds}
        reports = {key: fut.result() for key, fut in finals.items()}

    all_factors = sorted({f for m in val_maps.values() for f in m})
    head = ["config", *[f"val x{factor_text(f)}" for f in all_factors], "chosen lr", "test mAP", "head", "medium",
            "tail"]
    lines = [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
    payload = {"factors": all_factors, "val_fraction": args.val_fraction, "tune_seed": args.tune_seed,
               "seeds": args.seeds, "overrides": overrides, "configs": {}}
    for spec, (name, _, _, lr) in specs.items():
        summary = summarize_runs([reports[(spec, s)] for s in args.seeds])
        f = chosen[spec]
        at_edge = f in (min(val_maps[spec]), max(val_maps[spec])) and len(val_maps[spec]) > 1
        cells = [f"{100 * val_maps[spec][g]:.2f}" if g in val_maps[spec] else "" for g in all_factors]
        groups = summary["group_mAP"]
        lines.append("| " + " | ".join([
            name, *cells, f"{lr * f:.4g} (x{factor_text(f)}{', grid edge' if at_edge else ''})",
            format_cell(summary["mAP"]), *(format_cell(groups.get(g)) for g in ("head", "medium", "tail"))]) + " |")
        payload["configs"][name] = {"spec": spec, "base_lr": lr, "val_mAP": {factor_text(g): v for g, v in
                                                                            sorted(val_maps[spec].items())},
                                    "chosen_factor": f, "chosen_lr": lr * f, "chosen_at_grid_edge": at_edge,
                                    "test": summary}
    table = (f"Learning rate chosen on the validation split (val_from_train {args.val_fraction}, seed "
             f"{args.tune_seed}; validation mAP, percent), then test mAP over seeds {args.seeds} at that rate.\n\n"
             + "\n".join(lines))
    write_table(args.workdir, "tune_lr", table, payload)


if __name__ == "__main__":
    main()
