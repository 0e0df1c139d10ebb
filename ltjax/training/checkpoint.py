"""Checkpoints with orbax: train state (model, optimizer, method state, EMA, step), PRNG key and the
loop's JSON state (phase, position in it, data iterators, pending log window).

Each checkpoint is a step directory written to a temporary name and renamed when complete (orbax's
atomic finalisation), so a run killed at any moment leaves only whole checkpoints.  All processes
take part in a save (arrays are written collectively); the JSON item is written by process 0.
"""
from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, workdir: str, keep: int, *, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(int(keep), 1),
            create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "loop"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, loop: dict) -> None:
        self.manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop)),
            force=True,
        )

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
        return dict(self.manager.restore(int(step), args=ocp.args.Composite(loop=ocp.args.JsonRestore()))["loop"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

