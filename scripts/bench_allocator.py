"""One command (a training run, a benchmark) under each host memory allocator: wall, user and system
time, minor page faults, and the run's own examples/s; prints a Markdown table.

Why this exists: on the CPU, XLA allocates the buffers of a jitted step at every execution and frees
them afterwards.  Under glibc's malloc those pages go back to the kernel and every step faults its
working set in again (the kernel zeroes each page): on ``padchest_reports``' LDRNet step that was
~170,000 minor faults a second and ~40 % of the CPU time in the kernel (docs/PERFORMANCE.md).  glibc's
own tunables did not stop it there (``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=
<64 GiB>``: ~150,000 faults a second), nor did jemalloc at its defaults (large blocks are purged at
once); jemalloc with large blocks in its normal arenas cut the faults to ~50,000 a second on two cores
(1.35x), and never purging to 0 (1.7x on one core, but unbounded memory on two).  An allocator is a
process-level choice (``LD_PRELOAD`` before the interpreter starts), so it cannot be switched from
inside ltjax; this script measures it for any command.  ``/usr/bin/time -v`` prints the same counters
for one command but does not compare, hence the few lines here.

  python scripts/bench_allocator.py -- python -m ltjax.train --config configs/iu_xray_reports.py:ldrnet \\
      --workdir /tmp/alloc_bench --config.method.language=none --config.train.num_epochs=1
  python scripts/bench_allocator.py --allocators glibc jemalloc -- python scripts/bench_step.py --devices 1

Each allocator runs the command once, in turn, with the same environment otherwise; a ``--workdir``
in the command is emptied before every run (``--fresh DIR``), so every run trains from scratch.  The
``ex/s`` column is the median ``examples_per_s`` of the train records a run appended to
``DIR/metrics.jsonl`` (when ``--fresh DIR`` is given).  Allocators not installed are reported, not
run: jemalloc is Debian's ``libjemalloc2``, tcmalloc ``libtcmalloc-minimal4``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

LIBDIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
           "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")

# name -> (shared library to preload or None, extra environment)
ALLOCATORS = {
    "glibc": (None, {}),
    # large blocks in the normal arenas (above oversize_threshold, 8 MiB by default, they are purged at once),
    # purged after the default decay time: most are reused by the next step
    "jemalloc": ("libjemalloc.so.2", {"MALLOC_CONF": "oversize_threshold:0"}),
    # never purge: the fastest with one XLA thread, but its footprint grew without bound with two
    # (docs/PERFORMANCE.md); watch the peak-memory column
    "jemalloc-nopurge": ("libjemalloc.so.2", {"MALLOC_CONF": "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"}),
    "jemalloc-default": ("libjemalloc.so.2", {}),
    "tcmalloc": ("libtcmalloc_minimal.so.4", {"TCMALLOC_RELEASE_RATE": "0"}),
}


def find_library(name: str) -> str | None:
    for d in LIBDIRS:
        path = os.path.join(d, name)
        if os.path.exists(path):
            return path
    return None


def allocator_env(name: str) -> dict | None:
    """The environment that runs a child under allocator ``name``; None when it is not installed."""
    lib, extra = ALLOCATORS[name]
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("MALLOC_CONF", None)
    if lib is not None:
        path = find_library(lib)
        if path is None:
            return None
        env["LD_PRELOAD"] = path
    env.update(extra)
    return env


def median_examples_per_s(workdir: str) -> float | None:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rates = []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("kind") == "train" and "examples_per_s" in rec:
                rates.append(float(rec["examples_per_s"]))
    # the first record includes compilation
    rates = rates[1:] if len(rates) > 1 else rates
    return statistics.median(rates) if rates else None


def run_once(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` once; its own resource usage from ``wait4`` (the child and the descendants it waited for)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"the command failed (exit {code}) under {env.get('LD_PRELOAD', 'glibc')}:\n"
                         + stderr[-3000:])
    return {
        "wall_s": wall,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "minflt": usage.ru_minflt,
        # Linux reports KiB; the fork starts at this script's size (~30 MB), a floor that real runs exceed
        "max_rss_mb": usage.ru_maxrss / 1024,
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: bench_allocator.py [--allocators ...] [--fresh DIR] -- COMMAND ...")
    split = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--allocators", nargs="+", default=["glibc", "jemalloc"], choices=sorted(ALLOCATORS))
    p.add_argument("--fresh", default="", help="a workdir the command writes: emptied before every run, "
                                               "and its metrics.jsonl read for examples/s")
    p.add_argument("--json", default="")
    args = p.parse_args(argv[:split])
    cmd = argv[split + 1:]
    if not cmd:
        raise SystemExit("no command after --")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_common import markdown_table, write_json

    rows, results = [], {}
    for name in args.allocators:
        env = allocator_env(name)
        if env is None:
            rows.append([name, f"not installed ({ALLOCATORS[name][0]})"] + [""] * 6)
            continue
        if args.fresh:
            shutil.rmtree(args.fresh, ignore_errors=True)
        r = run_once(cmd, env)
        r["examples_per_s"] = median_examples_per_s(args.fresh) if args.fresh else None
        results[name] = r
        cpu = r["user_s"] + r["sys_s"]
        rows.append([name, f"{r['wall_s']:.1f}", f"{r['user_s']:.1f}",
                     f"{r['sys_s']:.1f} ({100 * r['sys_s'] / max(cpu, 1e-9):.0f} %)", f"{r['minflt']:,}",
                     f"{r['minflt'] / max(r['wall_s'], 1e-9):,.0f}", f"{r['max_rss_mb']:,.0f}",
                     f"{r['examples_per_s']:.1f}" if r["examples_per_s"] else "-"])
    print(f"command: {' '.join(cmd)}\n")
    print(markdown_table(["allocator", "wall s", "user s", "system s (share)", "minor faults", "faults / s",
                          "peak RSS MB", "ex/s (median)"], rows, right=[False] + [True] * 7))
    write_json(args.json, {"command": cmd, "results": results})


if __name__ == "__main__":
    main()
