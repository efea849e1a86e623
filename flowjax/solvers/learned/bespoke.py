"""Learned solver coefficients: bespoke non-stationary samplers on top of any flowjax solver.

Time convention: noise at t = 0, data at t = 1; the sampler integrates ``dx/dt = v(x, t, cond)``.

The general form. Every flowjax ODE solver without thresholding (Euler, Heun, midpoint, RK4,
DPM-Solver++ 1/2M/3M, with or without the UniC corrector) is, on a fixed grid, *linear* in the
starting noise and in the velocities it has evaluated: if ``u_k = v(X_k, tau_k)`` is its
``k``-th evaluation (``k = 0 .. J - 1``, ``J = NFE``), then the point of the next evaluation and
the output are

    X_j   = x0 + sum_{k < j} beta_{jk} u_k          (j = 0 .. J - 1, evaluated at tau_j)
    x_out = x0 + sum_{k < J} beta_{Jk} u_k

with scalar coefficients ``beta`` (lower triangular) that depend only on the grid. (DPM-Solver++
is affine in the data predictions ``m = x + (1 - t) v``, and those in ``x`` and ``v``; the
coefficient of ``x0`` is 1 for all of them, see below.) :func:`extract_tableau` reads
``tau`` and ``beta`` off the base solver exactly, by running it once on a scalar problem with
the velocities as free inputs and taking the Jacobian; each ``tau_j`` is written as
``t_i + c_j (t_{i+1} - t_i)`` in the step ``i`` that made it (``c_j`` = 0, 1/2 or 1).

This is the non-stationary form of Bespoke Non-Stationary solvers (Shaul et al. 2024): each
row has its own coefficients. We learn them, and the grid, end to end against a reference.

Consistency. A valid integrator must be exact when the trajectory is a straight line at
constant speed (``v = c`` along it; e.g. point-mass data): then ``u_k = c`` and
``X_j = x0 + (tau_j - t_0) c`` is needed, i.e. the coefficient of ``x0`` is 1 and

    sum_k beta_{jk} = tau_j - t_0           (tau_J = t_K, the end of the grid)

Parametrisation (satisfies the constraint for every parameter value):

    grid   = grid_from_logits(theta)                      (monotone, fixed ends)
    tau_j  = t_{i_j} + c_j (t_{i_j + 1} - t_{i_j})
    w_j    = w_j^base + delta_j - mean_{k < j}(delta_j)   (an affine combination: sum_k w_jk = 1)
    beta_j = (tau_j - t_0) w_j

with ``w_j^base = beta_j^base / (tau_j^base - t_0)`` from the base solver on its initial grid.
At initialisation (``theta`` = that grid, ``delta = 0``) it reproduces the base solver (to
rounding: 1e-12 in float64), and on straight trajectories it is exact for any parameters. The
learned time scaling is the grid; the learned coefficients are ``delta``.

Cost: one evaluation per row, like the base solver; memory ``J`` velocity buffers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.solvers.base import bind_condition, check_inputs, make_solver
from flowjax.solvers.learned.calibration import endpoint_loss, optimise, prepare_calibration
from flowjax.solvers.learned.grid import (
    grid_from_logits,
    grid_from_logits_np,
    init_grid,
    logits_from_grid,
)
from flowjax.solvers.learned.store import STORE_NAME, LearnedSchedule, LearnedStore
from flowjax.time import grids
from flowjax.types import Array, Solver, VelocityFn


@dataclasses.dataclass(frozen=True)
class Tableau:
    """The base solver read as ``X_j = x0 + sum_k beta_jk u_k`` on a grid (numpy float64).

    Attributes:
      step_of: ``[J]`` the step ``i`` in which evaluation ``j`` happens.
      frac: ``[J]`` ``c_j`` with ``tau_j = t_i + c_j (t_{i+1} - t_i)``.
      weights: ``[J + 1, J]`` ``w_jk = beta_jk / (tau_j - t_0)`` (0 on and above the diagonal
        and on row 0); row ``J`` is the output.
      grid: the grid it was read on; x0_coef: ``[J + 1]`` the coefficients of ``x0`` (all 1).
    """

    step_of: np.ndarray
    frac: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    x0_coef: np.ndarray

    @property
    def num_evals(self) -> int:
        return int(self.step_of.shape[0])


def extract_tableau(solver: Solver, grid) -> Tableau:
    """Read ``tau`` and ``beta`` off ``solver`` on ``grid`` (exact: a Jacobian of its steps)."""
    if getattr(solver, "needs_end_time", False):
        raise ValueError(
            f"{solver.name} integrates average velocities; bespoke needs an ODE solver"
        )
    if getattr(solver, "thresholding", None) is not None:
        raise ValueError("thresholding makes the solver nonlinear in v; bespoke needs it off")
    g = grids.validate_grid(grid)
    k = g.shape[0] - 1
    if k < solver.min_steps:
        raise ValueError(f"{solver.name} needs at least {solver.min_steps} steps; got {k}")
    num_evals = solver.nfe(k)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    ts = jnp.asarray(g, dtype)
    record: dict[str, list] = {"t": [], "step": []}

    def run(x0, u):
        xs, current = [], [0]

        def f(x, t):
            j = len(xs)
            if j >= num_evals:
                raise ValueError(f"{solver.name} evaluated more than its {num_evals} NFE")
            xs.append(x[0, 0])
            record["t"].append(float(t))
            record["step"].append(current[0])
            return jnp.full_like(x, u[j])

        x = x0.reshape(1, 1)
        state = solver.init(x)
        for i in range(k):
            current[0] = i
            x, state = solver.step(f, x, ts[i], ts[i + 1], state, jnp.asarray(i), k)
        if len(xs) != num_evals:
            raise ValueError(f"{solver.name} made {len(xs)} evaluations, expected {num_evals}")
        return jnp.stack([*xs, x[0, 0]])

    x0 = jnp.zeros((), dtype)
    u = jnp.zeros((num_evals,), dtype)
    # The solvers are linear in (x0, u): one forward pass per input column.
    jac_x0, jac_u = jax.jacfwd(run, argnums=(0, 1))(x0, u)
    taus = np.asarray(record["t"][:num_evals], np.float64)
    steps = np.asarray(record["step"][:num_evals], np.int64)
    beta = np.asarray(jac_u, np.float64)
    if np.any(np.abs(np.triu(beta[:num_evals])) > 0):
        raise ValueError(f"{solver.name}: an evaluation depends on itself or a later one")
    h = g[steps + 1] - g[steps]
    frac = (taus - g[steps]) / h
    frac = np.where(np.abs(frac - np.round(frac * 2) / 2) < 1e-6, np.round(frac * 2) / 2, frac)
    span = np.concatenate([g[steps] + frac * h, [g[-1]]]) - g[0]
    weights = np.zeros_like(beta)
    for j in range(num_evals + 1):
        if np.any(beta[j] != 0):
            if span[j] <= 0:
                raise ValueError(f"{solver.name}: evaluation {j} at t_0 depends on velocities")
            weights[j] = beta[j] / span[j]
    return Tableau(steps, frac, weights, g, np.asarray(jac_x0, np.float64))


def init_params(tableau: Tableau, dtype=jnp.float32) -> dict[str, Array]:
    """Parameters that reproduce the base solver: the grid's logits and ``delta = 0``."""
    j = tableau.num_evals
    return {
        "logits": jnp.asarray(logits_from_grid(tableau.grid), dtype),
        "delta": jnp.zeros((j + 1, j), dtype),
    }


