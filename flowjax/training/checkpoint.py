"""Orbax checkpoints of the :class:`TrainState`: async, keep-N, atomic, verified, with fallback.

Orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-write never leaves a checkpoint that looks finished (the temporary directories a kill
leaves are removed on the next start: :func:`flowjax.training.workdir.remove_partial_checkpoints`).

Each checkpoint holds two items: ``state`` (the TrainState pytree, restored with the
shardings of an abstract target, so it can land on a different mesh) and ``meta`` (JSON:
the config, anything else the caller keeps next to the weights, and ``integrity``).

Integrity. At save, :func:`integrity_record` stores every leaf's path, shape, dtype and a
64-bit checksum of its bits in ``meta``; at restore the checksum is recomputed from the
restored arrays and compared. The checksum of an array ``u`` (its bits as ``uint32`` words,
row-major index ``i``) is the pair ``(sum_i u_i (2i + 1), sum_i h(u_i, i))`` mod 2^32, ``h`` a
mixing hash: one flipped bit changes ``u_i`` by ``±2^b``, hence the first sum by
``±2^b (2i + 1) != 0`` mod 2^32 (an odd factor), so every single-bit fault is caught. It is
computed on the devices by one jitted reduction over the global arrays, so every process of
a multi-host job gets the same value without gathering any array.

Restore outcomes (:meth:`Checkpointer.restore`):

- shapes, dtypes or tree structure differ from the target: :class:`CheckpointMismatchError`
  (a different model, not a damaged file; never moved aside);
- unreadable files or a checksum mismatch: :class:`CorruptCheckpointError`;
  :meth:`Checkpointer.restore_latest` warns, naming the failing and the previous step, moves
  it aside to ``<directory>.unreadable/`` (unless ``move_aside=False``, as read-only commands
  pass) and falls back to the previous one.

Saves surface their errors at once: :meth:`Checkpointer.save` raises
:class:`~flowjax.training.faults.CheckpointSaveError` (one line naming the directory and the
cause) for a failure of this or an earlier asynchronous save.

Multi-host: every process calls ``save`` and ``restore`` (orbax writes each process's shards
and coordinates the commit); the fallback decision is agreed between processes.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax import lax

from flowjax.parallel import multihost
from flowjax.training.faults import CheckpointMismatchError, CheckpointSaveError, describe_error

log = logging.getLogger(__name__)

INTEGRITY_KEY = "integrity"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose files cannot be read or whose arrays fail their checksums."""


