"""Command line: ``python -m ltjax.predict --workdir DIR --inputs PATH [--out scores.csv] [--step N]``, and
:func:`predict` for in-memory inputs.

Scores new examples with a trained run: its own config, evaluation transform (resize / normalise for images,
the run's tokenizer for documents) and weights (the checkpoint ``train.select_on`` chose when the run has a
selection, else the newest intact one; the EMA weights when the run keeps an EMA, as the evaluation does),
batched and sharded over the local devices with a progress bar.  ``--inputs`` by the run's kind of data:

* images: a folder (its image files, sorted by name), a ``.txt`` list of paths, or a ``.csv`` / ``.jsonl``
  manifest with a ``path`` column (paths relative to the list's folder);
* documents: a ``.txt`` file (one document per line), a ``.jsonl`` or ``.csv`` file with a ``text`` column;
* feature vectors: a ``.npy`` array [N, D].

Writes a CSV: the input (path, or line number), the predicted label set (the classes scored at or above the
run's thresholds: those tuned on its validation split when it has them, ``eval.thresholds``, else
``eval.threshold``; joined by ``|``), and one score column per class; and ``<out>.json`` with the checkpoint
and thresholds used.  The run's classes, vocabulary and evaluation transform come from its dataset
snapshot (:mod:`ltjax.data.snapshot`, written when it trained), so the training data need not be on this
machine; a run without a snapshot builds its dataset as ``ltjax.evaluate`` does.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import sys

import numpy as np

from ltjax.config import load_saved_config, parse_cli, resolve_config, run_cli
from ltjax.errors import UserError

DESCRIPTION = "Score new images, documents or feature vectors with a trained ltjax run."
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class PredictInputError(ValueError, UserError):
    """Inputs the run's kind of data cannot read; the message says what it takes."""


# ---- reading inputs ------------------------------------------------------------------------------------


def _rows_of(path: str, column: str) -> list[tuple[str, str]]:
    """(id, value) of each row of a .csv / .jsonl with ``column``."""
    out = []
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise PredictInputError(f"{path}:{line_no}: not JSON ({e})") from None
                if column not in rec:
                    raise PredictInputError(f"{path}:{line_no}: no {column!r} key; each line needs one")
                out.append((str(rec.get("id", line_no)), rec[column]))
        return out
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise PredictInputError(f"{path}: no {column!r} column (columns: {', '.join(reader.fieldnames or [])})")
        for line_no, rec in enumerate(reader, 2):
            out.append((str(rec.get("id") or line_no), rec[column]))
    return out


