"""BOSS straightening fine-tune ("redress"; docs/maths/boss.md).

Training tuples come from the pretrained model's own fine-grid trajectories read off at
consecutive Bellman times ``a = t_{i_k} < b = t_{i_{k+1}}`` (noise at t = 0, data at t = 1):
``(x_a, x_b, a, b)``. The velocity at ``(x_a, a)`` is regressed onto the chord::

    L(theta) = E || v_theta(x_a, a, c) - (x_b - x_a) / (b - a) ||^2_mean

so that one Euler step on the chosen grid lands where the fine trajectory went. The loss is
exactly zero for a field whose trajectories are straight lines traversed at constant speed
(then every chord equals the velocity). Batches are dicts with ``x_a``, ``x_b`` ``[B, ...]``,
``a``, ``b`` ``[B]`` and, for class-conditional models, ``label`` ``[B]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from flowjax.types import ApplyFn, Array, Metrics, Objective


@dataclasses.dataclass(frozen=True)
class BossStraightening(Objective):
    """The straightening objective; ``num_classes`` for class-conditional models."""

    batch_keys = ("x_a", "x_b", "a", "b")

    num_classes: int | None = None

    def loss_fn(
        self, params: Any, apply_fn: ApplyFn, batch: dict[str, Array], key: Array
    ) -> tuple[Array, Metrics]:
        x_a, x_b, a, b = batch["x_a"], batch["x_b"], batch["a"], batch["b"]
        cond = batch.get("label") if self.num_classes is not None else None
        if self.num_classes is not None and cond is None:
            raise ValueError("a class-conditional straightening objective needs batch['label']")
        gap = (b - a).reshape((-1,) + (1,) * (x_a.ndim - 1))
        target = (x_b - x_a) / gap
        v = apply_fn(params, x_a, a, cond, train=True, rng=key)
        per_sample = jnp.mean(((v - target) ** 2).reshape(x_a.shape[0], -1), axis=1)
        loss = jnp.mean(per_sample)
        return loss, {"loss": loss}


def straightening_tuples(traj: Array, grid, indices, labels: Array | None = None) -> dict:
    """Tuples ``(x_a, x_b, a, b[, label])`` from trajectories at consecutive chosen indices.

    Args:
      traj: ``[N + 1, M, ...]`` states of ``M`` trajectories on the fine ``grid`` (``N + 1``
        times).
      indices: the ``K + 1`` chosen fine-grid indices (e.g. a BOSS schedule's ``indices``).
      labels: optional ``[M]`` class labels of the trajectories.

    Returns:
      numpy arrays with ``K M`` rows: ``x_a``, ``x_b`` ``[K M, ...]``, ``a``, ``b`` ``[K M]``
      (and ``label``), segment-major.
    """
    traj = np.asarray(traj)
    grid = np.asarray(grid, np.float64)
    idx = np.asarray(indices, np.int64)
    if traj.shape[0] != grid.shape[0]:
        raise ValueError(f"traj has {traj.shape[0]} time points but the grid has {grid.shape[0]}")
    if idx.ndim != 1 or idx.size < 2 or np.any(np.diff(idx) <= 0) or idx[-1] >= grid.shape[0]:
        raise ValueError(f"indices must be >= 2 increasing fine-grid indices; got {idx}")
    m = traj.shape[1]
    x_a = traj[idx[:-1]].reshape((-1,) + traj.shape[2:])
    x_b = traj[idx[1:]].reshape((-1,) + traj.shape[2:])
    a = np.repeat(grid[idx[:-1]], m).astype(traj.dtype)
    b = np.repeat(grid[idx[1:]], m).astype(traj.dtype)
    out = {"x_a": x_a, "x_b": x_b, "a": a, "b": b}
    if labels is not None:
        out["label"] = np.tile(np.asarray(labels), idx.size - 1)
    return out
