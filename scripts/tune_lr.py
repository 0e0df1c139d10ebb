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

``--select test_half`` is the protocol for a dataset whose training split is too small to spare a useful
validation split (tiles_voc_lt: 1,107 training images, so a 20 % carve leaves about one positive per tail
class, and one image decides a tail class's validation AP).  Every factor of the grid then runs every seed on
the whole training split, scored on the test split; the test examples are cut in two halves by the same
multi-label stratified split (seeded by ``--half-seed``; ``ltjax/data/stratify.py``); the factor is chosen on
the first half (the mean over seeds of its mAP) and the table reports the second half, which played no part
in the choice (plus the whole test split, for reference).  The grid grows past an edge as above.

A finished run is read back and an interrupted one resumes, so the command can be re-run.  ``--jobs N`` runs N
at a time.  A config spec may carry its own overrides: ``"configs/x.py:hill --config.method.variant=splc"``.
Output: WORKDIR/tune_lr.md and WORKDIR/tune_lr.json (``--table`` names them): per config the validation mAP at each factor, the chosen
factor and lr, and the test mAP total / head / medium / tail as mean ± sample std over the seeds.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shlex

import numpy as np

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
    p.add_argument("--select", choices=["val", "test_half"], default="val",
                   help="choose on a validation split (default), or on one half of the test split and report "
                        "the other half (module docstring)")
    p.add_argument("--half-seed", type=int, default=0, help="seed of the test split's halves (--select test_half)")
    p.add_argument("--table", default="tune_lr",
                   help="output stem: WORKDIR/TABLE.md and .json (default tune_lr), so that invocations with other "
                        "grids can share one WORKDIR's runs")
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

    if args.select == "test_half":
        return _main_test_half(args, specs, run, summarize_runs, overrides)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        def score(todo):  # one selection run per (config, factor), scored on the validation split
            futures = {key: pool.submit(run, key[0], key[1], args.tune_seed, True) for key in todo}
            return {key: float(fut.result()["mAP"]) for key, fut in futures.items()}

        val_maps = search(specs, args.factors, args.extend, score)
        chosen = {spec: choose(val_maps[spec]) for spec in specs}
        finals = {(spec, s): pool.submit(run, spec, chosen[spec], s, False) for spec in specs for s in args.seeds}
        reports = {key: fut.result() for key, fut in finals.items()}

    all_factors = sorted({f for m in val_maps.values() for f in m})
    head = ["config", *[f"val x{factor_text(f)}" for f in all_factors], "chosen lr", "test mAP", "head", "medium",
            "tail"]
    lines = [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
    payload = {"select": "val", "factors": all_factors, "val_fraction": args.val_fraction,
               "tune_seed": args.tune_seed, "seeds": args.seeds, "overrides": overrides, "configs": {}}
    for spec, (name, _, _, lr) in specs.items():
        summary = summarize_runs([reports[(spec, s)] for s in args.seeds])
        f = chosen[spec]
        at_edge = _at_edge(f, val_maps[spec])
        cells = [f"{100 * val_maps[spec][g]:.2f}" if g in val_maps[spec] else "" for g in all_factors]
        groups = summary["group_mAP"]
        lines.append("| " + " | ".join([
            name, *cells, _lr_cell(lr, f, at_edge),
            format_cell(summary["mAP"]), *(format_cell(groups.get(g)) for g in ("head", "medium", "tail"))]) + " |")
        payload["configs"][name] = {"spec": spec, "base_lr": lr, "val_mAP": {factor_text(g): v for g, v in
                                                                            sorted(val_maps[spec].items())},
                                    "chosen_factor": f, "chosen_lr": lr * f, "chosen_at_grid_edge": at_edge,
                                    "test": summary}
    table = (f"Learning rate chosen on the validation split (val_from_train {args.val_fraction}, seed "
             f"{args.tune_seed}; validation mAP, percent), then test mAP over seeds {args.seeds} at that rate.\n\n"
             + "\n".join(lines))
    write_table(args.workdir, args.table, table, payload)


def search(specs, factors, extend: int, score) -> dict[str, dict[float, float]]:
    """{spec: {factor: score}} over the grid ``factors``, grown past the edge each spec's choice sits on up to
    ``extend`` times; ``score([(spec, factor), ...])`` runs and scores one round."""
    maps: dict[str, dict[float, float]] = {spec: {} for spec in specs}
    todo = [(spec, float(f)) for spec in specs for f in factors]
    for _round in range(extend + 1):
        for (spec, f), value in score(todo).items():
            maps[spec][f] = value
        todo = [(spec, nf) for spec in specs if (nf := next_factor(maps[spec])) is not None and nf not in maps[spec]]
        if not todo:
            break
    return maps


def _at_edge(f: float, maps: dict[float, float]) -> bool:
    return len(maps) > 1 and f in (min(maps), max(maps))


def _lr_cell(lr: float, f: float, at_edge: bool) -> str:
    return f"{lr * f:.4g} (x{factor_text(f)}{', grid edge' if at_edge else ''})"


def test_halves(labels, seed: int) -> tuple:
    """(selection rows, report rows) of the test split: a seeded multi-label stratified cut in two halves."""
    from ltjax.data.stratify import stratified_split

    return stratified_split(labels, 0.5, seed, field="--half-seed")


def half_means(run, rows, groups) -> dict[str, float]:
    """mAP total / per group of one run (an ``ltjax.compare.Run``) on the test examples ``rows``."""
    from ltjax.compare import _means, class_ap

    values = _means(class_ap(run.scores[rows], run.labels[rows]), groups)
    return {g: float(v) for g, v in zip(groups, values)}


def _main_test_half(args, specs, run, summarize_runs, overrides):
    from ltjax.compare import check_same_test_set, groups_of, load_method
    from ltjax.report import _stat

    loaded: dict[tuple[str, float], object] = {}  # (spec, factor) -> ltjax.compare.Method over the seeds
    per_half: dict[tuple[str, float], list[dict]] = {}  # (spec, factor) -> per seed {"sel": ..., "rep": ...}
    halves = None
    seed_dirs = {f"seed_{s}" for s in args.seeds}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        def score(todo):  # every seed of each (config, factor) on the test split; the selection half's mean mAP
            nonlocal halves
            futures = [pool.submit(run, spec, f, s, False) for spec, f in todo for s in args.seeds]
            for fut in futures:
                fut.result()
            out = {}
            for spec, f in todo:
                name = specs[spec][0]
                method = load_method(os.path.join(args.workdir, name, f"x{factor_text(f)}"), name)
                method.runs = [r for r in method.runs if os.path.basename(r.path) in seed_dirs]
                loaded[(spec, f)] = method
                check_same_test_set([next(iter(loaded.values())), method])  # the first one loaded, and this
                if halves is None:
                    halves = test_halves(method.runs[0].labels, args.half_seed)
                groups = groups_of(method.runs[0].report)
                per_half[(spec, f)] = [{"sel": half_means(r, halves[0], groups), "rep": half_means(r, halves[1], groups)}
                                       for r in method.runs]
                out[(spec, f)] = float(np.mean([h["sel"]["total"] for h in per_half[(spec, f)]]))
            return out

        sel = search(specs, args.factors, args.extend, score)

    chosen = {spec: choose(sel[spec]) for spec in specs}
    all_factors = sorted({f for m in sel.values() for f in m})
    head = ["config", *[f"sel. half x{factor_text(f)}" for f in all_factors], "chosen lr", "report half mAP",
            "head", "medium", "tail", "whole test mAP", "whole test, x1"]
    lines = [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
    payload = {"select": "test_half", "half_seed": args.half_seed, "halves": [len(halves[0]), len(halves[1])],
               "factors": all_factors, "seeds": args.seeds, "overrides": overrides, "configs": {}}
    for spec, (name, _, _, lr) in specs.items():
        f = chosen[spec]
        at_edge = _at_edge(f, sel[spec])
        rep = {g: _stat([h["rep"][g] for h in per_half[(spec, f)]], g) for g in per_half[(spec, f)][0]["rep"]}
        whole = summarize_runs([r.report for r in loaded[(spec, f)].runs])
        whole1 = summarize_runs([r.report for r in loaded[(spec, 1.0)].runs]) if (spec, 1.0) in loaded else None
        cells = [f"{100 * sel[spec][g]:.2f}" if g in sel[spec] else "" for g in all_factors]
        lines.append("| " + " | ".join([
            name, *cells, _lr_cell(lr, f, at_edge), format_cell(rep["total"]),
            *(format_cell(rep.get(g)) for g in ("head", "medium", "tail")), format_cell(whole["mAP"]),
            format_cell(whole1["mAP"]) if whole1 else ""]) + " |")
        payload["configs"][name] = {
            "spec": spec, "base_lr": lr, "selection_half_mAP": {factor_text(g): v for g, v in sorted(sel[spec].items())},
            "chosen_factor": f, "chosen_lr": lr * f, "chosen_at_grid_edge": at_edge, "report_half": rep,
            "whole_test": whole, "whole_test_x1": whole1}
    table = (f"Learning rate chosen on one half of the test split (mean mAP over seeds {args.seeds}, percent; "
             f"halves of {len(halves[0])} / {len(halves[1])} examples, multi-label stratified, seed "
             f"{args.half_seed}); reported on the other half (mean ± std over the seeds) and, for reference, on the "
             f"whole test split.\n\n" + "\n".join(lines))
    write_table(args.workdir, args.table, table, payload)


if __name__ == "__main__":
    main()
