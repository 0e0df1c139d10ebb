"""Frozen-feature runs (``data.frozen_features``): the frozen backbone runs once per image, training runs on
what it produced.

With ``data.frozen_features = "map"`` (the trunk's spatial feature map ``[h, w, c]``) or ``"pooled"`` (that
map through the neck's global pool, ``[c]``), :class:`FrozenFeatures`:

1. builds the method's full image model and its initial variables exactly as a fine-tuning run would
   (the seed's ``init`` key, then ``model.pretrained``);
2. runs the trunk in evaluation mode (BatchNorm running statistics, no augmentation: the dataset's
   evaluation transform) over every image of every split, once, and stores the results as float32
   ``.npy`` files with the prepared data, under ``<prepared_dir>/ltjax_frozen_features/<dataset>/<key>/``
   (``prepared_dir`` = ``data.prepared_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``).
   ``key`` hashes what the features depend on: the dataset's metadata (with the prepared copy's
   fingerprint) and label matrices, every split's items when they are read in place, the evaluation transform, ``config.model``, the level and the bytes of the trunk's weights; a
   run with the same inputs reuses the files, any change gives a new key.  Files are written under a
   temporary name and renamed;
3. gives the run a features dataset (in-memory splits; ``data.on_device=true`` places them on the
   devices when they fit ``data.device_max_gb``) and the same model with its trunk replaced by the stored
   features (:func:`swap_trunk`), so everything on top of the backbone (neck, head, HMT-Net's group heads,
   the decoupled methods' phases) trains unchanged, with the same initial values (Flax derives each
   parameter's key from its path, which the swap keeps).  A training split with hidden positives
   (``data.missing_ratio``) stays one, so its batches still carry ``hidden`` (COMIC's recall counts).

What this equals: a fine-tuning run with the whole trunk frozen (``model.frozen_stages`` = all stages,
``model.norm_eval = true``) and ``data.augment = false`` computes the same losses (tested).  With
augmentation a frozen-feature run sees the un-augmented images only; that is the price of computing the
backbone once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ltjax.data.base import ArraySplit, Dataset
from ltjax.data.partial import PartialLabelSplit
from ltjax.models.classifier import Backbone
from ltjax.models.necks import global_pool

LEVELS = ("map", "pooled")
VERSION = 1
BATCH = 128


class StoredFeatures(nn.Module):
    """The trunk of a frozen-feature model: its input already is the trunk's output."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        del train
        return x


def _swap(module, found: list, path: tuple):
    if isinstance(module, Backbone):
        found.append((path, module))
        return module.clone(trunk=StoredFeatures())
    updates = {}
    for field in dataclasses.fields(module):
        if field.name in ("parent", "name"):
            continue
        value = getattr(module, field.name, None)
        if isinstance(value, nn.Module):
            new = _swap(value, found, path + (field.name,))
            if new is not value:
                updates[field.name] = new
    return module.clone(**updates) if updates else module


def swap_trunk(model: nn.Module):
    """``(model with its Backbone's trunk replaced by StoredFeatures, path of the Backbone in the params,
    the original Backbone)``.  The model must hold exactly one :class:`Backbone`."""
    found: list = []
    swapped = _swap(model, found, ())
    if len(found) != 1:
        raise ValueError(
            f"data.frozen_features needs a model with exactly one backbone (ltjax.models.Backbone), found "
            f"{len(found)} in {type(model).__name__}; this method's model cannot run on stored features"
        )
    path, backbone = found[0]
    return swapped, path, backbone


