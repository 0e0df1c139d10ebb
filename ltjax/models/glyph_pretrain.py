"""The tiles world's ImageNet: GlyphNet weights pretrained by ltjax on single glyphs (``model.pretrained="glyphs"``).

What it trains on: every digit image of the TRAINING half of the MNIST subset behind ``tiles_voc_lt``
(:func:`ltjax.data.tiles.mnist_pools`: the first 250 rows of each digit; the test half, whose glyphs make
the test images, is never read), drawn in both glyph colours, ``copies`` times each at a random place on a
``canvas`` x ``canvas`` image with the dataset's background (:func:`ltjax.data.tiles.compose_image` with
one class), glyphs of ``glyph`` px: 2,500 x 2 x ``copies`` images.  Each is labelled with its digit
(``labels = "digit"``, 10-way, the default) or with its glyph kind (``"kind"``: digit x colour, exactly
the 20 classes of ``tiles_voc_lt``).  The default teaches shapes, not the target label set: like ImageNet
for VOC, the network knows what digits look like, and which colour goes with which digit in a
multi-glyph image is left to the long-tailed fine-tuning (the 20-way variant hands every tail class
500 balanced examples before the benchmark starts, and the benchmark stops measuring the long tail).
Every image comes from ``numpy.random.default_rng([seed, 2, i])``.

How: the GlyphNet trunk of the model config (widths / convs / stem_stride), a global max pool and a
linear softmax classifier; BatchNorm in training mode; Adam (``lr``, warm-up then cosine decay to
0 over ``steps``), batches of ``batch_size`` drawn as seeded epoch permutations; on every example the
photometric jitter of the tiles recipe (brightness, contrast, saturation, hue +-18 degrees: the colours
stay apart), on the device, keyed by ``fold_in(key(seed), step)``.  Images are normalised with the
ImageNet statistics, as the image pipeline does.  One jitted step; written here rather than through
``ltjax.train`` because it is a single-label softmax task on a fixed in-memory array that must run on
first use inside another run, with no workdir of its own.

Cache: ``<cache>/glyphnet/<key>/`` (``<cache>`` = :func:`ltjax.assets.cache_dir`), ``key`` = sha256 of the
pretraining fields, the architecture, the MNIST file's sha256 and :data:`VERSION`; it holds
``weights.msgpack`` (the trunk's ``{"params", "batch_stats"}``, flax msgpack) and ``manifest.json`` (the
fields, the training curve's end, the wall time).  Written under a temporary name and renamed, so a
killed or concurrent build never leaves a half-written cache.  Any change of those inputs gives a new key.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time

import ml_collections
import numpy as np

VERSION = 1  # bump when the same fields would give different weights
NUM_KINDS = 20
LABELS = {"digit": 10, "kind": 20}  # model.pretrain.labels -> number of pretraining classes
SPLIT_CODE = 2  # rng stream of the pretraining images (tiles uses 0 train, 1 test)


def pretrain_defaults() -> ml_collections.ConfigDict:
    """``model.pretrain``: the single-glyph pretraining's fields (module docstring)."""
    c = ml_collections.ConfigDict()
    c.canvas = 40  # px side of a pretraining image
    c.glyph = 20  # px side of a glyph (configs/tiles_voc_lt.py's glyph_size)
    c.background = "noise"  # tiles_voc_lt's background
    c.copies = 2  # placements of each (digit image, colour)
    c.steps = 600
    c.batch_size = 64
    c.lr = 2e-3
    c.warmup_steps = 50
    c.photometric = True
    # "digit" (10-way): what the network must know is the glyph's shape, as ImageNet teaches objects but not
    # the target label set; "kind" (20-way digit x colour) teaches exactly tiles_voc_lt's 20 classes on
    # balanced data, which erases the long tail (frozen-feature BCE 95.0 mAP, head 95.9 / tail 94.2, seed 0)
    c.labels = "digit"
    c.seed = 0
    return c


def _fields(cfg) -> dict:
    p = cfg.pretrain
    fields = {
        "canvas": int(p.canvas), "glyph": int(p.glyph), "background": str(p.background), "copies": int(p.copies),
        "steps": int(p.steps), "batch_size": int(p.batch_size), "lr": float(p.lr),
        "warmup_steps": int(p.warmup_steps), "photometric": bool(p.photometric), "labels": str(p.labels),
        "seed": int(p.seed),
    }
    if fields["labels"] not in LABELS:
        raise ValueError(f"model.pretrain.labels must be one of {', '.join(LABELS)}, got {fields['labels']!r}")
    if fields["glyph"] > fields["canvas"] or fields["glyph"] < 8:
        raise ValueError(f"model.pretrain.glyph must lie in 8..model.pretrain.canvas ({fields['canvas']}), "
                         f"got {fields['glyph']}")
    for k in ("copies", "steps", "batch_size"):
        if fields[k] < 1:
            raise ValueError(f"model.pretrain.{k} must be a positive int, got {fields[k]}")
    if not fields["lr"] > 0:
        raise ValueError(f"model.pretrain.lr must be positive, got {fields['lr']}")
    return fields


