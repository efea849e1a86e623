"""Multi-host (multi-process) helpers on top of JAX's own distributed runtime.

A multi-host job runs the same program on every host; ``jax.distributed.initialize`` joins the
processes (from flags, or from the TPU / SLURM / Open MPI environment when called without
arguments), after which ``jax.devices()`` lists the devices of all processes and a jitted
function runs as one SPMD program over the global mesh. What each process must still agree on
by itself, and the helpers here provide:

- **decisions** taken from process-local events (a SIGTERM that reached one host, a checkpoint
  that failed to read on one host): :func:`any_process` turns a local flag into the same global
  answer on every process with one tiny all-gather;
- **the batch layout**: process ``i`` of ``P`` reads rows ``[i b, (i + 1) b)`` of each global
  batch (``b = B / P``); :func:`check_process_rows` verifies that the batch sharding places
  exactly those rows on the process's devices, so
  ``jax.make_array_from_process_local_data`` builds the intended global batch;
- **host copies** of global arrays (samples for evaluation): :func:`to_host`.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

log = logging.getLogger(__name__)


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """``jax.distributed.initialize`` with the given values, or from the environment.

    With no arguments this is a no-op unless the environment describes a cluster JAX
    recognises (a Cloud TPU pod slice, SLURM, Open MPI): call it as ``initialize()`` there.
    """
    if coordinator_address or num_processes:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
        log.info(
            "joined %d processes as process %d (%d local / %d global devices)",
            jax.process_count(),
            jax.process_index(),
            jax.local_device_count(),
            jax.device_count(),
        )


def any_process(flag: bool) -> bool:
    """``True`` on every process iff ``flag`` is true on at least one (a collective call:
    every process must call it at the same point)."""
    if jax.process_count() == 1:
        return bool(flag)
    flags = multihost_utils.process_allgather(np.asarray(bool(flag), np.int32))
    return bool(np.any(flags))


def sum_over_processes(values: np.ndarray) -> np.ndarray:
    """The sum of ``values`` (float64) over every process (a collective call)."""
    values = np.asarray(values, np.float64)
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier called ``name``."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def to_host(x: jax.Array) -> np.ndarray:
    """The full value of a (possibly multi-host sharded) array as numpy, on every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def process_rows(sharding: NamedSharding, global_batch: int) -> tuple[int, int]:
    """The contiguous rows ``[lo, hi)`` of a global batch that this process's devices hold."""
    index_map = sharding.addressable_devices_indices_map((global_batch,))
    rows = set()
    for index in index_map.values():
        sl = index[0]
        start, stop, _ = sl.indices(global_batch)
        rows.update(range(start, stop))
    lo, hi = min(rows), max(rows) + 1
    if len(rows) != hi - lo:
        raise ValueError(
            f"process {jax.process_index()} holds non-contiguous rows of the batch under "
            f"{sharding}; order the mesh so each process's devices are adjacent on the batch axes"
        )
    return lo, hi


class PreemptionSync:
    """Turn per-process stop requests (SIGTERM seen by one host) into one global decision.

    ``should_stop(step, requested)`` is called by every process after every step. With one
    process it returns ``requested`` at once. With several, the processes exchange their flags
    every ``every`` steps (one all-gather of an int32), so all of them stop after the same
    step and save the same checkpoint; a request waits at most ``every - 1`` steps.
    """

    def __init__(self, every: int = 10):
        if every < 1:
            raise ValueError(f"the preemption check interval must be >= 1 step; got {every}")
        self.every = int(every)

    def should_stop(self, step: int, requested: bool) -> bool:
        if jax.process_count() == 1:
            return bool(requested)
        if step % self.every:
            return False
        return any_process(requested)
