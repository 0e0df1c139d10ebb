"""Runs every user-mistake and damage case of issue 18 through the real command lines and prints a table:
the case, the exit code, whether a traceback was printed, and the first line of the message.

    python scripts/check_reliability.py [--workdir /tmp/ltjax_reliability] [--only SUBSTRING]

Each case runs ``python -m ltjax.train`` / ``python -m ltjax.evaluate`` in a subprocess on a seconds-long
synthetic run (``tests/configs/tiny_synthetic.py``) or the yeast demo config; the damaged-checkpoint cases
damage a copy of one trained workdir.  Expected: exit 2 for a user mistake, 1 for a run that failed after
it started, 0 where ltjax falls back to an intact checkpoint (the message says which), 130 for Ctrl-C; no
traceback in any case.  About 3-5 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "configs" / "tiny_synthetic.py")


def run(module, *args, env=None, timeout=600):
    full = dict(os.environ, PYTHONPATH=str(REPO), LTJAX_DEBUG="")
    full.update(env or {})
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full, capture_output=True,
                       text=True, timeout=timeout)
    return p, time.time() - t0


def first_line(p):
    lines = [ln.strip() for ln in (p.stderr.strip() + "\n" + p.stdout.strip()).splitlines()]
    for i, line in enumerate(lines):
        if line.startswith(("error:", "warning:", "interrupted", "note:")):
            if line.endswith(":") and i + 1 < len(lines):  # the message goes on with a list
                line += " " + lines[i + 1]
            return line[:160]
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:160]


def has_traceback(p):
    return "Traceback (most recent call last)" in p.stderr + p.stdout


@contextlib.contextmanager
def read_only_dir(path):
    """``path`` read-only meanwhile: chmod 0555, or for root (whom modes do not stop) a read-only bind mount."""
    if os.geteuid() != 0:
        os.chmod(path, stat.S_IRUSR | stat.S_IXUSR)
        try:
            yield
        finally:
            os.chmod(path, stat.S_IRWXU)
        return
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def trained(root: pathlib.Path) -> str:
    """A finished tiny run with 4 checkpoints (steps 8..32), made once."""
    w = root / "trained"
    if not (w / "eval.json").exists():
        shutil.rmtree(w, ignore_errors=True)
        p, _ = run("ltjax.train", "--config", TINY + ":2", "--workdir", str(w), "--config.train.keep_checkpoints=10")
        assert p.returncode == 0, p.stderr
    return str(w)


def copy_of(root, name):
    dst = root / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(trained(root), dst)
    return dst


def newest_step(w) -> pathlib.Path:
    ck = pathlib.Path(w) / "checkpoints"
    return ck / str(max(int(d) for d in os.listdir(ck) if d.isdigit()))


def biggest_file(step_dir: pathlib.Path) -> pathlib.Path:
    """The biggest array data file (OCDBT's ``d/`` folders) of the step."""
    files = [f for f in step_dir.rglob("*") if f.is_file() and f.parent.name == "d"]
    return max(files, key=lambda f: f.stat().st_size)


DAMAGE = {
    "flipped bytes mid data file": lambda d: _flip(biggest_file(d)),
    "truncated data file": lambda d: _truncate(biggest_file(d)),
    "deleted data file": lambda d: biggest_file(d).unlink(),
    "deleted state/_METADATA": lambda d: (d / "state" / "_METADATA").unlink(),
    "empty manifest.ocdbt": lambda d: (d / "state" / "manifest.ocdbt").write_bytes(b""),
    "garbage loop/metadata": lambda d: (d / "loop" / "metadata").write_bytes(b"\x00garbage{"),
    "empty step folder": lambda d: (shutil.rmtree(d), d.mkdir()),
}


def _flip(f):
    data = bytearray(f.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = os.urandom(64)
    f.write_bytes(bytes(data))


def _truncate(f):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def cases(root: pathlib.Path):
    """(name, command shown, function returning the CompletedProcess)."""
    out = []

    def add(name, shown, fn):
        out.append((name, shown, fn))

    for spec in ("configs/yeast.py:nosuch", "configs/bce_yeast.py:abc", "configs/synthetic_lt.py:bce,huge"):
        add(f"config arg {spec}", f"train --config {spec}",
            lambda spec=spec: run("ltjax.train", "--config", spec, "--workdir", str(root / "argcase"))[0])
    add("batch not divisible by 8 devices", "train --config.data.batch_size=12 (8 CPU devices)",
        lambda: run("ltjax.train", "--config", TINY, "--workdir", str(root / "div"), "--config.data.batch_size=12",
                    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})[0])

    def workdir_file():
        f = root / "a_file"
        f.write_text("x")
        return run("ltjax.train", "--config", TINY, "--workdir", str(f))[0]
    add("--workdir is a file", "train --workdir FILE", workdir_file)

    def read_only(module):
        def fn():
            w = copy_of(root, f"ro_{module}") if module == "ltjax.evaluate" else root / "ro_train"
            if module == "ltjax.train":
                shutil.rmtree(w, ignore_errors=True)
                w.mkdir()
            with read_only_dir(w):
                args = ("--workdir", str(w)) if module == "ltjax.evaluate" else ("--config", TINY, "--workdir", str(w))
                return run(module, *args)[0]
        return fn
    add("read-only workdir (train)", "train --workdir READONLY", read_only("ltjax.train"))
    add("read-only workdir (evaluate)", "evaluate --workdir READONLY", read_only("ltjax.evaluate"))
    add("evaluate --step abc", "evaluate --step abc", lambda: run("ltjax.evaluate", "--workdir", trained(root), "--step", "abc")[0])
    add("evaluate --step 12345", "evaluate --step 12345", lambda: run("ltjax.evaluate", "--workdir", trained(root), "--step", "12345")[0])
    add("eval.split=bogus (train)", "train --config.eval.split=bogus",
        lambda: run("ltjax.train", "--config", TINY, "--workdir", str(root / "bogus"), "--config.eval.split=bogus")[0])
    add("eval.split=bogus (evaluate)", "evaluate --config.eval.split=bogus",
        lambda: run("ltjax.evaluate", "--workdir", trained(root), "--config.eval.split=bogus", "--out", str(root / "o"))[0])
    add("eval.top_k > classes", "train --config.data.num_classes=4 (top_k 1,3,5)",
        lambda: run("ltjax.train", "--config", TINY, "--workdir", str(root / "topk"), "--config.data.num_classes=4")[0])
    add("evaluate, no checkpoint", "evaluate --workdir EMPTY_RUN", lambda: _eval_without_checkpoint(root))
    add("LTJAX_CACHE_DIR unwritable", "LTJAX_CACHE_DIR=/proc/x train",
        lambda: run("ltjax.train", "--config", TINY, "--workdir", str(root / "cache"), env={"LTJAX_CACHE_DIR": "/proc/ltjax"})[0])
    add("rerun after a failed start", "train --config.optimizer.lr=1e6, then the same workdir with lr 1e-2",
        lambda: _rerun_after_failure(root))
    add("zero-byte image", "train custom config, one image 0 bytes", lambda: _bad_image(root, b""))
    add("corrupt image", "train custom config, one image garbage", lambda: _bad_image(root, b"not a png at all"))
    add("label cell of spaces, empty document", "train custom text config", lambda: _text_warnings(root))
    add("two runs into one workdir", "train & train, same --workdir", lambda: _two_runs(root))
    add("Ctrl-C", "SIGINT during train, then the same command", lambda: _ctrl_c(root))
    for what, damage in DAMAGE.items():
        for module in ("ltjax.train", "ltjax.evaluate"):
            add(f"{what} ({module.split('.')[1]})", f"{module.split('.')[1]} after: {what} in the newest step",
                lambda what=what, damage=damage, module=module: _damaged(root, what, damage, module))
    return out


def _eval_without_checkpoint(root):
    w = root / "nockpt"
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir()
    shutil.copy(pathlib.Path(trained(root)) / "config.json", w / "config.json")
    return run("ltjax.evaluate", "--workdir", str(w))[0]


def _rerun_after_failure(root):
    w = root / "failed_start"
    shutil.rmtree(w, ignore_errors=True)
    first, _ = run("ltjax.train", "--config", TINY, "--workdir", str(w), "--config.optimizer.lr=1e12",
                   "--config.optimizer.grad_clip_norm=0", "--config.train.checkpoint_every=1000")
    second, _ = run("ltjax.train", "--config", TINY, "--workdir", str(w))
    second.stderr = f"[first run exit {first.returncode}: {first_line(first)}]\n" + second.stderr
    return second


def _custom_images(root, name, bad: bytes):
    import numpy as np
    from PIL import Image

    d = root / name
    shutil.rmtree(d, ignore_errors=True)
    (d / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["path,labels"]
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(d / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{'a' if i % 2 else 'b'}{'|c' if i % 5 == 0 else ''}")
    (d / "img" / "7.png").write_bytes(bad)
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    return d


def _bad_image(root, bad):
    d = _custom_images(root, "badimg", bad)
    return run("ltjax.train", "--config", "configs/custom.py", "--config.data.manifest=" + str(d / "labels.csv"),
               "--workdir", str(d / "run"), "--config.train.num_epochs=1", "--config.data.image_size=32",
               "--config.data.batch_size=8")[0]


def _text_warnings(root):
    d = root / "textcase"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    rows = ["text,labels"] + [f"report number {i} shows {'a' if i % 2 else 'b'},{'a' if i % 2 else 'b'}" for i in range(40)]
    rows[5] = "the lungs are clear,   "
    rows[9] = ",a"
    (d / "docs.csv").write_text("\n".join(rows) + "\n")
    return run("ltjax.train", "--config", "configs/custom.py:bce,text", "--config.data.manifest=" + str(d / "docs.csv"),
               "--workdir", str(d / "run"), "--config.train.num_epochs=1", "--config.data.batch_size=8")[0]


def _two_runs(root):
    w = root / "two"
    shutil.rmtree(w, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), LTJAX_DEBUG="")
    cmd = [sys.executable, "-m", "ltjax.train", "--config", TINY + ":6", "--workdir", str(w)]
    a = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (ao, ae), (bo, be) = a.communicate(timeout=600), b.communicate(timeout=600)
    loser = subprocess.CompletedProcess(cmd, b.returncode, bo, be) if a.returncode == 0 else \
        subprocess.CompletedProcess(cmd, a.returncode, ao, ae)
    loser.stderr = f"[other run exit {a.returncode if loser.returncode == b.returncode else b.returncode}]\n" + loser.stderr
    return loser


def _ctrl_c(root):
    w = root / "ctrlc"
    shutil.rmtree(w, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), LTJAX_DEBUG="")
    cmd = [sys.executable, "-m", "ltjax.train", "--config", TINY + ":40", "--workdir", str(w)]
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (w / "checkpoints").is_dir():
        time.sleep(0.05)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    resumed = [ln for ln in again.stdout.splitlines() if ln.startswith("resumed from")]
    err += f"\n[the same command again: exit {again.returncode}; {resumed[0] if resumed else 'did not resume'}]"
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def _damaged(root, what, damage, module):
    w = copy_of(root, "damaged")
    damage(newest_step(w))
    if module == "ltjax.train":  # a longer run resumes from the intact step before
        return run(module, "--config", TINY + ":2", "--workdir", str(w), "--config.train.keep_checkpoints=10")[0]
    return run(module, "--workdir", str(w))[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/ltjax_reliability")
    ap.add_argument("--only", default="")
    args = ap.parse_args(argv)
    root = pathlib.Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    print("| case | exit | traceback | first line of the message |")
    print("|---|---|---|---|")
    for name, _shown, fn in cases(root):
        if args.only and args.only not in name:
            continue
        p = fn()
        print(f"| {name} | {p.returncode} | {'yes' if has_traceback(p) else 'no'} | {first_line(p).replace('|', '/')} |",
              flush=True)


if __name__ == "__main__":
    main()