def coefficients(tableau: Tableau, params: dict[str, Array]) -> tuple[Array, Array]:
    """``(tau [J], beta [J + 1, J])`` from the parameters (traceable; see the module maths)."""
    dtype = params["delta"].dtype
    t_start, t_end = float(tableau.grid[0]), float(tableau.grid[-1])
    grid = grid_from_logits(params["logits"], t_start, t_end).astype(dtype)
    steps = jnp.asarray(tableau.step_of)
    frac = jnp.asarray(tableau.frac, dtype)
    tau = grid[steps] + frac * (grid[steps + 1] - grid[steps])
    span = jnp.concatenate([tau, jnp.asarray([t_end], dtype)]) - t_start
    j = tableau.num_evals
    mask = jnp.asarray(np.tril(np.ones((j + 1, j)), k=-1), dtype)
    count = jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1.0)
    delta = params["delta"] * mask
    delta = (delta - jnp.sum(delta, axis=1, keepdims=True) / count) * mask
    w = jnp.asarray(tableau.weights, dtype) + delta
    return tau, span[:, None] * w


def sample(
    tableau: Tableau,
    params: dict[str, Array],
    velocity_fn: VelocityFn,
    x0: Array,
    cond: Any = None,
) -> Array:
    """Run the bespoke sampler from ``x0 [B, ...]`` at ``t_0`` to ``t_K`` (``J`` NFE)."""
    check_inputs(x0, cond)
    tau, beta = coefficients(tableau, params)
    tau, beta = tau.astype(x0.dtype), beta.astype(x0.dtype)
    f = bind_condition(velocity_fn, cond, x0.shape[0])
    j_total = tableau.num_evals

    def combine(row, u):
        return x0 + jnp.tensordot(row, u, axes=1)

    def body(u, j):
        x_j = combine(beta[j], u)
        return u.at[j].set(f(x_j, tau[j])), None

    u, _ = jax.lax.scan(body, jnp.zeros((j_total, *x0.shape), x0.dtype), jnp.arange(j_total))
    return combine(beta[j_total], u)


