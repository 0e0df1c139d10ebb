"""Helpers shared by the benchmark scripts (``scripts/bench.py``; ``scripts/bench_step.py`` can use them too).

Nothing here imports jax at module import time, so a script can call :func:`configure_jax_env` (which
must run before jax is imported) after importing this module.  The JAX-side builders use ltjax's own
code: :func:`jax_experiment` builds ``ltjax.training.loop.Experiment`` (the model from the method
registry, the optimizer, the state shardings and the jitted, donated ``train_step``, exactly as
``python -m ltjax.train`` does) on an in-memory dataset whose metadata (class names, n_c, N, groups)
is the real dataset's, so every loss constant is the one a real run uses.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONFIGS = os.path.join(REPO, "configs")
if REPO not in sys.path:
    sys.path.insert(0, REPO)


# --------------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------------
def configure_jax_env(real_devices: bool, fake_devices: int = 1, preallocate: bool | None = None) -> None:
    """Set the environment jax reads at import: fake CPU devices (unless ``real_devices``), no
    persistent compilation cache (compile times are measured), and optionally no GPU preallocation
    (so a PyTorch run in the same process has memory).  Must run before ``import jax``."""
    if "jax" in sys.modules:
        raise RuntimeError("configure_jax_env must run before jax is imported")
    if not real_devices:
        if fake_devices > 1:
            os.environ["XLA_FLAGS"] = (
                os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={int(fake_devices)}"
            ).strip()
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["LTJAX_XLA_CACHE"] = "0"
    if preallocate is False:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine_summary() -> dict:
    """Machine / software facts for the report header (no host names)."""
    import jax

    dev = jax.devices()[0]
    info = {
        "date": now_utc(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "jax": jax.__version__,
        "platform": dev.platform,
        "device_kind": getattr(dev, "device_kind", "?"),
        "num_devices": len(jax.devices()),
    }
    for mod in ("jaxlib", "flax", "optax", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover - optional
            pass
    return info


# --------------------------------------------------------------------------------------------------
# timing and statistics
# --------------------------------------------------------------------------------------------------
def time_steps(step: Callable[[], Any], sync: Callable[[Any], Any], steps: int, warmup: int) -> tuple[list[float], Any]:
    """Run ``step`` ``warmup`` times, then ``steps`` timed times, each followed by ``sync(out)``.

    Returns (seconds per timed step, the first warm-up step's synced output or None)."""
    first = None
    for i in range(warmup):
        out = sync(step())
        if i == 0:
            first = out
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - t)
    return times, first


def step_stats(times: Sequence[float], batch: int) -> dict:
    med = float(np.median(times))
    return {
        "step_ms_median": med * 1e3,
        "step_ms_p90": float(np.percentile(times, 90)) * 1e3,
        "examples_per_s": batch / med,
        "timed_steps": len(times),
    }


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """(median seconds over ``repeats`` calls after ``warmup`` untimed calls, the last result)."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(max(repeats, 1)):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


# --------------------------------------------------------------------------------------------------
# XLA cost / memory introspection (tolerant of the return shapes of several jax versions)
# --------------------------------------------------------------------------------------------------
def xla_flops(obj) -> float | None:
    """FLOPs from ``Lowered.cost_analysis()`` / ``Compiled.cost_analysis()``: a dict in recent jax,
    a list with one dict per program in older ones, None where the backend gives nothing."""
    try:
        cost = obj.cost_analysis()
    except Exception:
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None
    try:
        flops = float(cost.get("flops", 0.0))
    except Exception:
        return None
    return flops if flops > 0 else None


def xla_memory_bytes(compiled) -> int | None:
    """Device memory XLA plans for one call of a compiled program: arguments + outputs + temporaries
    - donated (aliased) buffers."""
    try:
        m = compiled.memory_analysis()
    except Exception:
        return None
    if m is None:
        return None
    if isinstance(m, (list, tuple)):
        m = m[0] if m else None
        if m is None:
            return None
    try:
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)
    except AttributeError:
        return None


def device_peak_bytes(device=None) -> int | None:
    """The allocator's peak bytes in use on ``device`` (process-wide, never reset); None on CPU."""
    import jax

    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:
        return None
    if not stats:
        return None
    return stats.get("peak_bytes_in_use")


def count_params(tree) -> int:
    import jax

    return int(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree)))


