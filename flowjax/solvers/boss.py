"""BOSS: Bellman-optimal step sizes for a K-step sampler (Nguyen, Nguyen, Nguyen).

Maths: docs/maths/boss.md.

Time convention: noise at t = 0, data at t = 1 (the BOSS code uses the same).

1. Calibration: integrate ``M`` starting noises over a fine grid ``t_0 < ... < t_N`` with the
   model itself (:func:`reference_trajectories`; Euler as in the paper, or any solver), keeping
   the states ``x_i``.
2. Cost of jumping from fine index ``i`` to ``j > i`` in one step of the sampler (Euler by
   default, which costs no evaluation beyond ``v_i = v(x_i, t_i)``)::

       c(i, j) = (1/M) sum_m || step(x_i^m, t_i -> t_j) - x_j^m ||^2      (sum over elements)

   :func:`jump_costs` returns the ``[N + 1, N + 1]`` matrix, ``+inf`` where ``j <= i``.
3. Dynamic program over "at index i with k steps left" (:func:`bellman_path`)::

       V(i, 1) = c(i, N),     V(i, k) = min_{i < j < N} c(i, j) + V(j, k - 1)

   vectorised over ``i`` and ``j`` (``O(K N^2)`` time, ``O(N^2 + K N)`` memory), then
   backtracking gives ``0 = i_0 < i_1 < ... < i_K = N`` and the times ``t_{i_k}``.

The result is a :class:`BossSchedule`: a small value holding the ``K + 1`` times (a grid any
solver can use), its cost and how it was made, saved as JSON next to a checkpoint with
:class:`ScheduleStore` and reused. The straightening fine-tune (§8.3) lives in
:mod:`flowjax.objectives.straightening` and :func:`flowjax.workflows.boss.straighten`.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import console
from flowjax.solvers.base import bind_condition, check_inputs, sample
from flowjax.solvers.dpm_solver_pp import DPMSolverPP
from flowjax.solvers.euler import Euler
from flowjax.solvers.learned.store import JsonScheduleStore, StoredSchedule
from flowjax.time import grids
from flowjax.types import Array, Solver, VelocityFn

# ---------------------------------------------------------------------------------------------
# Calibration and costs
# ---------------------------------------------------------------------------------------------


def reference_trajectories(
    velocity_fn: VelocityFn,
    x0: Array,
    fine_grid,
    cond: Any = None,
    *,
    solver: Solver | None = None,
) -> Array:
    """States ``[N + 1, M, ...]`` of the calibration batch ``x0 [M, ...]`` on the fine grid.

    ``solver`` defaults to Euler (the paper's choice: the sampler then tries to reproduce the
    model's own fine-grid Euler solution); a higher-order solver gives a more accurate target.
    """
    _, traj = sample(solver or Euler(), velocity_fn, x0, fine_grid, cond, return_trajectory=True)
    return traj


def uses_euler_cost(solver: Solver | None) -> bool:
    # The first step of any DPM-Solver++ is first order, i.e. Euler.
    return solver is None or isinstance(solver, (Euler, DPMSolverPP))


def jump_costs(
    velocity_fn: VelocityFn,
    traj: Array,
    fine_grid,
    cond: Any = None,
    *,
    solver: Solver | None = None,
) -> np.ndarray:
    """The BOSS cost matrix ``c(i, j)`` (float64 ``[N + 1, N + 1]``, ``+inf`` where ``j <= i``).

    ``traj [N + 1, M, ...]`` are the calibration states on ``fine_grid`` (``N + 1`` times).
    With ``solver=None`` (or Euler, or DPM-Solver++, whose single step is Euler) a jump is
    one Euler step and the only evaluations are ``v(x_i, t_i)``, ``i < N`` (``M N`` NFE).
    Any other one-step solver is costed by running its step from every ``(x_i, t_i)`` to every
    ``t_j`` (``M N (N + 1) nfe_per_step`` NFE: fine for small models).
    """
    grid = grids.validate_grid(np.asarray(fine_grid))
    traj = jnp.asarray(traj)
    if traj.ndim < 2 or traj.shape[0] != grid.shape[0]:
        raise ValueError(
            f"traj must be [N + 1, M, ...] with N + 1 = {grid.shape[0]} fine-grid times; got "
            f"shape {traj.shape}"
        )
    check_inputs(traj[0], cond)
    n = grid.shape[0] - 1
    rows = np.asarray(_cost_rows(velocity_fn, traj, jnp.asarray(grid, traj.dtype), cond, solver))
    costs = np.full((n + 1, n + 1), np.inf)
    costs[:n] = rows.astype(np.float64)
    costs[np.tril_indices(n + 1)] = np.inf
    return costs


def _cost_rows(velocity_fn, traj, ts, cond, solver):
    """``[N, N + 1]``: row ``i`` = mean over the batch of the squared jump error to every j."""
    n, batch = ts.shape[0] - 1, traj.shape[1]
    f = bind_condition(velocity_fn, cond, batch)
    reduce_axes = tuple(range(2, traj.ndim))

    if uses_euler_cost(solver):

        def row(i):
            v = f(traj[i], ts[i])
            dt = (ts - ts[i]).reshape((-1,) + (1,) * (traj.ndim - 1))
            err = traj[i][None] + dt * v[None] - traj  # [N + 1, M, ...]
            return jnp.mean(jnp.sum(err**2, axis=reduce_axes), axis=1)

    else:

        def row(i):
            def one(t_next, target):
                x_i = traj[i]
                pred, _ = solver.step(f, x_i, ts[i], t_next, solver.init(x_i), jnp.array(0), 1)
                return jnp.mean(jnp.sum(((pred - target) ** 2).reshape(batch, -1), axis=1))

            return jax.vmap(one)(ts, traj)

    return jax.jit(lambda: jax.lax.map(row, jnp.arange(n)))()


# ---------------------------------------------------------------------------------------------
# Dynamic program
# ---------------------------------------------------------------------------------------------


def bellman_path(costs: np.ndarray, num_steps: int) -> tuple[np.ndarray, float]:
    """Cheapest path of exactly ``num_steps`` jumps from fine index 0 to ``N``.

    Args:
      costs: ``[N + 1, N + 1]`` jump costs; entries with ``j <= i`` are ignored.
      num_steps: ``K`` with ``1 <= K <= N``.

    Returns:
      ``(indices, cost)``: ``K + 1`` strictly increasing fine-grid indices from 0 to ``N`` and
      the summed cost of their jumps. Ties go to the earliest next index.
    """
    costs = np.asarray(costs, np.float64)
    if costs.ndim != 2 or costs.shape[0] != costs.shape[1] or costs.shape[0] < 2:
        raise ValueError(f"costs must be a square [N + 1, N + 1] matrix, N >= 1; got {costs.shape}")
    n = costs.shape[0] - 1
    k_max = int(num_steps)
    if k_max < 1 or k_max > n:
        raise ValueError(
            f"BOSS cannot pick K={num_steps} steps from a fine grid of N={n} steps: need "
            f"1 <= K <= N; use a finer calibration grid (fine_steps >= {max(k_max, 1)}) or fewer "
            "steps"
        )
    if np.isnan(costs).any():
        raise ValueError("costs contain NaN; the calibration trajectories diverged")
    c = np.where(np.triu(np.ones_like(costs, dtype=bool), k=1), costs, np.inf)
    value = np.full(n + 1, np.inf)
    value[n] = 0.0  # V(., 0): only the end index with no steps left
    choice = np.zeros((k_max + 1, n + 1), np.int64)
    for k in range(1, k_max + 1):
        total = c + value[None, :]
        choice[k] = np.argmin(total, axis=1)
        value = total[np.arange(n + 1), choice[k]]
    if not np.isfinite(value[0]):
        raise ValueError(f"no finite-cost path of {k_max} steps; check the cost matrix")
    path = [0]
    for k in range(k_max, 0, -1):
        path.append(int(choice[k][path[-1]]))
    return np.asarray(path, np.int64), float(value[0])


def brute_force_path(costs: np.ndarray, num_steps: int) -> tuple[np.ndarray, float]:
    """Exhaustive search over all ``C(N - 1, K - 1)`` paths (for tests; tiny N only)."""
    costs = np.asarray(costs, np.float64)
    n = costs.shape[0] - 1
    best, best_cost = None, np.inf
    for inner in itertools.combinations(range(1, n), num_steps - 1):
        path = (0, *inner, n)
        cost = sum(costs[a, b] for a, b in zip(path[:-1], path[1:]))
        if cost < best_cost:
            best, best_cost = path, cost
    return np.asarray(best, np.int64), float(best_cost)


def path_cost(costs: np.ndarray, indices) -> float:
    idx = np.asarray(indices)
    return float(np.sum(np.asarray(costs)[idx[:-1], idx[1:]]))


# ---------------------------------------------------------------------------------------------
# The schedule value and its storage
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BossSchedule(StoredSchedule):
    """A K-step grid chosen by BOSS, with how it was made.

    Attributes:
      times: ``K + 1`` increasing times (noise -> data); ``grid`` gives them as numpy.
      indices: the fine-grid indices of ``times``.
      cost: ``V(0, K)``, the summed calibration cost of the chosen jumps.
      uniform_cost: the cost of the K-step path with equally spaced fine indices (``N % K``
        must be 0, else ``None``); ``cost <= uniform_cost`` always.
      solver: the solver whose one-step jumps were costed (``"euler"`` for the paper's cost).
      reference: the solver that made the fine-grid calibration trajectories.
      fine_steps: ``N``; num_calibration: ``M``; step: the checkpoint step (or -1).
    """

    times: tuple[float, ...]
    indices: tuple[int, ...]
    cost: float
    uniform_cost: float | None
    solver: str
    reference: str
    fine_steps: int
    num_calibration: int
    step: int = -1

    @property
    def num_steps(self) -> int:
        return len(self.times) - 1

    @property
    def key(self) -> str:
        return schedule_key(
            self.solver,
            self.num_steps,
            self.fine_steps,
            self.num_calibration,
            self.reference,
            self.step,
        )

    @classmethod
    def from_dict(cls, d: dict) -> BossSchedule:
        d = dict(d)
        d["times"] = tuple(float(t) for t in d["times"])
        d["indices"] = tuple(int(i) for i in d["indices"])
        return cls(**d)


def schedule_key(
    solver: str,
    num_steps: int,
    fine_steps: int,
    num_calibration: int,
    reference: str,
    step: int = -1,
) -> str:
    return f"{solver}|K={num_steps}|N={fine_steps}|M={num_calibration}|ref={reference}|step={step}"


def compute_schedule(
    velocity_fn: VelocityFn,
    x0: Array,
    num_steps: int,
    *,
    fine_steps: int = 100,
    t_min: float = 0.0,
    cond: Any = None,
    solver: Solver | None = None,
    reference_solver: Solver | None = None,
    step: int = -1,
    progress: bool | None = None,
) -> BossSchedule:
    """Run the calibration, the costs and the DP; return the K-step :class:`BossSchedule`.

    Args:
      velocity_fn: the model as ``v(x, t, cond)``.
      x0: calibration noise ``[M, ...]``.
      num_steps: ``K``, the number of steps of the sampler that will use the grid.
      fine_steps: ``N`` (uniform fine grid from ``t_min`` to 1; the paper uses 100).
      solver: whose one-step jumps to cost (default Euler, the paper's cost).
      reference_solver: integrator of the calibration trajectories (default Euler).
      step: the checkpoint step the model came from (recorded in the key).
      progress: a bar over the three stages (``None``: when stderr is a terminal).
    """
    if int(num_steps) > int(fine_steps):
        raise ValueError(
            f"BOSS cannot pick K={num_steps} steps from a fine grid of N={fine_steps} steps; "
            f"use fine_steps >= {num_steps}"
        )
    fine = grids.uniform_grid(int(fine_steps), t_min, 1.0)
    with console.progress_bar(3, desc="BOSS: calibration", unit="stage", enabled=progress) as bar:
        traj = jax.block_until_ready(
            reference_trajectories(velocity_fn, x0, fine, cond, solver=reference_solver)
        )
        bar.set_description("BOSS: jump costs")
        bar.update(1)
        costs = jump_costs(velocity_fn, traj, fine, cond, solver=solver)
        bar.set_description("BOSS: dynamic programme")
        bar.update(1)
        indices, cost = bellman_path(costs, int(num_steps))
        bar.update(1)
    k, n = int(num_steps), int(fine_steps)
    uniform_cost = path_cost(costs, np.arange(0, n + 1, n // k)) if n % k == 0 else None
    return BossSchedule(
        times=tuple(float(fine[i]) for i in indices),
        indices=tuple(int(i) for i in indices),
        cost=cost,
        uniform_cost=uniform_cost,
        solver="euler" if uses_euler_cost(solver) else solver.name,
        reference=(reference_solver or Euler()).name,
        fine_steps=n,
        num_calibration=int(x0.shape[0]),
        step=int(step),
    )


class ScheduleStore(JsonScheduleStore):
    """BOSS schedules in one JSON file (e.g. ``<workdir>/boss_schedules.json``), by key.

    The key records the costed solver, K, the fine grid N, the calibration size M, the
    reference integrator and the checkpoint step, so a schedule is reused only for the model
    and setting it was computed for. Reading, atomic writing and ``get_or_compute`` are
    :class:`~flowjax.solvers.learned.store.JsonScheduleStore`'s.
    """

    entry_type = BossSchedule