@dataclasses.dataclass(frozen=True)
class Bespoke:
    """A learned sampler: the base solver's tableau and the learned parameters."""

    base: str
    tableau: Tableau
    params: dict

    @property
    def name(self) -> str:
        return f"bespoke-{self.base}"

    @property
    def nfe(self) -> int:
        return self.tableau.num_evals

    def __call__(self, velocity_fn: VelocityFn, x0: Array, cond: Any = None) -> Array:
        return sample(self.tableau, self.params, velocity_fn, x0, cond)

    def make_sampler(self, velocity_fn: Callable[..., Array]):
        """``fn(params, x0, cond=None)`` jitted, like :func:`flowjax.solvers.make_sampler`."""
        tableau, learned_params = self.tableau, self.params

        @jax.jit
        def run(params, x0, cond=None):
            def v(x, t, c):
                return velocity_fn(params, x, t, c)

            lp = jax.tree.map(lambda a: jnp.asarray(a, x0.dtype), learned_params)
            return sample(tableau, lp, v, x0, cond)

        return run

    def to_schedule(self, **fields) -> LearnedSchedule:
        tau_grid = grid_from_logits_np(
            np.asarray(self.params["logits"], np.float64),
            self.tableau.grid[0],
            self.tableau.grid[-1],
        )
        delta = np.asarray(self.params["delta"], np.float64)
        return LearnedSchedule(
            kind="bespoke",
            solver=self.base,
            nfe=self.nfe,
            times=tuple(float(t) for t in tau_grid),
            weights=tuple(tuple(float(w) for w in row) for row in delta),
            **fields,
        )

    @classmethod
    def from_schedule(cls, schedule: LearnedSchedule, init: str | None = None) -> Bespoke:
        """Rebuild from a stored schedule (the tableau is re-read from the base solver on the
        schedule's initial grid spec; the stored times and deltas are the parameters)."""
        if schedule.kind != "bespoke":
            raise ValueError(f"schedule {schedule.key!r} is a {schedule.kind!r} schedule")
        solver = make_solver(schedule.solver)
        k = solver.num_steps_for_nfe(schedule.nfe)
        tableau = extract_tableau(solver, init_grid(init or schedule.init, k))
        params = {
            "logits": jnp.asarray(logits_from_grid(schedule.grid)),
            "delta": jnp.asarray(np.asarray(schedule.weights, np.float64)),
        }
        return cls(schedule.solver, tableau, params)


