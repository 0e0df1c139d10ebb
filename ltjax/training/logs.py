"""Run logs: ``metrics.jsonl`` and TensorBoard event files in the workdir, a progress bar or lines.

On resume from step s the records after s are dropped from ``metrics.jsonl`` and TensorBoard is told
to purge events after s, so a resumed run's logs equal an uninterrupted run's; a run that starts at step 0
in a workdir with logs (an earlier start that failed before its first checkpoint) replaces them.  Only process 0 writes.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import jax


def _truncate_jsonl(path: str, max_step: int) -> None:
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if rec.get("step", 0) <= max_step:
                keep.append(line)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(k + "\n" for k in keep))
    os.replace(tmp, path)


def _clean(value):
    value = float(value)
    return value if math.isfinite(value) else repr(value)


class RunLog:
    def __init__(self, workdir: str, resume_step: int, total_steps: int, progress: str = "auto"):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.total_steps = total_steps
        self._tb = None
        self._bar = None
        if not self.enabled:
            return
        # a fresh start (step 0) replaces whatever an earlier start that never reached a checkpoint logged
        if resume_step:
            _truncate_jsonl(self.path, resume_step)
            self._file = open(self.path, "a")
        else:
            self._file = open(self.path, "w")
        from tensorboardX import SummaryWriter

        tb_dir = os.path.join(workdir, "tensorboard")
        purge = resume_step + 1 if resume_step else (0 if os.path.isdir(tb_dir) else None)
        self._tb = SummaryWriter(tb_dir, purge_step=purge)
        use_bar = progress == "on" or (progress == "auto" and sys.stderr.isatty())
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=resume_step, desc="train", dynamic_ncols=True)
        self._t0 = time.time()

    def write(self, step: int, kind: str, values: dict, *, echo: bool = True, phase: str | None = None,
              extra: dict | None = None) -> None:
        """One record: ``values`` (numbers) go to metrics.jsonl and TensorBoard (``kind/name``, or
        ``kind/phase/name`` when ``phase`` is given); ``extra`` (JSON-able) only to metrics.jsonl."""
        if not self.enabled:
            return
        rec = {"step": int(step), "kind": kind, **({"phase": phase} if phase else {}),
               **{k: _clean(v) for k, v in values.items()}, **(extra or {})}
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        prefix = f"{kind}/{phase}" if phase else kind
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                self._tb.add_scalar(f"{prefix}/{k}", float(v), int(step))
        self._tb.flush()
        if echo:
            text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
            where = f"[{kind}{':' + phase if phase else ''}]"
            self.message(f"{where} step {step}/{self.total_steps} {text}")

    def set_phase(self, name: str) -> None:
        """Name the phase on the progress bar."""
        if self._bar is not None:
            self._bar.set_description(name)

    @property
    def has_progress_bar(self) -> bool:
        return self._bar is not None

    def advance(self, n: int = 1, **postfix) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        self._tb.close()
        self._file.close()
