"""Command line: ``python -m ltjax.train --config configs/NAME.py[:arg] --workdir DIR [--config.X=V ...]``.

Trains, checkpoints (resuming automatically from the latest checkpoint in DIR) and evaluates; writes
the resolved config (``config.json``), ``metrics.jsonl``, TensorBoard events, ``eval.json`` and the
per-class AP plot to DIR.  Config mistakes fail at once, before any data or model is built; a workdir another training process is
using is refused (:mod:`ltjax.training.workdir`).  Ctrl-C saves a checkpoint of the current step and exits
130; the same command resumes.
"""
from __future__ import annotations

import sys

from ltjax.config import ConfigError, parse_cli, resolve_config, run_cli

DESCRIPTION = "Train and evaluate an ltjax method; resumes from the latest checkpoint in --workdir."

_CHOICES = {
    "optimizer.name": ("sgd", "adam", "adamw"),
    "schedule.name": ("step", "cosine", "constant", "one_cycle"),
    "data.sampler": ("uniform", "class_aware", "reverse"),
    "data.groups.mode": ("threshold", "quantile"),
    "train.compute_dtype": ("float32", "bfloat16"),
    "train.progress_bar": ("auto", "on", "off"),
    "distributed.enabled": ("auto", "on", "off"),
}


def _get(config, path):
    for part in path.split("."):
        config = config[part]
    return config


def validate_config(config) -> None:
    """Checks every name-valued field against its registry or choice list (cheap, before heavy work)."""
    from ltjax.data import DATASETS
    from ltjax.methods import METHODS
    from ltjax.models import MODELS

    registries = {"data.name": DATASETS.names(), "model.name": MODELS.names(), "method.name": METHODS.names()}
    errors = []
    for path, valid in [*registries.items(), *_CHOICES.items()]:
        value = _get(config, path)
        if value not in valid:
            errors.append(f"config field {path!r} = {value!r} is not valid; choose one of: {', '.join(valid)}")
    if config.data.batch_size < 1:
        errors.append(f"config field 'data.batch_size' must be >= 1, got {config.data.batch_size}")
    if config.train.num_epochs < 1:
        errors.append(f"config field 'train.num_epochs' must be >= 1, got {config.train.num_epochs}")
    if errors:
        raise ConfigError("\n".join(errors))


def main(argv=None) -> int:
    args = parse_cli(argv, prog="python -m ltjax.train", description=DESCRIPTION)
    config = resolve_config(args)
    validate_config(config)
    from ltjax.training.workdir import check_usable

    check_usable(args.workdir)  # a file, or not writable: before anything is built

    from ltjax.training import devices

    devices.initialize_distributed(config.distributed)  # before any other jax call
    devices.enable_compilation_cache()

    from ltjax.assets import AssetUnavailableError
    from ltjax.errors import UserError
    from ltjax.training.loop import NonFiniteLossError, train_and_evaluate

    try:  # (takes the workdir's lock, checks it holds no other run, writes config.json once the run starts)
        train_and_evaluate(config, args.workdir)
    except UserError:
        raise  # exit 2 with its message (run_cli)
    except (NonFiniteLossError, AssetUnavailableError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
