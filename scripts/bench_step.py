"""Train-step throughput of the core on synthetic_lt over 1..N (fake CPU or real) devices.

Prints a Markdown table and writes JSON.  Measures, per device count: compile time of the jitted
train step, step time (median and p90 over --steps timed steps after --warmup), examples/s of the
step alone and of the whole loop (grain batch + global array assembly + step, the loss read one step
late as ``train_and_evaluate`` does), with the host pipeline (features gathered on the host and sent
every step) and, with ``--pipelines ... on_device``, the device-resident one (``data.on_device``: the
features stay on the devices; the host sends indices, positions and labels).

  python scripts/bench_step.py                       # 1 and 8 fake CPU devices, the 'small' preset
  python scripts/bench_step.py --preset large --devices 1 2 4 8 --json bench.json
On a GPU/TPU host pass --real-devices to use the accelerators instead of fake CPU devices.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=["small", "large"], help="size preset of configs/synthetic_lt.py")
    p.add_argument("--devices", type=int, nargs="+", default=[1, 8])
    p.add_argument("--batch-size", type=int, default=0, help="global batch (default: the preset's)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--real-devices", action="store_true", help="use the machine's accelerators")
    p.add_argument("--pipelines", nargs="+", default=["host", "on_device"], choices=["host", "on_device"])
    p.add_argument("--json", default="", help="write the results here")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_common import configure_jax_env, step_stats

    configure_jax_env(args.real_devices, fake_devices=max(args.devices))  # before jax is imported

    import jax

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from ltjax.config import load_config
    from ltjax.data import build_dataset
    from ltjax.training.loop import Experiment

    base = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", f"synthetic_lt.py:bce,{args.preset}"))
    dataset = build_dataset(base.data)
    rows = []
    for n, pipeline in [(n, pl) for n in args.devices for pl in args.pipelines]:
        config = base.copy_and_resolve_references()
        config.unlock()
        config.mesh.data = n
        config.data.on_device = pipeline == "on_device"
        config.train.compute_dtype = args.dtype
        if args.batch_size:
            config.data.batch_size = args.batch_size
        exp = Experiment(config, dataset)
        state = exp.initial_state()
        it = exp.train_iterator()
        batch = exp.global_batch(next(it))
        t0 = time.perf_counter()
        compiled = exp.train_step.lower(state, batch, exp.train_rng).compile()
        compile_s = time.perf_counter() - t0
        for _ in range(args.warmup):
            state, m = compiled(state, batch, exp.train_rng)
        jax.block_until_ready(state)
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            state, m = compiled(state, batch, exp.train_rng)
            jax.block_until_ready(m["loss"])
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        pending = None
        for _ in range(args.steps):
            state, m = compiled(state, exp.global_batch(next(it)), exp.train_rng)
            if pending is not None:
                float(pending["loss"])  # one step late, as the training loop
            pending = m
        float(pending["loss"])
        loop_s = (time.perf_counter() - t) / args.steps
        b = int(config.data.batch_size)
        stats = step_stats(times, b)
        rows.append(
            {
                "devices": n,
                "pipeline": pipeline,
                "batch": b,
                "compile_s": compile_s,
                "step_ms_median": stats["step_ms_median"],
                "step_ms_p90": stats["step_ms_p90"],
                "step_examples_per_s": stats["examples_per_s"],
                "loop_examples_per_s": b / loop_s,
                "per_device_examples_per_s": stats["examples_per_s"] / n,
            }
        )
    head = (
        f"synthetic_lt '{args.preset}' ({dataset.meta.num_classes} classes, "
        f"{dataset.meta.input_shape[0]} features), MLP {tuple(base.model.hidden)} + BCE, {args.dtype}; "
        f"{jax.devices()[0].platform} x{len(jax.devices())} ({'real' if args.real_devices else 'fake'} devices), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}"
    )
    print(head)
    print()
    print("| devices | pipeline | global batch | compile s | step ms (median) | step ms (p90) | step ex/s | loop ex/s | ex/s per device |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['devices']} | {r['pipeline']} | {r['batch']} | {r['compile_s']:.2f} | {r['step_ms_median']:.3f} | "
            f"{r['step_ms_p90']:.3f} | {r['step_examples_per_s']:,.0f} | {r['loop_examples_per_s']:,.0f} | "
            f"{r['per_device_examples_per_s']:,.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"setup": head, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
