"""The workdir of a training run: is it usable, is it free, and does it already hold another run.

* :func:`check_usable`: a folder (created if missing) this process can write, checked before anything
  else is built, so a typo'd or read-only ``--workdir`` fails in a second, not after the data loaded.
* :class:`WorkdirLock`: one training process per workdir.  An OS-level ``flock`` on ``WORKDIR/ltjax.lock``,
  held for the whole run and released by the kernel when the process ends in any way (kill -9 included),
  so a crashed run never leaves a stale lock; the file's content (PID, host, start time) only serves the
  message a second run prints.  ``flock`` is per host: on a filesystem shared between hosts, two runs
  started on different machines are not excluded (process 0 of a multi-host run holds it).
* :func:`check_same_run`: a workdir holds one run; resuming it with a config that computes something else
  is refused.  A workdir whose earlier run stopped before its first checkpoint holds no run yet: a new
  config may start there (the fix for a run that failed at once, e.g. a learning rate that diverged).
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile

from ltjax.errors import ConfigError, WorkdirError

LOCK_FILE = "ltjax.lock"

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


def check_usable(workdir: str, *, write: bool = True, hint: str = "") -> None:
    """``workdir`` is (or can become) a folder this process can write to; else :class:`WorkdirError`
    (``hint``: a sentence the message ends with)."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir} is a file, not a folder; pass a folder (it is created if missing)")
    if not write:
        if not os.path.isdir(workdir):
            raise WorkdirError(f"--workdir {workdir} does not exist; pass the folder a training run wrote")
        return
    try:
        os.makedirs(workdir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ltjax_write_probe_", dir=workdir)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise WorkdirError(
            f"--workdir {workdir} cannot be written ({e.strerror or e}); "
            + (hint or "pass a folder you can write to, or fix its permissions")
        ) from None


class WorkdirLock:
    """``with WorkdirLock(workdir):`` holds the workdir for this process (see the module docstring)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock (documented)
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            who = (f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} (started "
                   f"{holder.get('started', '?')})") if holder else "another process"
            raise WorkdirError(
                f"{os.path.dirname(self.path)} is in use by {who}, which is training into it. Wait for it to "
                "finish (then the same command resumes or re-evaluates), stop it, or pass another --workdir"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def has_checkpoint(workdir: str) -> bool:
    ckpt = os.path.join(workdir, "checkpoints")
    return os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt))


def check_same_run(config, workdir: str) -> bool:
    """Refuse (ConfigError) a config that computes something else than the run ``workdir`` holds; returns
    True when the workdir has a ``config.json`` but no checkpoint (an earlier start that stopped at once:
    the new config replaces it)."""
    from ltjax.config import load_saved_config

    if not os.path.exists(os.path.join(workdir, "config.json")):
        return False
    if not has_checkpoint(workdir):
        return True
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
        return False
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