def _subtree(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _digest(tree) -> str:
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(tree), key=lambda kv: jax.tree_util.keystr(kv[0])):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(jax.tree_util.keystr(path).encode() + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _items_digest(split) -> str:
    h = hashlib.sha256()
    for i in range(len(split)):
        item = split[i]["inputs"]
        if isinstance(item, np.ndarray):
            item = item.tobytes() if item.ndim else item.item()
        h.update(item if isinstance(item, bytes) else str(item).encode())
        h.update(b"\0")
    return h.hexdigest()


def _features_split(features: np.ndarray, split):
    """The stored features as a split with ``split``'s labels; a split with hidden positives
    (``data.missing_ratio``) stays one, so a method still sees which observed zeros were hidden."""
    if isinstance(split, PartialLabelSplit):
        return PartialLabelSplit(ArraySplit(features, split.full_labels), split.hidden_pairs)
    return ArraySplit(features, split.labels)


class FrozenFeatures:
    """The features dataset and the trunk-less model of a frozen-feature run (module docstring)."""

    def __init__(self, config, dataset: Dataset, model: nn.Module, init_rng, dtype, log=print):
        level = str(config.data.frozen_features)
        if level not in LEVELS:
            raise ValueError(f"data.frozen_features must be '' (off) or one of {', '.join(LEVELS)}, got {level!r}")
        if dataset.meta.input_kind != "image" or dataset.eval_transform is None:
            raise ValueError(
                f"data.frozen_features runs an image backbone once per image; {dataset.meta.name} is a "
                f"{dataset.meta.input_kind} dataset: set data.frozen_features=''"
            )
        self.level = level
        self.model, self.backbone_path, backbone = swap_trunk(model)
        self.trunk = backbone.trunk
        self.pool = getattr(backbone.neck, "pool", "avg") if backbone.neck is not None else None
        if level == "pooled" and backbone.neck is None:
            raise ValueError("data.frozen_features='pooled' needs a model with a neck; use 'map'")
        variables = self._full_variables(config, dataset, model, init_rng)
        self.trunk_variables = {
            k: _subtree(variables[k], self.backbone_path + ("trunk",)) if variables.get(k) else {}
            for k in ("params", "batch_stats")
        }
        self.folder, self.info = self._ensure(config, dataset, dtype, log)
        splits = {name: _features_split(np.load(self.folder / f"{name}.npy"), dataset.split(name))
                  for name in dataset.splits}
        shape = tuple(splits["train"].inputs.shape[1:])
        meta = dataclasses.replace(
            dataset.meta, input_shape=shape, input_kind="features", input_dtype="float32",
            info={**dataset.meta.info, "frozen_features": {**self.info, "folder": str(self.folder)}},
        )
        self.dataset = Dataset(meta=meta, splits=splits)

    def describe(self) -> str:
        i = self.info
        how = f"computed in {i['seconds']:.1f} s" if i.get("computed_now") else "reused"
        shapes = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in i["shapes"].items())
        return f"frozen_features: {self.level} features ({shapes}) {how}: {self.folder}"

    # -- the full model's initial variables ------------------------------------------------------------

    @staticmethod
    def _full_variables(config, dataset, model, init_rng):
        from ltjax.training.step import init_variables

        from ltjax.models import load_configured_pretrained

        example = np.zeros((1, *dataset.meta.input_shape), np.float32)
        variables = jax.device_get(jax.jit(lambda k: init_variables(model, k, example))(init_rng))
        return load_configured_pretrained(config.model, variables)

    # -- extraction and cache ----------------------------------------------------------------------------

    def key(self, config, dataset) -> str:
        h = hashlib.sha256()
        t = dataset.eval_transform
        src = {
            "version": VERSION, "level": self.level, "pool": self.pool if self.level == "pooled" else None,
            "model": config.model.to_dict(), "meta": dataset.meta.to_dict(),
            "transform": repr(t) if not dataclasses.is_dataclass(t) else
            {f.name: repr(getattr(t, f.name)) for f in dataclasses.fields(t) if f.name != "cache"},
            "trunk": _digest(self.trunk_variables), "compute_dtype": str(config.train.compute_dtype),
        }
        h.update(json.dumps(src, sort_keys=True, default=str).encode())
        prepared = "prepared" in dataset.meta.info  # its fingerprint (in the meta above) covers the items
        for name in sorted(dataset.splits):
            split = dataset.split(name)
            h.update(name.encode() + np.ascontiguousarray(split.labels, np.uint8).tobytes())
            if not prepared:  # files read in place or in-memory splits: hash what each example holds
                h.update(_items_digest(split).encode())
        return h.hexdigest()[:16]

    def _ensure(self, config, dataset, dtype, log):
        from ltjax.data.prepared import default_prepared_dir

        root = pathlib.Path(default_prepared_dir(config.data.get("prepared_dir", ""))) / "ltjax_frozen_features"
        root = root / dataset.meta.name
        key = self.key(config, dataset)
        folder = root / key
        names = sorted(dataset.splits)
        if (folder / "features.json").is_file() and all((folder / f"{n}.npy").is_file() for n in names):
            info = json.loads((folder / "features.json").read_text())
            return folder, {**info, "computed_now": False}
        root.mkdir(parents=True, exist_ok=True)
        apply = self._apply_fn(dtype)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        t0 = time.perf_counter()
        try:
            shapes = {}
            for name in names:
                arr = self._extract(dataset.split(name), dataset.eval_transform, apply)
                np.save(tmp / f"{name}.npy", arr)
                shapes[name] = list(arr.shape)
            info = {"level": self.level, "pool": self.pool if self.level == "pooled" else None, "key": key,
                    "shapes": shapes, "seconds": round(time.perf_counter() - t0, 2)}
            (tmp / "features.json").write_text(json.dumps(info, indent=1, sort_keys=True))
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            try:
                os.rename(tmp, folder)
            except OSError:  # another process finished the same features first
                if not (folder / "features.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if log is not None:
            log(f"frozen_features: {self.level} features of {', '.join(f'{n} {s}' for n, s in shapes.items())} "
                f"computed in {info['seconds']:.1f} s -> {folder}")
        return folder, {**info, "computed_now": True}

    def _apply_fn(self, dtype):
        trunk, level, pool = self.trunk, self.level, self.pool
        variables = {k: v for k, v in self.trunk_variables.items() if v}

        @jax.jit
        def apply(x):
            y = trunk.apply(variables, jnp.asarray(x, dtype), train=False)
            if level == "pooled":
                y = global_pool(y, pool, jnp.float32)
            return y.astype(jnp.float32)

        return apply

    @staticmethod
    def _extract(split, transform, apply) -> np.ndarray:
        out = []
        n = len(split)
        for start in range(0, n, BATCH):
            idx = range(start, min(n, start + BATCH))
            x = np.stack([transform(split[i])["inputs"] for i in idx])
            if len(x) < BATCH and n > BATCH:  # one compiled shape: pad the last batch
                x = np.concatenate([x, np.zeros((BATCH - len(x), *x.shape[1:]), x.dtype)])
            out.append(np.asarray(apply(x))[: len(idx)])
        return np.concatenate(out)
