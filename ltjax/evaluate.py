"""Command line: ``python -m ltjax.evaluate --workdir DIR [--step N] [--out DIR2] [--config.eval.X=V ...]``.

Restores a trained run (its saved ``config.json`` and a checkpoint: by default the one ``train.select_on``
selected when the run has a selection, else the latest), scores
``config.eval.split`` and writes ``eval.json`` and ``ap_vs_frequency.png`` next to the run (or in ``--out``), printing
the head/medium/tail mAP table.
"""
from __future__ import annotations

import sys

from ltjax.config import ConfigError, load_saved_config, parse_cli, resolve_config, run_cli

DESCRIPTION = "Evaluate a trained ltjax run: mAP overall and per head/medium/tail group, AUC, F1, P@k, nDCG@k."


def main(argv=None) -> int:
    args = parse_cli(
        argv,
        prog="python -m ltjax.evaluate",
        description=DESCRIPTION,
        require_config=False,
        accept_config=False,
        extra_flags={"step": "checkpoint step to evaluate (default: the selected one with train.select_on, else the latest)",
                     "out": "folder for eval.json and the plot (default: the workdir; e.g. to score another "
                            "config.method.test_branch without replacing the run's own report)"},
    )
    config = resolve_config(args, base=load_saved_config(args.workdir))
    step = _parse_step(args.extra.get("step"))

    from ltjax.train import validate_config
    from ltjax.training.workdir import check_usable

    validate_config(config)
    out = args.extra.get("out") or args.workdir
    check_usable(out, hint="evaluate writes eval.json there: pass --out DIR to write it elsewhere")
    from ltjax.training import devices

    devices.initialize_distributed(config.distributed)
    devices.enable_compilation_cache()
    from ltjax.assets import AssetUnavailableError
    from ltjax.errors import UserError
    from ltjax.training.loop import Experiment, evaluate_and_report

    try:
        exp = Experiment(config)
        _snapshot_if_missing(args.workdir, exp)
        selected = None if step is not None else exp.restore_selected(args.workdir)
        if selected is not None:
            state, step, record = selected
            evaluate_and_report(exp, state, out, step, selection=record)
        else:
            state, step = exp.restore(args.workdir, step)
            evaluate_and_report(exp, state, out, step)
    except UserError:
        raise  # exit 2 with its message (run_cli)
    except (AssetUnavailableError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


def _snapshot_if_missing(workdir: str, exp) -> None:
    """A run made before dataset snapshots existed gets one (``ltjax.data.snapshot``: predict without the
    data); a workdir that cannot be written is left as it is."""
    import jax

    from ltjax.data import snapshot

    if jax.process_index() != 0 or exp.frozen is not None or snapshot.exists(workdir):
        return
    try:
        snapshot.write(workdir, exp.dataset, exp.config.data)
    except OSError:
        pass


def _parse_step(text):
    if text is None:
        return None
    try:
        step = int(text)
    except ValueError:
        step = -1
    if step < 0:
        raise ConfigError(f"--step {text!r} is not a checkpoint step; pass a whole number such as --step 1000 "
                          "(the steps are the folder names under WORKDIR/checkpoints), or leave it out")
    return step


if __name__ == "__main__":
    sys.exit(run_cli(main))
