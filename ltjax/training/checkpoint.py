"""Checkpoints with orbax: train state (model, optimizer, method state, EMA, step), PRNG key and the
loop's JSON state (phase, position in it, data iterators, pending log window), and their integrity.

Each checkpoint is a step directory written to a temporary name and renamed when complete (orbax's
atomic finalisation), so a run killed at any moment leaves only whole checkpoints.  All processes
take part in a save (arrays are written collectively); the JSON item is written by process 0.

Integrity.  Orbax does not check what it reads back: a few flipped bytes in a data file restore
silently as wrong weights, and a truncated or missing file ends in a deep tensorstore traceback.  So
once a save is finalised, process 0 seals the step directory with ``ltjax_checksums.json`` (size and
SHA-256 of every file in it; written atomically, after orbax's rename).  Restoring verifies the seal
first: a step whose files differ from it, or that cannot be read at all, is *damaged*; it is moved aside
to ``WORKDIR/checkpoints_damaged/STEP`` (never deleted, with a ``REASON.txt``) so that it is not tried
again, and the newest intact step is used instead, with a warning that names both.  A step without a seal
(one written by an older ltjax, or a run killed between orbax's rename and the seal) is *unverified*: it
is used if it restores, and counts as damaged if it does not.  When a sealed step is intact but does not
restore (a config or ltjax version that no longer matches it), that is an error, not damage.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from ltjax.errors import CheckpointError

CHECKSUMS = "ltjax_checksums.json"
DAMAGED_DIR = "checkpoints_damaged"


# ---- seals -------------------------------------------------------------------------------------------


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(step_dir: str) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of every file under ``step_dir`` except the seal itself."""
    out = {}
    for root, _dirs, files in os.walk(step_dir):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, step_dir)
            if rel == CHECKSUMS or rel.startswith(CHECKSUMS + "."):
                continue
            out[rel] = [os.path.getsize(path), _sha256(path)]
    return dict(sorted(out.items()))


def seal(step_dir: str) -> None:
    """Write ``step_dir/ltjax_checksums.json`` (atomically: a temporary file renamed into place)."""
    path = os.path.join(step_dir, CHECKSUMS)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"format": 1, "files": file_digests(step_dir)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def inspect_step(step_dir: str) -> tuple[str, str]:
    """``(status, reason)`` of a step directory against its seal: ``"intact"``, ``"unverified"`` (no seal)
    or ``"damaged"`` with what differs (the first few files)."""
    if not os.path.isdir(step_dir):
        return "damaged", "the step folder is missing"
    path = os.path.join(step_dir, CHECKSUMS)
    if not os.path.exists(path):
        if not any(files for _r, _d, files in os.walk(step_dir)):
            return "damaged", "the step folder is empty"
        problem = _structure_problem(step_dir)
        if problem:
            return "damaged", problem
        return "unverified", "no checksum file (written by an older ltjax, or the run stopped before sealing it)"
    try:
        with open(path) as f:
            expected = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return "damaged", f"its checksum file is unreadable ({e})"
    actual = file_digests(step_dir)
    problems = []
    for rel, (size, digest) in expected.items():
        if rel not in actual:
            problems.append(f"{rel} is missing")
        elif actual[rel][0] != size:
            problems.append(f"{rel} has {actual[rel][0]} bytes, {size} when saved")
        elif actual[rel][1] != digest:
            problems.append(f"{rel} changed since it was saved (SHA-256 differs)")
    problems += [f"{rel} was not part of the checkpoint" for rel in actual if rel not in expected]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return "damaged", "; ".join(problems[:3]) + more
    return "intact", ""


# files every item of an ltjax step holds (orbax's layout: a StandardSave "state" in OCDBT, a JsonSave "loop")
_REQUIRED = (os.path.join("state", "_METADATA"), os.path.join("state", "manifest.ocdbt"), os.path.join("loop", "metadata"))