# --------------------------------------------------------------------------------------------------
# peak FLOP/s by device kind (dense, per chip), for MFU
# --------------------------------------------------------------------------------------------------
# TFLOP/s: (bf16 tensor core, tf32 tensor core, fp32 CUDA cores), dense (no sparsity), SXM parts.
PEAK_TFLOPS = {
    "H200": (989.4, 494.7, 66.9),
    "H100": (989.4, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
}


def default_peaks(device_kind: str, platform_name: str, fp32_mode: str) -> tuple[float | None, float | None]:
    """(peak TFLOP/s for bf16 rows, for float32 rows) of ``device_kind``; (None, None) when unknown.

    float32 rows use the TF32 tensor-core peak when ``fp32_mode`` is 'tf32' (the default: JAX's default
    matmul/conv precision on NVIDIA GPUs lets XLA use TF32, and the PyTorch rows here enable TF32 for
    matmuls too; cuDNN convolutions use it by default), the CUDA-core fp32 peak when 'fp32'."""
    if platform_name not in ("gpu", "cuda"):
        return None, None
    kind = (device_kind or "").upper()
    for key, (bf16, tf32, fp32) in PEAK_TFLOPS.items():
        if key in kind:
            return bf16, (tf32 if fp32_mode == "tf32" else fp32)
    return None, None


# --------------------------------------------------------------------------------------------------
# datasets with the real metadata and synthetic, in-memory examples
# --------------------------------------------------------------------------------------------------
def voc_lt_dataset(config, image_size: int):
    """A ``Dataset`` with VOC-LT's real training label sets and metadata (20 classes, n_c, N = 1,142,
    the head/medium/tail groups of ``config.data.groups``) and placeholder inputs: the benchmark feeds
    its own on-device image batch, so no VOC pixels are needed.  Returns (dataset, train labels)."""
    from ltjax.data.base import ArraySplit, Dataset, make_meta
    from ltjax.data.voc_coco import load_list

    lt = load_list("voc_lt")
    meta = make_meta("voc_lt", lt.class_names, lt.labels, config.data.groups, (image_size, image_size, 3), "image")
    placeholder = ArraySplit(np.zeros((len(lt.labels), 1), np.float32), lt.labels)
    return Dataset(meta=meta, splits={"train": placeholder, "test": placeholder}), lt.labels


def synthetic_dataset(config):
    """The real ``synthetic_lt`` dataset of ``config.data`` (features and labels in memory)."""
    import warnings

    from ltjax.data import build_dataset

    with warnings.catch_warnings():  # "classes without test positives": the benchmark never evaluates
        warnings.simplefilter("ignore", UserWarning)
        ds = build_dataset(config.data)
    return ds, ds.split("train").labels


def image_batch(labels_pool: np.ndarray, batch: int, image_size: int, seed: int = 0) -> dict:
    """Normalised-image-like NHWC float32 inputs N(0, 1) and multi-hot labels drawn (with replacement)
    from ``labels_pool`` (the dataset's real label sets)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, image_size, image_size, 3), dtype=np.float32)
    y = labels_pool[rng.integers(0, len(labels_pool), batch)].astype(np.float32)
    return {"inputs": x, "labels": y}


def feature_batch(split, batch: int, seed: int = 0) -> dict:
    """``batch`` real examples of an in-memory split (indices drawn with replacement)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(split), batch)
    return {"inputs": np.asarray(split.inputs[idx], np.float32), "labels": np.asarray(split.labels[idx], np.float32)}


# --------------------------------------------------------------------------------------------------
# the JAX train step, built by ltjax itself
# --------------------------------------------------------------------------------------------------
def load_config(spec: str):
    """``ltjax.config.load_config`` of ``configs/<spec>`` (e.g. 'voc_lt.py:db_focal'), unlocked."""
    from ltjax.config import load_config as _load

    cfg = _load(os.path.join(CONFIGS, spec))
    cfg.unlock()
    return cfg


def jax_experiment(config, dataset):
    """``ltjax.training.loop.Experiment`` (model, optimizer, shardings, jitted donated train_step)."""
    from ltjax.training.loop import Experiment

    return Experiment(config, dataset)


def run_jax_train_step(exp, batch_np: dict, steps: int, warmup: int) -> dict:
    """Compile and time ``exp.train_step`` on one fixed batch placed with the experiment's batch sharding (for a
    first phase with several streams, its phase step with that batch on every stream).

    Reports compile time (lower + compile), FLOPs per step (XLA cost analysis of the lowered program,
    i.e. of the model as written, before XLA's optimisations; the compiled program's count is kept in
    the JSON), planned memory, allocator peak (GPU), the loss of the first step, step statistics and
    the number of parameters."""
    import jax

    state = exp.initial_state()
    n_params = count_params(state.params)
    batch = jax.device_put(batch_np, exp.batch_sharding)
    rng = exp.train_rng
    first = exp.train_phase_of(0)
    if len(first.streams) > 1:  # a multi-stream phase (COMIC): the same batch on every stream
        batch = {s: batch for s in first.streams}
        train_step = exp.phase_step(first.index)
    else:
        train_step = exp.train_step
    t0 = time.perf_counter()
    lowered = train_step.lower(state, batch, rng)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}
    del state

    def step():
        holder["state"], metrics = compiled(holder["state"], batch, rng)
        return metrics

    def sync(metrics):
        return float(jax.block_until_ready(metrics["loss"]))

    times, loss0 = time_steps(step, sync, steps, max(warmup, 1))
    last = float(step()["loss"])
    row = {
        "compile_s": compile_s,
        "flops_per_step": xla_flops(lowered),
        "flops_per_step_compiled": xla_flops(compiled),
        "xla_memory_bytes": xla_memory_bytes(compiled),
        "allocator_peak_bytes": device_peak_bytes(),
        "loss_step0": loss0,
        "loss_last": last,
        "params": n_params,
        **step_stats(times, int(batch_np["labels"].shape[0])),
    }
    del holder, compiled, lowered, batch
    return row


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------
def fmt(value, spec: str = ",.1f", missing: str = "-") -> str:
    if value is None:
        return missing
    if isinstance(value, str):
        return value
    try:
        if isinstance(value, float) and not np.isfinite(value):
            return missing
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def fmt_sig(value, missing: str = "-") -> str:
    """A positive magnitude with about 3 significant digits (thousands separated above 1,000)."""
    if value is None:
        return missing
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    right = right or [True] * len(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str, payload: dict) -> None:
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    os.replace(tmp, path)
