"""The monotone grid parametrisation of learned step schedules (noise t = 0, data t = 1).

``K`` free logits ``theta`` give increments ``softmax(theta) * (t_K - t_0)`` whose cumulative sum
places the inner points; the ends ``t_0``, ``t_K`` are constants (0 and 1 by default), so every
iterate of an optimiser is a valid grid: strictly increasing, inside ``[t_0, t_K]``. A grid
``g`` has the logits ``log(diff(g))``. A calibration starts from a grid spec
(:func:`init_grid`) or, under ``init="best"``, from the one of :data:`INIT_CANDIDATES` with the
lowest calibration loss (:func:`flowjax.solvers.learned.calibration.resolve_init`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.time import grids
from flowjax.types import Array


def grid_from_logits(logits: Array, t_start: float = 0.0, t_end: float = 1.0) -> Array:
    """``K`` logits -> the ``K + 1`` times ``t_start < ... < t_end`` (ends are constants)."""
    inc = jax.nn.softmax(logits) * (t_end - t_start)
    inner = t_start + jnp.cumsum(inc)[:-1]
    ends = jnp.asarray([t_start, t_end], inner.dtype)
    return jnp.concatenate([ends[:1], inner, ends[1:]])


def logits_from_grid(grid) -> np.ndarray:
    """Logits whose :func:`grid_from_logits` is ``grid`` (up to rounding)."""
    g = grids.validate_grid(grid)
    return np.log(np.diff(g))


def grid_from_logits_np(logits: np.ndarray, t_start: float, t_end: float) -> np.ndarray:
    """:func:`grid_from_logits` in numpy float64 (for storing a learned grid)."""
    inc = np.exp(logits - logits.max())
    inc = inc / inc.sum() * (t_end - t_start)
    return np.concatenate([[t_start], t_start + np.cumsum(inc)[:-1], [t_end]])


#: The fixed grids ``init="best"`` chooses from (by calibration loss, never held-out data).
INIT_CANDIDATES = ("uniform", "diffusers", "logsnr", "edm", "shifted,alpha=3")


def init_grid(spec: str, num_steps: int) -> np.ndarray:
    """The ``num_steps + 1`` times of grid ``spec`` a calibration starts from."""
    return grids.grid_from_spec(spec, num_steps)