def learn(
    solver: Solver,
    velocity_fn: VelocityFn,
    x0: Array,
    nfe: int,
    *,
    cond: Any = None,
    reference: str = "tsit5",
    x_ref: Array | None = None,
    init: str = "uniform",
    iters: int = 300,
    lr: float = 0.02,
    slack: float = 0.0,
    seed: int = 0,
    step: int = -1,
    element_shape: tuple[int, ...] | None = None,
    progress: bool = False,
) -> tuple[Bespoke, LearnedSchedule]:
    """Fit a bespoke sampler on ``solver`` at ``nfe`` (arguments as
    :func:`~flowjax.solvers.learned.calibration.learn_grid`).

    Returns the :class:`Bespoke` sampler and its storable
    :class:`~flowjax.solvers.learned.store.LearnedSchedule`.
    """
    cal = prepare_calibration(
        solver,
        velocity_fn,
        x0,
        nfe,
        cond=cond,
        reference=reference,
        x_ref=x_ref,
        init=init,
        iters=iters,
        lr=lr,
        slack=slack,
        seed=seed,
        step=step,
        element_shape=element_shape,
    )
    x_ref = cal.x_ref
    tableau = extract_tableau(solver, init_grid(cal.init, cal.num_steps))
    params0 = init_params(tableau, x0.dtype)

    def loss(p):
        return endpoint_loss(sample(tableau, p, velocity_fn, x0, cond), x_ref, slack)

    best, info = optimise(
        loss, params0, iters=iters, lr=lr, progress=progress, desc=f"bespoke {solver.name}@{nfe}"
    )
    sampler = Bespoke(solver.name, tableau, best)
    schedule = sampler.to_schedule(**cal.schedule_fields(info))
    return sampler, schedule


def is_learned_setting(solver_name: str, grid_spec: str = "uniform") -> bool:
    """True for ``bespoke[-BASE]`` solvers and the ``learned`` grid (stored settings)."""
    return solver_name == "bespoke" or solver_name.startswith("bespoke-") or grid_spec == "learned"


def split_name(solver_name: str) -> tuple[str, str]:
    """``"bespoke-unipc2"`` -> ``("bespoke", "unipc2")`` (``bespoke`` alone: base ``unipc2``);
    any other name -> ``("grid", name)``."""
    if solver_name == "bespoke":
        return "bespoke", "unipc2"
    if solver_name.startswith("bespoke-"):
        return "bespoke", solver_name[len("bespoke-") :]
    return "grid", solver_name


def stored_sampler(workdir: str, solver_name: str, nfe: int, velocity_fn: Callable[..., Array]):
    """``(run, schedule)`` of the newest stored learned setting in ``workdir``.

    ``solver_name`` is ``bespoke[-BASE]`` (learned coefficients) or a solver name (its learned
    grid). ``run(params, x0, cond=None)`` is jitted like :func:`flowjax.solvers.make_sampler`
    (``velocity_fn(params, x, t, cond)``). Raises a ValueError naming the calibrate command
    when nothing is stored.
    """
    import os

    from flowjax.solvers.base import make_sampler

    kind, base = split_name(solver_name)
    store = LearnedStore(os.path.join(workdir, STORE_NAME))
    schedule = store.latest(kind, base, nfe)
    if schedule is None:
        raise ValueError(
            f"no learned {kind} for {base} at NFE={nfe} in {store.path}; run "
            f"flowjax calibrate --workdir={workdir} --solver={solver_name} --nfe={nfe}"
        )
    if kind == "grid":
        return make_sampler(make_solver(base), velocity_fn, schedule.grid), schedule
    return Bespoke.from_schedule(schedule).make_sampler(velocity_fn), schedule
