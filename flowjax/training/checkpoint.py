"""Orbax checkpoints of the :class:`TrainState`: async, keep-N, atomic, with fallback.

Orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-write never leaves a checkpoint that looks finished. If the newest finished checkpoint is
nevertheless unreadable (a disk fault, a truncated file), :meth:`Checkpointer.restore_latest`
warns and falls back to the previous one.

Each checkpoint holds two items: ``state`` (the TrainState pytree, restored with the
shardings of an abstract target, so it can land on a different mesh) and ``meta`` (JSON:
the config and anything else the caller wants to keep next to the weights).

Multi-host: every process calls ``save`` and ``restore`` (orbax writes each process's shards
and coordinates the commit); the fallback decision is agreed between processes.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from flowjax.parallel import multihost

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "meta"), options=options
        )

    def save(self, step: int, state: Any, meta: dict | None = None, *, force: bool = True) -> bool:
        """Start saving ``state`` at ``step`` (returns once device arrays are copied out)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})
        )
        return self.manager.save(int(step), args=args, force=force)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
        )
        restored = self.manager.restore(int(step), args=args)
        return restored["state"], dict(restored["meta"] or {})

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict, int] | None:
        """Restore the newest readable checkpoint; ``None`` if there is none.

        A checkpoint that fails to restore is reported with a warning and moved aside to
        ``<directory>.unreadable/<step>`` (kept for inspection, out of the way of the
        resumed run, which will save that step again).
        """
        for step in reversed(self.steps()):
            try:
                state, meta = self.restore(step, abstract_state)
                error = None
            except Exception as err:  # noqa: BLE001 - any failure means "unreadable"
                error = err
            # Every process must take the same branch (multi-host): unreadable anywhere means
            # unreadable everywhere.
            if multihost.any_process(error is not None):
                log.warning(
                    "checkpoint at step %d in %s is unreadable (%s); falling back to the "
                    "previous one",
                    step,
                    self.directory,
                    _describe(error) if error is not None else "on another process",
                )
                self._move_aside(step)
                continue
            return state, meta, step
        return None

    def _move_aside(self, step: int) -> None:
        """Process 0 moves the step's directory aside; everyone waits, then re-lists."""
        if jax.process_index() == 0:
            aside = self.directory + ".unreadable"
            os.makedirs(aside, exist_ok=True)
            target = os.path.join(aside, f"{step}-{int(time.time())}")
            os.replace(os.path.join(self.directory, str(step)), target)
            log.warning("moved the unreadable checkpoint to %s", target)
        multihost.barrier(f"flowjax_move_aside_{step}")
        self.manager.reload()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _describe(err: BaseException) -> str:
    first = str(err).splitlines()[0][:200] if str(err) else ""
    return f"{type(err).__name__}: {first}"


def abstract_like(tree: Any) -> Any:
    """``ShapeDtypeStruct``s (with shardings) of a pytree of arrays, as a restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )
