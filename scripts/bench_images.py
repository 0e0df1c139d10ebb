"""Image input pipeline throughput: decoded (and augmented) images per second through the grain pipeline.

Writes N VOC-sized JPEGs (500x375, smooth shapes + mild noise, JPEG quality 90: about the size and
decode cost of VOC photos), puts them behind the real dataset machinery (a Source ->
``dataset_from_source``: read in place, or the tensorflow-datasets array_record copy) and times the
training stream of ``ltjax.data.pipeline.train_dataset`` (sampler -> read -> decode -> crop/resize ->
flip -> photometric -> normalise -> stacked batch) epoch by epoch, with and without the decoded-image
cache (``data.cache_images``), in-process (grain read threads) or with grain worker processes.  Epoch 1
fills the cache; later epochs show the cached rate.  The rate of an epoch leaves out its first batch,
whose time is reported on its own (in epoch 1 it includes starting grain's reader threads or worker
processes, which import ltjax and jax).  Also times the bare decode (PIL) and the evaluation
transform (decode + resize + normalise).  Prints a Markdown table and writes JSON.

  python scripts/bench_images.py                               # 512 images, 224 px, the default grid
  python scripts/bench_images.py --images 1142 --sizes 224 448 --workers 0 2 --json images.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time


def make_images(folder: str, n: int, seed: int = 0, size=(375, 500)) -> list[str]:
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        base = np.stack(
            [(np.sin(xx / rng.uniform(20, 80) + rng.uniform(0, 6)) * 60 + rng.uniform(60, 190)) for _ in range(3)],
            axis=-1,
        )
        img = Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            x1, y1 = x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 150))
            draw.ellipse((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        path = os.path.join(folder, f"{i:06d}.jpg")
        img.save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def device_rows(source, paths, labels, args, work) -> list[dict]:
    """The device-resident pipeline (``data.on_device``): building the store once (decode + resize in
    threads), then gather + DB augmentations + normalise as one jitted function, per batch."""
    import jax
    import numpy as np

    from ltjax.data import on_device as od
    from ltjax.data.sources import dataset_from_source, source_defaults
    from ltjax.defaults import base_config

    rows = []
    dev = jax.devices()[0]
    for size in args.sizes:
        cfg = source_defaults("image")
        cfg.groups = base_config().data.groups
        cfg.storage = "files"
        cfg.image_size = size
        ds = dataset_from_source(source, cfg)
        t = time.perf_counter()
        host = od.image_store(ds.split("train"), image_size=size, crop_min_ratio=cfg.crop_min_ratio)
        build_s = time.perf_counter() - t
        rows.append({"what": f"on_device store build (decode + resize to {host.inputs.shape[1]}, "
                             f"{min(16, os.cpu_count() or 1)} threads)", "size": size, "storage": "files",
                     "cache": "-", "workers": 0, "epoch": "-", "images_per_s": len(paths) / build_s})
        store = jax.device_put(host.inputs, dev)
        sizes = jax.device_put(host.sizes, dev)
        spec = od.AugmentSpec.from_transform(ds.train_transform)
        fn = jax.jit(lambda st, sz, idx, pos, key: od.augment_batch(st[idx], sz[idx], pos, key, spec))
        key = jax.random.key(0)
        rng = np.random.default_rng(0)
        steps = max(len(paths) // args.batch_size, 2) * args.epochs
        idx = [jax.device_put(rng.integers(0, len(paths), args.batch_size).astype(np.int32), dev) for _ in range(steps)]
        pos = [jax.device_put(np.arange(k * args.batch_size, (k + 1) * args.batch_size, dtype=np.uint32), dev)
               for k in range(steps)]
        t = time.perf_counter()
        jax.block_until_ready(fn(store, sizes, idx[0], pos[0], key))
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        for k in range(steps):
            out = fn(store, sizes, idx[k], pos[k], key)
        jax.block_until_ready(out)
        dt = time.perf_counter() - t
        assert out.shape == (args.batch_size, size, size, 3)
        rows.append({"what": f"on_device augmentation (jit gather + crop/resize + flip + photometric + normalise, "
                             f"{dev.platform})", "size": size, "storage": "device", "cache": "-", "workers": 0,
                     "epoch": "-", "images_per_s": steps * args.batch_size / dt, "first_batch_s": first_s})
        print(f"  on_device size {size}: store {build_s:.1f} s, augmentation "
              f"{rows[-1]['images_per_s']:.1f} images/s (compile {first_s:.1f} s)", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--sizes", type=int, nargs="+", default=[224])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="epochs per setting (epoch 1 fills the cache)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="grain worker processes (0 = in-process)")
    p.add_argument("--storages", nargs="+", default=["files", "array_record"], choices=["files", "array_record"])
    p.add_argument("--read-threads", type=int, default=2)
    p.add_argument("--dir", default="", help="work folder for the JPEGs and the array_record copy (default: a temp dir)")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--no-device", action="store_true", help="skip the device-resident pipeline rows (data.on_device)")
    p.add_argument("--real-devices", action="store_true", help="device rows on the accelerator (default: CPU)")
    args = p.parse_args(argv)
    if not args.real_devices:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from ltjax.data.images import ImageTransform, decode_image
    from ltjax.data.pipeline import train_dataset
    from ltjax.data.sampling import UniformSampler
    from ltjax.data.sources import Source, SourceSplit, dataset_from_source, source_defaults
    from ltjax.defaults import base_config

    work = args.dir or tempfile.mkdtemp(prefix="ltjax-bench-images-")
    t0 = time.perf_counter()
    paths = make_images(os.path.join(work, "jpeg"), args.images)
    mean_kb = np.mean([os.path.getsize(q) for q in paths]) / 1024
    print(f"{len(paths)} JPEGs 500x375 (mean {mean_kb:.0f} KB) written in {time.perf_counter() - t0:.1f} s to {work}")
    rng = np.random.default_rng(0)
    labels = (rng.random((len(paths), 20)) < 0.1).astype(np.float32)
    ids = [os.path.basename(q) for q in paths]
    split = SourceSplit(ids, paths, labels)
    source = Source("bench_images", "image", [f"c{i}" for i in range(20)], {"train": split, "test": split})

    rows = []
    # bare decode, one thread
    t = time.perf_counter()
    for q in paths:
        decode_image(q)
    dt = time.perf_counter() - t
    rows.append({"what": "decode only (PIL, 1 thread)", "size": "-", "storage": "files", "cache": "-", "workers": 0,
                 "epoch": "-", "images_per_s": len(paths) / dt})
    for size in args.sizes:
        ev = ImageTransform(size=size, train=False)
        t = time.perf_counter()
        for q in paths:
            ev({"inputs": q, "labels": labels[0]})
        dt = time.perf_counter() - t
        rows.append({"what": "eval transform (decode+resize+normalise, 1 thread)", "size": size, "storage": "files",
                     "cache": "-", "workers": 0, "epoch": "-", "images_per_s": len(paths) / dt})
    for storage in args.storages:
        for size in args.sizes:
            for cache in (False, True):
                for workers in args.workers:
                    cfg = source_defaults("image")
                    cfg.groups = base_config().data.groups
                    cfg.storage = storage
                    cfg.prepared_dir = os.path.join(work, "prepared")
                    cfg.image_size = size
                    cfg.cache_images = cache
                    t = time.perf_counter()
                    ds = dataset_from_source(source, cfg)
                    build_s = time.perf_counter() - t
                    train = ds.split("train")
                    steps_per_epoch = len(train) // args.batch_size
                    it = iter(train_dataset(
                        train, UniformSampler(len(train), 0), args.batch_size, steps_per_epoch * args.epochs,
                        transform=ds.train_transform, seed=0, process_index=0, process_count=1,
                        num_workers=workers, read_threads=args.read_threads,
                    ))
                    steady_t0 = None
                    for epoch in range(1, args.epochs + 1):
                        t = time.perf_counter()
                        batch = next(it)
                        first_s = time.perf_counter() - t  # epoch 1: includes starting the reader / workers
                        if steady_t0 is None:
                            steady_t0 = time.perf_counter()
                        t = time.perf_counter()
                        for _ in range(steps_per_epoch - 1):
                            batch = next(it)
                        dt = time.perf_counter() - t
                        assert batch["inputs"].shape == (args.batch_size, size, size, 3)
                        rows.append({
                            "what": "train stream (DB augmentations)", "size": size, "storage": storage,
                            "cache": "on" if cache else "off", "workers": workers, "epoch": epoch,
                            "images_per_s": (steps_per_epoch - 1) * args.batch_size / dt,
                            "first_batch_s": first_s,
                            "build_s": build_s if epoch == 1 else None,
                        })
                        print(f"  {storage:12s} size {size} cache {'on ' if cache else 'off'} workers {workers} "
                              f"epoch {epoch}: {rows[-1]['images_per_s']:.1f} images/s "
                              f"(first batch {first_s:.2f} s)", flush=True)
                    steady_s = time.perf_counter() - steady_t0
                    # every epoch after the very first batch: with worker processes a short epoch can be
                    # served from their read-ahead, so this is the rate to compare across settings
                    rows.append({
                        "what": "train stream, all epochs after the first batch", "size": size, "storage": storage,
                        "cache": "on" if cache else "off", "workers": workers, "epoch": f"1-{args.epochs}",
                        "images_per_s": (steps_per_epoch * args.epochs - 1) * args.batch_size / steady_s,
                    })
                    if hasattr(it, "close"):
                        it.close()
                    del it

    if not args.no_device:
        rows += device_rows(source, paths, labels, args, work)

    print()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"batch {args.batch_size}, read threads {args.read_threads}")
    print()
    print("| what | size | storage | cache | workers | epoch | images/s | first batch s |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for r in rows:
        first = f"{r['first_batch_s']:.2f}" if "first_batch_s" in r else "-"
        print(f"| {r['what']} | {r['size']} | {r['storage']} | {r['cache']} | {r['workers']} | {r['epoch']} | "
              f"{r['images_per_s']:.1f} | {first} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "mean_jpeg_kb": mean_kb, "cpus": os.cpu_count(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