def _structure_problem(step_dir: str) -> str:
    """What is visibly wrong with an unsealed step without reading its arrays: a required file missing or
    empty, or a loop item that is not JSON ("" when none; a restore still decides)."""
    if not os.path.isdir(os.path.join(step_dir, "state")):  # not an ltjax train-state step (e.g. best/)
        return ""
    for rel in _REQUIRED:
        path = os.path.join(step_dir, rel)
        if not os.path.isfile(path):
            return f"{rel} is missing"
        if os.path.getsize(path) == 0:
            return f"{rel} is empty"
    try:
        with open(os.path.join(step_dir, "loop", "metadata")) as f:
            json.load(f)
    except (OSError, ValueError) as e:
        return f"loop/metadata is not JSON ({e})"
    return ""


def set_aside(step_dir: str, reason: str) -> str | None:
    """Move a damaged step folder to ``<run>/checkpoints_damaged/<step>[.N]`` with a ``REASON.txt``; returns
    the new path, or None when it cannot be moved (a read-only workdir: it stays, and is skipped again)."""
    parent = os.path.dirname(os.path.dirname(os.path.abspath(step_dir)))
    base = os.path.join(parent, DAMAGED_DIR, os.path.basename(os.path.normpath(step_dir)))
    dest, n = base, 1
    while os.path.exists(dest):
        dest, n = f"{base}.{n}", n + 1
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(step_dir, dest)
        with open(os.path.join(dest, "REASON.txt"), "w") as f:
            f.write(f"{datetime.datetime.now(datetime.timezone.utc).isoformat()} {reason}\n")
    except OSError:
        return None
    return dest


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def _collect_quietly() -> None:
    """Collect the asyncio tasks of a failed orbax restore now, with asyncio's "Task exception was never
    retrieved" log (a traceback per array) muted: the failure is reported once, by the caller."""
    import gc
    import logging

    log = logging.getLogger("asyncio")
    was = log.disabled
    log.disabled = True
    try:
        gc.collect()
    finally:
        log.disabled = was


def warn(message: str) -> None:
    if jax.process_index() == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)


# ---- the run's checkpoints -------------------------------------------------------------------------