def _arch(cfg) -> dict:
    return {"widths": [int(w) for w in cfg.widths], "convs": int(cfg.convs), "stem_stride": int(cfg.stem_stride)}


def cache_key(cfg) -> str:
    """The cache key of the pretraining of model config ``cfg`` (resolved glyphnet fields)."""
    from ltjax.data import tiles

    src = json.dumps({"version": VERSION, "arch": _arch(cfg), "pretrain": _fields(cfg),
                      "mnist_sha256": tiles.MNIST_ASSET.member_sha256}, sort_keys=True)
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def cache_folder(cfg) -> pathlib.Path:
    from ltjax import assets

    return assets.cache_dir() / "glyphnet" / cache_key(cfg)


# ---------------------------------------------------------------------------------------------------
# the data


def single_glyph_set(fields: dict, mnist=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images uint8 [N, canvas, canvas, 3], kinds int32 [N], mnist_rows int64 [N])``: every training-half
    MNIST row in both colours, ``copies`` times; kind = digit + 10 * colour (the tiles class index)."""
    from ltjax.data import tiles

    images, digits = tiles.load_mnist() if mnist is None else mnist
    pools = tiles.mnist_pools(digits)["train"]
    glyphs = tiles.scale_glyphs(images, fields["glyph"])
    out_images, kinds, rows = [], [], []
    i = 0
    for _ in range(fields["copies"]):
        for digit in range(10):
            for row in pools[digit]:
                for colour in range(2):
                    kind = digit + 10 * colour
                    one = [np.asarray([row]) if d == digit else np.zeros(0, np.int64) for d in range(10)]
                    rng = np.random.default_rng([fields["seed"], SPLIT_CODE, i])
                    img, _ = tiles.compose_image([kind], rng, glyphs, one, canvas=fields["canvas"],
                                                 glyph=fields["glyph"], max_instances=1,
                                                 background=fields["background"])
                    out_images.append(img)
                    kinds.append(kind)
                    rows.append(int(row))
                    i += 1
    return np.stack(out_images), np.asarray(kinds, np.int32), np.asarray(rows, np.int64)


# ---------------------------------------------------------------------------------------------------
# training


def pretrain(cfg, mnist=None, log=None) -> tuple[dict, dict]:
    """Train the trunk of glyphnet config ``cfg``: ``(trunk variables {"params", "batch_stats"}, info)``."""
    import jax
    import jax.numpy as jnp
    import optax

    from ltjax.data import images as host_images
    from ltjax.data import on_device
    from ltjax.models.classifier import Backbone, Classifier
    from ltjax.models.glyphnet import trunk_from_config
    from ltjax.models.heads import LinearHead
    from ltjax.models.necks import GAPNeck

    fields = _fields(cfg)
    t0 = time.perf_counter()
    images, kinds, _ = single_glyph_set(fields, mnist)
    render_s = time.perf_counter() - t0
    trunk_cfg = ml_collections.ConfigDict(cfg.to_dict())
    trunk_cfg.frozen_stages, trunk_cfg.norm_eval = -1, False
    model = Classifier(backbone=Backbone(trunk=trunk_from_config(trunk_cfg), neck=GAPNeck(pool="max")),
                       head=LinearHead(LABELS[fields["labels"]]))
    key = jax.random.key(fields["seed"])
    k_init, k_aug = jax.random.split(key)
    variables = model.init(k_init, jnp.zeros((1, *images.shape[1:]), jnp.float32), train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    schedule = optax.warmup_cosine_decay_schedule(0.0, fields["lr"], min(fields["warmup_steps"], fields["steps"] - 1),
                                                  fields["steps"])
    tx = optax.adam(schedule)
    opt_state = tx.init(params)
    store = jnp.asarray(images)
    labels = jnp.asarray(kinds % 10 if fields["labels"] == "digit" else kinds)
    mean = jnp.asarray(host_images.IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(host_images.IMAGENET_STD, jnp.float32)

    def inputs(index, step):
        x = jnp.take(store, index, axis=0).astype(jnp.float32)
        if fields["photometric"]:
            keys = jax.vmap(lambda p: jax.random.fold_in(jax.random.fold_in(k_aug, step), p))(jnp.arange(len(index)))
            x = jax.vmap(lambda im, k: on_device.photometric_apply(im, on_device.photometric_params(k)))(x, keys)
        return (x - mean) / std

    @jax.jit
    def step_fn(params, batch_stats, opt_state, index, step):
        x, y = inputs(index, step), jnp.take(labels, index)

        def loss_fn(p):
            out, updates = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                       mutable=["batch_stats"])
            logits = out["logits"]
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (updates["batch_stats"], jnp.mean(jnp.argmax(logits, -1) == y))

        (loss, (new_stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss, acc

    rng = np.random.default_rng([fields["seed"], SPLIT_CODE])
    order, pos = rng.permutation(len(images)), 0
    curve = []
    for step in range(fields["steps"]):
        if pos + fields["batch_size"] > len(order):
            order, pos = rng.permutation(len(images)), 0
        index = order[pos : pos + fields["batch_size"]]
        pos += fields["batch_size"]
        params, batch_stats, opt_state, loss, acc = step_fn(params, batch_stats, opt_state, jnp.asarray(index), step)
        curve.append((float(loss), float(acc)) if (step + 1) % 50 == 0 or step + 1 == fields["steps"] else None)
        if log is not None and (step + 1) % 200 == 0:
            log(f"glyphnet pretraining: step {step + 1}/{fields['steps']} loss {float(loss):.4f} acc {float(acc):.3f}")
    tail = [c for c in curve if c is not None][-4:]
    info = {
        "images": int(len(images)), "render_seconds": round(render_s, 2),
        "train_seconds": round(time.perf_counter() - t0 - render_s, 2),
        "final_loss": float(np.mean([c[0] for c in tail])), "final_accuracy": float(np.mean([c[1] for c in tail])),
        "mnist_rows": "the first half of each digit's rows (tiles_voc_lt's training half) only",
    }
    trunk = {"params": jax.device_get(params["backbone"]["trunk"]),
             "batch_stats": jax.device_get(batch_stats["backbone"]["trunk"])}
    return trunk, info


# ---------------------------------------------------------------------------------------------------
# the cache


def _read(path) -> dict:
    from flax import serialization

    try:
        tree = serialization.msgpack_restore(pathlib.Path(path).read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"glyphnet weights file {os.fspath(path)!r} does not exist; set model.pretrained "
                                "to 'glyphs' (pretrained and cached on first use) or to a file it wrote") from None
    except Exception as e:  # noqa: BLE001 - msgpack raises several types
        raise ValueError(f"{os.fspath(path)!r} is not a glyphnet weights file ({type(e).__name__}: {e}); "
                         "delete it and let model.pretrained='glyphs' rebuild it") from None
    if not isinstance(tree, dict) or set(tree) != {"params", "batch_stats"}:
        raise ValueError(f"{os.fspath(path)!r} is not a glyphnet weights file (expected params and batch_stats)")
    return tree


def ensure_pretrained(cfg, log=None) -> tuple[pathlib.Path, dict]:
    """The cached weights file of ``cfg``'s pretraining, trained now if absent: ``(path, manifest)``."""
    from flax import serialization

    folder = cache_folder(cfg)
    weights, manifest_path = folder / "weights.msgpack", folder / "manifest.json"
    if weights.is_file() and manifest_path.is_file():
        return weights, {**json.loads(manifest_path.read_text()), "built_now": False}
    from ltjax import assets

    assets.make_cache_folder(folder.parent)
    trunk, info = pretrain(cfg, log=log)
    manifest = {"version": VERSION, "arch": _arch(cfg), "pretrain": _fields(cfg), **info}
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        (tmp / "weights.msgpack").write_bytes(serialization.msgpack_serialize(trunk))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if folder.exists():  # incomplete (a file deleted by hand): replace it
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first: use its copy
            if not weights.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return weights, {**manifest, "built_now": True}


def trunk_weights(cfg, pretrained, log=None) -> tuple[dict, str]:
    """``(trunk variables, description)`` for ``model.pretrained``: "glyphs" or a weights file."""
    if str(pretrained) == "glyphs":
        path, manifest = ensure_pretrained(cfg, log=log)
        how = "trained now" if manifest["built_now"] else "cached"
        return _read(path), f"single-glyph pretraining {path.parent.name} ({how})"
    return _read(os.path.expanduser(str(pretrained))), os.fspath(pretrained)
