"""Command line: ``python -m ltjax.train --config configs/NAME.py[:arg] --workdir DIR [--config.X=V ...]``.

Trains, checkpoints (resuming automatically from the latest checkpoint in DIR) and evaluates; writes
the resolved config (``config.json``), ``metrics.jsonl``, TensorBoard events, ``eval.json`` and the
per-class AP plot to DIR.  Config mistakes fail at once, before any data or model is built.
"""
from __future__ import annotations

import os
import sys

from ltjax.config import ConfigError, load_saved_config, parse_cli, resolve_config, run_cli, save_config

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


# Fields a resumed run may change: how it runs (devices, processes, readers, display, evaluation), not
# what it computes (the global batch, data order and every hyper-parameter stay fixed).
RESUMABLE_PREFIXES = (
    "mesh.",
    "distributed.",
    "eval.",
    "data.num_workers",
    "data.read_threads",
    "data.prefetch_batches",
    "data.eval_batch_size",
    "train.progress_bar",
    "train.keep_checkpoints",
)


def _check_same_run(config, workdir: str) -> None:
    """A workdir holds one run: resuming with a different config would silently mix two runs."""
    if not os.path.exists(os.path.join(workdir, "config.json")):
        return
    saved = load_saved_config(workdir)
    old, new = _flatten(saved.to_dict()), _flatten(config.to_dict())
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    diff = [k for k in diff if not k.startswith(RESUMABLE_PREFIXES)]
    added = [k for k in diff if k not in old]
    if added:  # fields a later ltjax added: the saved run computed what their defaults compute
        from ltjax.defaults import experiment_config

        try:
            defaults = _flatten(experiment_config(config.data.name, config.model.name, config.method.name).to_dict())
        except Exception:  # noqa: BLE001 - no defaults to compare with: every added field counts as a change
            defaults = {}
        diff = [k for k in diff if not (k in added and k in defaults and defaults[k] == new[k])]
    if not diff:
        return
    raise ConfigError(
        f"{workdir} already holds a run with a different config (fields that differ: {', '.join(diff)}); "
        "use a new --workdir, or the same config to resume that run"
    )


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def main(argv=None) -> int:
    args = parse_cli(argv, prog="python -m ltjax.train", description=DESCRIPTION)
    config = resolve_config(args)
    validate_config(config)
    _check_same_run(config, args.workdir)

    from ltjax.training import devices

    devices.initialize_distributed(config.distributed)  # before any other jax call
    devices.enable_compilation_cache()
    import jax

    from ltjax.assets import AssetUnavailableError
    from ltjax.training.loop import NonFiniteLossError, train_and_evaluate

    if jax.process_index() == 0:
        save_config(config, args.workdir)
    try:
        train_and_evaluate(config, args.workdir)
    except (NonFiniteLossError, AssetUnavailableError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