def read_inputs(path: str, kind: str) -> tuple[list[str], list]:
    """``(ids, items)`` from ``path`` for a run whose examples are ``kind`` ("image", "text", "features")."""
    if not os.path.exists(path):
        raise PredictInputError(f"--inputs {path} does not exist")
    takes = {"image": "a folder of images, a .txt list of image paths, or a .csv/.jsonl manifest with a 'path' column",
             "text": "a .txt file (one document per line), or a .jsonl/.csv file with a 'text' column",
             "features": "a .npy array [N, D] of feature vectors"}[kind]
    suffix = os.path.splitext(path)[1].lower()
    if kind == "features":
        if suffix != ".npy":
            raise PredictInputError(f"this run's examples are feature vectors; --inputs must be {takes}, got {path}")
        x = np.load(path, allow_pickle=False)
        return [str(i) for i in range(len(x))], list(np.asarray(x, np.float32))
    if kind == "image":
        base = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
            if not names:
                raise PredictInputError(f"--inputs {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            rows = [(n, n) for n in names]
        elif suffix == ".txt":
            with open(path, encoding="utf-8") as f:
                rows = [(ln.strip(), ln.strip()) for ln in f if ln.strip()]
        elif suffix in (".csv", ".jsonl"):
            rows = [(i, p) for i, p in _rows_of(path, "path")]
        else:
            raise PredictInputError(f"this run's examples are images; --inputs must be {takes}, got {path}")
        items = [p if os.path.isabs(p) else os.path.join(base, p) for _, p in rows]
        missing = [p for p in items if not os.path.isfile(p)]
        if missing:
            raise PredictInputError(f"{len(missing)} image file(s) of --inputs do not exist, e.g. {missing[0]}")
        from ltjax.data.images import unreadable_images

        bad = unreadable_images(items)
        if bad:
            raise PredictInputError(f"{len(bad)} input file(s) are not readable images, e.g. {bad[0][0]}: {bad[0][1]}")
        return [r[0] for r in rows], items
    # text
    if suffix == ".txt":
        with open(path, encoding="utf-8") as f:
            docs = [ln.rstrip("\n") for ln in f]
        while docs and not docs[-1].strip():
            docs.pop()
        return [str(i) for i in range(1, len(docs) + 1)], docs
    if suffix in (".csv", ".jsonl"):
        rows = _rows_of(path, "text")
        return [r[0] for r in rows], [str(r[1]) for r in rows]
    raise PredictInputError(f"this run's examples are documents; --inputs must be {takes}, got {path}")


# ---- scoring ----------------------------------------------------------------------------------------


def load_run(workdir: str, step: int | None = None, config=None, *, use_snapshot: bool = True):
    """``(experiment, state, step)`` of a trained run, as ``ltjax.evaluate`` restores it.  With
    ``use_snapshot`` (and a run that has one) the dataset is the run's snapshot (:mod:`ltjax.data.snapshot`:
    metadata, labels and the eval transform, no examples), so the run's data need not be here."""
    from ltjax.data import snapshot
    from ltjax.errors import SnapshotError, UserError
    from ltjax.training.loop import Experiment

    config = config if config is not None else load_saved_config(workdir)
    if config.data.get("frozen_features", ""):
        raise PredictInputError(
            f"{workdir} was trained on stored backbone features (data.frozen_features); predicting raw inputs "
            "needs the backbone: train without data.frozen_features, or score stored features with ltjax.evaluate")
    dataset = snapshot.load(workdir, config.data) if use_snapshot else None
    if dataset is not None:
        if config.data.get("on_device", False):  # no device store: predict feeds its inputs from the host
            config = copy.deepcopy(config)
            config.data.on_device = False
        exp = Experiment(config, dataset)
    else:
        try:
            exp = Experiment(config)
        except UserError as e:
            if not use_snapshot:
                raise
            raise SnapshotError(
                f"{e}\n\n{workdir} has no usable dataset snapshot ({snapshot.SNAPSHOT_JSON}; runs trained before "
                "ltjax wrote them, or a dataset whose transform a snapshot cannot rebuild), so predict needs the "
                "run's data; run `python -m ltjax.evaluate --workdir "
                f"{workdir}` once where the data is, and predict works without it from then on") from e
    selected = exp.restore_selected(workdir) if step is None else None
    if selected is not None:
        state, step = selected[0], selected[1]
    else:
        state, step = exp.restore(workdir, step)
    return exp, state, int(step)


def score(exp, state, items, *, progress: bool = False) -> np.ndarray:
    """Scores [N, C] of in-memory ``items`` (image paths / encoded bytes / uint8 [H, W, 3] arrays, documents,
    or feature vectors) through the run's evaluation transform and weights, sharded over the devices."""
    import jax

    from ltjax.data.base import ArraySplit
    from ltjax.data.pipeline import eval_batches, to_global
    from ltjax.training.feed import gather_valid
    from ltjax.training.loop import _reported_weights
    from ltjax.training.step import make_eval_step

    n, c = len(items), exp.meta.num_classes
    if n == 0:
        return np.zeros((0, c), np.float32)
    objs = np.empty(n, dtype=object)
    objs[:] = list(items)
    inputs = np.stack(list(items)).astype(np.float32) if exp.meta.input_kind == "features" else objs
    split = ArraySplit(inputs, np.zeros((n, c), np.float32))
    weights, _, _ = _reported_weights(exp, state)
    step = make_eval_step(exp.model, exp.method, exp.dtype, exp.config.method)
    fn = jax.jit(lambda p, bs, ms, x: step(p, bs, x, ms), out_shardings=exp.batch_sharding)
    batches = eval_batches(split, int(exp.config.data.eval_batch_size), transform=exp.dataset.eval_transform)
    if progress:
        from tqdm import tqdm

        total = -(-n // int(exp.config.data.eval_batch_size))
        batches = tqdm(batches, total=total, desc="predict", file=sys.stderr)
    outs, valid = [], []
    for b in batches:
        g = to_global({"inputs": b["inputs"], "valid": b["valid"]}, exp.batch_sharding)
        outs.append(fn(weights, state.batch_stats, state.method_state, g["inputs"]))
        valid.append(g["valid"])
    return np.asarray(gather_valid(outs, valid), np.float32)


def predict(workdir: str, items, *, step: int | None = None) -> dict:
    """The Python entry point: ``{"scores" [N, C], "predicted" (label lists), "class_names", "threshold",
    "step"}`` for in-memory ``items`` (see :func:`score`)."""
    exp, state, step = load_run(workdir, step)
    scores = score(exp, state, items)
    names = list(exp.meta.class_names)
    threshold = run_thresholds(workdir, exp)
    predicted = [[names[j] for j in np.flatnonzero(row >= threshold)] for row in scores]
    return {"scores": scores, "predicted": predicted, "class_names": names, "threshold": threshold, "step": step}


def run_thresholds(workdir: str, exp) -> np.ndarray:
    """[C] decision thresholds: the run's tuned ones (``thresholds.json``, ``eval.thresholds``), else
    ``eval.threshold`` for every class."""
    from ltjax import thresholds

    tuned = thresholds.load(workdir, exp.meta.class_names)
    return tuned if tuned is not None else np.full(exp.meta.num_classes, float(exp.config.eval.threshold))


def write_csv(path: str, ids, scores, class_names, threshold: float) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["input", "predicted", *class_names])
        for i, row in zip(ids, scores):
            labels = "|".join(class_names[j] for j in np.flatnonzero(row >= threshold))
            w.writerow([i, labels, *(f"{v:.6g}" for v in row)])
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_cli(argv, prog="python -m ltjax.predict", description=DESCRIPTION, require_config=False,
                     accept_config=False,
                     extra_flags={"inputs": "images (folder, list, manifest), documents (.txt/.jsonl/.csv) or "
                                            "features (.npy)",
                                  "out": "the CSV to write (default: WORKDIR/predictions.csv)",
                                  "step": "checkpoint step (default: the selected one, else the newest intact)"})
    if "inputs" not in args.extra:
        from ltjax.errors import ConfigError

        raise ConfigError("python -m ltjax.predict needs --inputs PATH (run it with --help for the formats)")
    from ltjax.evaluate import _parse_step

    step = _parse_step(args.extra.get("step"))
    config = resolve_config(args, base=load_saved_config(args.workdir))
    out = args.extra.get("out") or os.path.join(args.workdir, "predictions.csv")
    from ltjax.training.workdir import check_usable

    check_usable(os.path.dirname(os.path.abspath(out)), hint="pass --out PATH in a folder you can write to")
    from ltjax.training import devices

    devices.initialize_distributed(config.distributed)
    devices.enable_compilation_cache()
    exp, state, step = load_run(args.workdir, step, config)
    ids, items = read_inputs(args.extra["inputs"], exp.meta.input_kind)
    scores = score(exp, state, items, progress=True)
    import jax

    if jax.process_index() == 0:
        threshold = run_thresholds(args.workdir, exp)
        write_csv(out, ids, scores, list(exp.meta.class_names), threshold)
        has_ema = bool(jax.tree.leaves(state.ema)) and bool(config.eval.get("use_ema", True))
        meta = {"workdir": os.path.abspath(args.workdir), "inputs": os.path.abspath(args.extra["inputs"]),
                "num_inputs": len(ids), "step": step, "weights": "ema" if has_ema else "raw",
                "thresholds": [float(t) for t in threshold],
                "thresholds_from": "thresholds.json (eval.thresholds, tuned on the val split)"
                if os.path.exists(os.path.join(args.workdir, "thresholds.json")) else "eval.threshold",
                "class_names": list(exp.meta.class_names)}
        with open(out + ".json", "w") as f:
            json.dump(meta, f, indent=2)
        print(f"scored {len(ids)} inputs with the checkpoint of step {step} ({meta['weights']} weights); "
              f"wrote {out} and {out}.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