class Checkpointer:
    def __init__(self, workdir: str, keep: int, *, async_save: bool = True, read_only: bool = False):
        """``read_only``: for restoring only (evaluation): orbax neither creates folders nor cleans up
        temporary ones (damaged steps are still moved aside where the workdir can be written)."""
        self.workdir = os.path.abspath(workdir)
        self.directory = os.path.join(self.workdir, "checkpoints")
        self.read_only = read_only
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=max(int(keep), 1),
            create=not read_only,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
        )
        self.manager = self._make_manager()
        self._unsealed: list[int] = []  # saved by this process, checksums not yet written

    def _make_manager(self):
        return ocp.CheckpointManager(self.directory, options=self._options, item_names=("state", "loop"))

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(int(step)))

    def all_steps(self) -> list[int]:
        if not os.path.isdir(self.directory):
            return []
        return sorted(int(s) for s in self.manager.all_steps())

    def latest_step(self) -> int | None:
        if not os.path.isdir(self.directory):
            return None
        return self.manager.latest_step()

    def save(self, step: int, state: Any, loop: dict) -> None:
        self._seal_pending()  # the previous save is finished before this one starts (orbax waits anyway)
        self.manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop)),
            force=True,
        )
        self._unsealed.append(int(step))

    def _seal_pending(self) -> None:
        if not self._unsealed:
            return
        self.manager.wait_until_finished()
        if jax.process_index() == 0:
            for step in self._unsealed:
                if os.path.isdir(self.step_dir(step)):  # (max_to_keep may have removed it already)
                    seal(self.step_dir(step))
        self._unsealed = []

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        restored = self.manager.restore(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), loop=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["loop"])

    def restore_loop(self, step: int) -> dict:
        """The loop's JSON item alone (it says which phase the checkpoint belongs to, and so the structure
        of its train state)."""
        loop = self.manager.restore(int(step), args=ocp.args.Composite(loop=ocp.args.JsonRestore()))["loop"]
        if not isinstance(loop, dict):
            raise ValueError(f"the loop item of step {step} is not a JSON object")
        return dict(loop)

    # -- verified restores ---------------------------------------------------------------------------

    def _damaged(self, step: int, reason: str) -> str:
        """Move step aside (process 0) and return the warning that says so."""
        _collect_quietly()  # a failed restore leaves orbax's read tasks behind: no tracebacks from them
        where = set_aside(self.step_dir(step), reason) if jax.process_index() == 0 else None
        moved = f"; moved to {where}" if where else ""
        return f"checkpoint step {step} in {self.directory} is damaged: {reason}{moved}"

    def _try_restore(self, step: int, target_of: Callable[[dict], Any]) -> tuple[Any, dict]:
        loop = self.restore_loop(step)
        return self.restore(step, target_of(loop))

    def restore_checked(self, step: int, target_of: Callable[[dict], Any]) -> tuple[Any, dict]:
        """Restore exactly ``step`` (``target_of(loop)`` gives the abstract state for its loop item), after
        verifying it; a damaged step is moved aside and raises :class:`CheckpointError` naming the intact
        steps."""
        steps = self.all_steps()
        if int(step) not in steps:
            raise CheckpointError(
                f"no checkpoint of step {step} in {self.directory}; the steps there are "
                f"{', '.join(map(str, steps)) or 'none'}. Pass one of them with --step, or leave --step out "
                "for the newest intact one"
            )
        status, reason = inspect_step(self.step_dir(step))
        if status != "damaged":
            try:
                return self._try_restore(step, target_of)
            except Exception as e:  # noqa: BLE001 - reported below with what went wrong
                if status == "intact":
                    raise self._incompatible(step, e) from e
                reason = f"it cannot be read ({_short(e)})"
        note = self._damaged(step, reason)
        self._reload()
        intact = [s for s in self.all_steps() if inspect_step(self.step_dir(s))[0] != "damaged"]
        raise CheckpointError(
            f"{note}. Intact steps: {', '.join(map(str, intact)) or 'none'}; evaluate one of them with --step N"
        )

    def restore_newest(self, target_of: Callable[[dict], Any]) -> tuple[int | None, Any, dict]:
        """``(step, restored, loop)`` of the newest step that verifies and restores (``(None, None, {})``
        when there is no checkpoint at all).  Damaged steps are moved aside with a warning each; when steps
        existed but none is intact, :class:`CheckpointError` says so (the run does not silently start over)."""
        notes = []
        for step in reversed(self.all_steps()):
            status, reason = inspect_step(self.step_dir(step))
            if status != "damaged":
                try:
                    restored, loop = self._try_restore(step, target_of)
                except Exception as e:  # noqa: BLE001 - reported with what went wrong
                    if status == "intact":
                        raise self._incompatible(step, e) from e
                    reason = f"it cannot be read ({_short(e)})"
                else:
                    if notes:
                        self._reload()
                        for note in notes:
                            warn(note)
                        warn(f"using checkpoint step {step}, the newest intact one")
                    return step, restored, loop
            notes.append(self._damaged(step, reason))
        if notes:
            self._reload()
            raise CheckpointError(
                "no intact checkpoint is left: " + "; ".join(notes) + ". Nothing was deleted. Running the same "
                "command again starts this run over from step 0 (its config is kept)"
            )
        return None, None, {}

    def _incompatible(self, step: int, e: BaseException) -> CheckpointError:
        return CheckpointError(
            f"checkpoint step {step} in {self.directory} is intact (its checksums match) but does not restore "
            f"into this run's state ({_short(e)}). It was probably written by another config or ltjax version; "
            "evaluate it with the ltjax that wrote it, or train into a new --workdir"
        )

    def _reload(self) -> None:
        """Forget the steps moved aside (a fresh manager lists the directory again)."""
        self.manager.close()
        self.manager = self._make_manager()

    def wait(self) -> None:
        self.manager.wait_until_finished()
        self._seal_pending()

    def close(self) -> None:
        self.wait()
        self.manager.close()