# -- checksums --------------------------------------------------------------------------------
def _words(x: jax.Array) -> jax.Array:
    """The bits of ``x`` as uint32 words (16- and 8-bit types widened, 64-bit types split)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = jnp.dtype(x.dtype).itemsize
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[size]
    return lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _leaf_checksum(x: jax.Array) -> jax.Array:
    u = _words(x)
    index = jnp.zeros(u.shape, jnp.uint32)
    stride = 1
    for d in reversed(range(u.ndim)):  # row-major index without reshaping a sharded array
        index = index + lax.broadcasted_iota(jnp.uint32, u.shape, d) * jnp.uint32(stride)
        stride = (stride * u.shape[d]) % 2**32
    first = jnp.sum(u * (2 * index + 1), dtype=jnp.uint32)
    h = (u ^ (u >> 16)) * jnp.uint32(0x45D9F3B) + index * jnp.uint32(0x9E3779B9)
    h = (h ^ (h >> 13)) * jnp.uint32(0x85EBCA6B)
    second = jnp.sum(h ^ (h >> 16), dtype=jnp.uint32)
    return jnp.stack([first, second])


_checksums = jax.jit(lambda tree: jax.tree.map(_leaf_checksum, tree))


def _host(x: jax.Array) -> np.ndarray:
    # The checksums are replicated: every process reads its own copy.
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_shards[0].data)
    return np.asarray(jax.device_get(x))


def integrity_record(tree: Any) -> dict[str, list]:
    """``{path: [shape, dtype, [checksum_a, checksum_b]]}`` for every array leaf of ``tree``."""
    sums = _checksums(tree)
    out = {}
    for (path, leaf), (_, s) in zip(
        jax.tree_util.tree_leaves_with_path(tree), jax.tree_util.tree_leaves_with_path(sums)
    ):
        out[jax.tree_util.keystr(path)] = [
            list(leaf.shape),
            str(leaf.dtype),
            [int(v) for v in _host(s)],
        ]
    return out


def _structure(abstract: Any) -> dict[str, tuple[list, str]]:
    return {
        jax.tree_util.keystr(p): (list(x.shape), str(x.dtype))
        for p, x in jax.tree_util.tree_leaves_with_path(abstract)
    }


def structure_differences(record: dict, abstract: Any, limit: int | None = 3) -> list[str]:
    """How the leaves recorded at save differ from ``abstract`` (empty if they match)."""
    want = _structure(abstract)
    have = {k: (v[0], v[1]) for k, v in record.items()}
    diffs = [f"{k} missing in the checkpoint" for k in want if k not in have]
    diffs += [f"{k} not in the config's state" for k in have if k not in want]
    diffs += [
        f"{k} is {have[k][0]} {have[k][1]} in the checkpoint, {want[k][0]} {want[k][1]} here"
        for k in want
        if k in have and (tuple(have[k][0]) != tuple(want[k][0]) or have[k][1] != want[k][1])
    ]
    return diffs[:limit]


def shape_differences(tree: Any, abstract: Any, limit: int | None = 3) -> list[str]:
    """:func:`structure_differences` of the arrays of ``tree`` against ``abstract``."""
    record = {k: [shape, dtype] for k, (shape, dtype) in _structure(tree).items()}
    return structure_differences(record, abstract, limit)


def weights_differ(differences: list[str]) -> bool:
    """Whether :func:`structure_differences` touch the network's weights (``params`` or
    ``ema_params``), which another run's weights cannot then initialise either (a difference
    only in the optimizer state still lets ``config.init.workdir`` start from them)."""
    return any(d.startswith((".params", ".ema_params")) for d in differences)


def start_afresh_advice(differences: list[str], workdir: str) -> str:
    """What a user can do when a run's state has other shapes than a new config's."""
    if weights_differ(differences):
        return (
            "use a new workdir (the network's shapes differ, so this run's weights cannot "
            "start it either)"
        )
    return f"use a new workdir (config.init.workdir={workdir} starts from this run's weights)"


def verify(record: dict, tree: Any) -> list[str]:
    """Paths of the leaves of ``tree`` whose checksums differ from ``record``."""
    now = integrity_record(tree)
    return [k for k, v in now.items() if k in record and list(record[k][2]) != v[2]]


# -- the checkpointer -------------------------------------------------------------------------
class _RaisedAgain(logging.Filter):
    """Drops orbax's multi-line tracebacks of a failed background save (the save's error is
    raised again, as one line, by :meth:`Checkpointer.check_for_errors` / ``wait``) and its
    notes on a read-only manager (which :meth:`Checkpointer.__init__` asks for on purpose)."""

    _ERRORS = ("background save thread", "_SignalingThread.run() raised", "Finalize thread")
    _NOTES = ("Given directory is read only", "read_only=True, setting max_to_keep")

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if record.levelno >= logging.ERROR:
            return not any(m in message for m in self._ERRORS)
        return not any(m in message for m in self._NOTES)


_FILTER = _RaisedAgain()


class Checkpointer:
    def __init__(
        self,
        directory: str,
        *,
        max_to_keep: int = 3,
        async_save: bool = True,
        read_only: bool = False,
    ):
        if _FILTER not in logging.getLogger("absl").filters:
            logging.getLogger("absl").addFilter(_FILTER)
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self.max_to_keep = max_to_keep
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else max_to_keep,
            enable_async_checkpointing=async_save and not read_only,
            create=not read_only,
            read_only=read_only,
            # a read-only manager saves nothing: 0 here, else orbax warns that it sets it so
            save_interval_steps=0 if read_only else 1,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "meta"), options=options
        )
        self._saving: int | None = None  # the step of the save that may still be running
        self.failed: CheckpointSaveError | None = None

    # -- saving ---------------------------------------------------------------------------
    def save(self, step: int, state: Any, meta: dict | None = None, *, force: bool = True) -> bool:
        """Start saving ``state`` at ``step`` (returns once device arrays are copied out).

        Raises :class:`CheckpointSaveError` if this save cannot start or an earlier
        asynchronous one failed.
        """
        self.wait()  # orbax waits for the previous save anyway; its failure is named as its own
        meta = dict(meta or {})
        meta[INTEGRITY_KEY] = integrity_record(state)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        try:
            saved = self.manager.save(int(step), args=args, force=force)
        except Exception as err:  # noqa: BLE001 - reported as one line naming the cause
            self._fail(int(step), err)
        self._saving = int(step)
        return saved

    def _fail(self, step: int, err: BaseException):
        self.failed = CheckpointSaveError(step, self.directory, err)
        raise self.failed from err

    def check_for_errors(self) -> None:
        """Raise :class:`CheckpointSaveError` if an asynchronous save has finished and failed
        (does not block while it is still running)."""
        if self.failed is not None:
            raise self.failed
        if self._saving is not None and self._save_finished():
            self.wait()

    def _save_finished(self) -> bool:
        """Whether orbax's background save has ended (with or without an error)."""
        try:  # orbax keeps no public "ended" flag: a failed save stays "in progress"
            return bool(
                self.manager._finalize_thread.map(lambda t: t is not None and not t.is_alive())
            )
        except AttributeError:  # another orbax version
            return not self.manager.is_saving_in_progress()

    def wait(self) -> None:
        """Wait for the running save; its failure is a :class:`CheckpointSaveError`."""
        if self.failed is not None:
            raise self.failed
        try:
            self.manager.wait_until_finished()
            self.manager.check_for_errors()
        except Exception as err:  # noqa: BLE001
            self._fail(self._saving if self._saving is not None else -1, err)
        self._saving = None

    # -- listing --------------------------------------------------------------------------
    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    # -- restoring ------------------------------------------------------------------------
    def restore(self, step: int, abstract_state: Any, *, check: bool = True) -> tuple[Any, dict]:
        """``(state, meta)`` of ``step``, verified against its checksums (see the module
        docstring for the errors)."""
        step = int(step)
        meta = self.meta(step)
        record = meta.get(INTEGRITY_KEY)
        if record:
            diffs = structure_differences(record, abstract_state, limit=None)
            if diffs:
                raise CheckpointMismatchError(self._mismatch(step, diffs))
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        try:
            state = self.manager.restore(step, args=args)["state"]
        except Exception as err:  # noqa: BLE001
            if not record and _looks_like_mismatch(err):
                raise CheckpointMismatchError(self._mismatch(step, [describe_error(err)])) from err
            raise CorruptCheckpointError(f"unreadable ({describe_error(err)})") from err
        if record and check:
            bad = verify(record, state)
            if bad:
                more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
                raise CorruptCheckpointError(f"checksum mismatch in {bad[0]}{more}")
        return state, meta

    def meta(self, step: int) -> dict:
        """The ``meta`` item of ``step`` (config, integrity record, ...) without its arrays."""
        try:
            meta = self.manager.restore(
                int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
            return dict(meta["meta"] or {})
        except Exception as err:  # noqa: BLE001
            raise CorruptCheckpointError(f"unreadable meta ({describe_error(err)})") from err

    def _mismatch(self, step: int, diffs: list[str]) -> str:
        # Without an integrity record (diffs is orbax's error) the weights may differ.
        advice = (
            start_afresh_advice(diffs, os.path.dirname(self.directory))
            if diffs[0].startswith(".")
            else "use a new workdir"
        )
        return (
            f"the checkpoint at step {step} in {self.directory} holds a state of another "
            f"shape than the config's ({'; '.join(diffs[:3])}); {advice}"
        )

    def restore_latest(
        self, abstract_state: Any, *, move_aside: bool = True
    ) -> tuple[Any, dict, int] | None:
        """Restore the newest verified checkpoint; ``None`` if there is none.

        A checkpoint that is unreadable or fails its checksums is reported with a warning
        naming it and the step restored instead, and (``move_aside``) moved to
        ``<directory>.unreadable/<step>-<time>`` (kept for inspection, out of the way of the
        resumed run, which will save that step again). A shape or structure mismatch raises
        :class:`CheckpointMismatchError` and moves nothing.
        """
        steps = list(reversed(self.steps()))
        for i, step in enumerate(steps):
            error = None
            try:
                state, meta = self.restore(step, abstract_state)
            except CheckpointMismatchError:
                raise
            except Exception as err:  # noqa: BLE001 - unreadable or corrupt
                error = err
            # Every process must take the same branch (multi-host): corrupt anywhere means
            # corrupt everywhere.
            if multihost.any_process(error is not None):
                previous = steps[i + 1] if i + 1 < len(steps) else None
                log.warning(
                    "checkpoint at step %d in %s failed verification: %s; falling back to %s",
                    step,
                    self.directory,
                    _reason(error) if error is not None else "on another process",
                    f"the checkpoint at step {previous}" if previous is not None else "step 0",
                )
                if move_aside:
                    self.move_aside(step)
                continue
            return state, meta, step
        return None

    def move_aside(self, step: int, reason: str = "unreadable") -> str | None:
        """Process 0 moves the step's directory to ``<directory>.<reason>/``; everyone waits,
        then re-lists."""
        target = None
        if jax.process_index() == 0:
            aside = f"{self.directory}.{reason}"
            os.makedirs(aside, exist_ok=True)
            target = os.path.join(aside, f"{step}-{int(time.time())}")
            os.replace(os.path.join(self.directory, str(step)), target)
            log.warning("moved the checkpoint at step %d to %s", step, target)
        multihost.barrier(f"flowjax_move_aside_{step}")
        self.manager.reload()
        return target

    def prune(self) -> list[int]:
        """Delete the oldest checkpoints beyond ``max_to_keep`` (orbax only does so after a
        save: a run killed mid-deletion, or a lowered ``keep_checkpoints``, leaves more)."""
        steps = self.steps()
        extra = steps[: max(0, len(steps) - int(self.max_to_keep))]
        if extra and jax.process_index() == 0:
            for step in extra:
                shutil.rmtree(os.path.join(self.directory, str(step)), ignore_errors=True)
            log.info("removed old checkpoints %s (keep_checkpoints=%d)", extra, self.max_to_keep)
        if extra:
            multihost.barrier("flowjax_prune")
            self.manager.reload()
        return extra

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self.failed is None:
                self.manager.close()


def _reason(err: BaseException) -> str:
    return str(err) if isinstance(err, CorruptCheckpointError) else describe_error(err)


def _looks_like_mismatch(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, (ValueError, TypeError, KeyError)) and any(
        w in text for w in ("shape", "structure", "tree", "dtype", "missing", "unexpected key")
    )


def abstract_like(tree: Any) -> Any:
    """``ShapeDtypeStruct``s (with shardings) of a pytree of arrays, as a restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )
