"""The solver contract and the one `lax.scan` driver that runs any solver over a time grid.

A *velocity function* has the signature ``v(x, t, cond) -> array like x`` with ``x`` of shape
``[B, ...]`` and ``t`` of shape ``[B]`` (noise at t=0, data at t=1). Models are adapted into
this form by closing over their parameters, so solvers never see parameters. An
*average-velocity function* (MeanFlow, flow maps) also takes the end time:
``u(x, t, cond, t_end) = (Phi_{t -> t_end}(x) - x) / (t_end - t)``, with ``u(x, t, cond, t) =
v(x, t, cond)``; solvers with ``needs_end_time`` (:class:`FlowMap`) integrate those. Tag a
function with :func:`average_velocity` / :func:`instantaneous_velocity` and :func:`sample`
refuses a solver of the other kind with a clear message (untagged functions are trusted; the
flowjax networks check the call themselves).

A *solver* is a small immutable value. It declares its ``order`` and how many velocity
evaluations one step costs (``nfe_per_step``), and implements

    init(x)                                               -> state     (a pytree; default ())
    step(f, x, t, t_next, state, index, num_steps)        -> (x_next, state)

where ``f(x, t)`` is the velocity with a *scalar* time already broadcast over the batch and
the condition already bound (``f(x, t, t_end)`` for solvers with ``needs_end_time``).
``index`` is the step number (a traced int) and ``num_steps``
the static number of steps, for multistep methods with warm-up and lower-order final steps.

:func:`sample` integrates ``dx/dt = v(x, t, cond)`` forward over the grid
``t_0 < t_1 < ... < t_N`` inside one ``jax.lax.scan``, so a whole sampling run is one
compiled program; jit it (or use :func:`make_sampler`) and a new starting noise or a new grid
of the same length reuses the same executable.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.registry import Registry
from flowjax.time import grids
from flowjax.types import Array, ScalarTimeVelocity, Solver, VelocityFn
from flowjax.velocity import tag_velocity, velocity_kind


def check_inputs(x0: Array, cond: Any) -> None:
    """Check that every leaf of ``cond`` has the batch size of ``x0`` (public boundary)."""
    if jnp.ndim(x0) < 1:
        raise ValueError(f"x0 must have a leading batch axis; got shape {jnp.shape(x0)}")
    batch = x0.shape[0]
    for leaf in jax.tree.leaves(cond):
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != batch:
            raise ValueError(
                f"cond must have the batch size of x ({batch}) on its leading axis; "
                f"got a cond array of shape {jnp.shape(leaf)} for x of shape {x0.shape}"
            )


def _grid_array(grid, dtype) -> Array:
    if isinstance(grid, jax.core.Tracer):
        return grid.astype(dtype)
    grids.validate_grid(np.asarray(grid))
    return jnp.asarray(grid, dtype=dtype)


def bind_condition(
    velocity_fn: VelocityFn, cond: Any, batch: int, *, end_time: bool = False
) -> ScalarTimeVelocity:
    """Turn ``v(x, t[B], cond)`` into ``f(x, t_scalar)`` with ``cond`` bound (with
    ``end_time``: ``u(x, t[B], cond, t_end[B])`` into ``f(x, t_scalar, t_end_scalar)``)."""

    def full(t, x):
        return jnp.full((batch,), t, dtype=x.dtype)

    if end_time:

        def f_end(x, t, t_end):
            return velocity_fn(x, full(t, x), cond, full(t_end, x))

        return f_end

    def f(x, t):
        return velocity_fn(x, full(t, x), cond)

    return f


def check_velocity_kind(solver: Solver, velocity_fn: Callable) -> None:
    """Raise a clear ValueError when a solver and a tagged velocity function do not match."""
    kind = velocity_kind(velocity_fn)
    if kind == "instantaneous" and solver.needs_end_time:
        raise ValueError(
            f"solver {solver.name!r} integrates an average-velocity model u(x, t, cond, t_end) "
            "(MeanFlow, flow maps), but this is an instantaneous velocity v(x, t, cond); use an "
            "ODE solver (euler, heun, midpoint, rk4, dpm++2m, ...) or train with an "
            "average-velocity objective (objective.name='meanflow')"
        )
    if kind == "average" and not solver.needs_end_time:
        raise ValueError(
            f"solver {solver.name!r} integrates an instantaneous velocity v(x, t, cond), but this "
            "is an average-velocity model u(x, t, cond, t_end); sample it with solver 'flowmap' "
            "(x <- x + (t_next - t) u(x, t, t_next)), or integrate its instantaneous velocity "
            "explicitly with solvers.diagonal_velocity(u)"
        )


def sample(
    solver: Solver,
    velocity_fn: VelocityFn,
    x0: Array,
    grid,
    cond: Any = None,
    *,
    return_trajectory: bool = False,
):
    """Integrate ``dx/dt = velocity_fn(x, t, cond)`` from ``grid[0]`` to ``grid[-1]``.

    Args:
      solver: a :class:`Solver` value.
      velocity_fn: ``v(x, t, cond)``; ``t`` arrives with shape ``[B]``.
      x0: starting points ``[B, ...]`` at time ``grid[0]`` (usually noise at t = 0).
      grid: strictly increasing times in [0, 1], shape ``[N + 1]`` for N steps. A concrete
        grid is validated here; a traced grid (inside your own jit) is trusted.
      cond: optional pytree of per-example conditioning (``[B, ...]`` leaves), e.g. labels.
      return_trajectory: also return the states at every grid point, ``[N + 1, B, ...]``.

    Returns:
      ``x`` at ``grid[-1]``, or ``(x, trajectory)`` if ``return_trajectory``.

    Traceable: call it inside ``jax.jit``. Each step costs ``solver.nfe_per_step``
    evaluations, so the total NFE is ``solver.nfe(len(grid) - 1)``.
    """
    check_inputs(x0, cond)
    check_velocity_kind(solver, velocity_fn)
    ts = _grid_array(grid, x0.dtype)
    num_steps = ts.shape[0] - 1
    if num_steps < solver.min_steps:
        raise ValueError(
            f"{solver.name} needs at least {solver.min_steps} steps; the grid has {num_steps}"
            f"{solver.min_steps_note}"
        )
    f = bind_condition(velocity_fn, cond, x0.shape[0], end_time=solver.needs_end_time)

    def body(carry, inputs):
        x, state = carry
        t, t_next, index = inputs
        x_next, state = solver.step(f, x, t, t_next, state, index, num_steps)
        return (x_next, state), (x_next if return_trajectory else None)

    inputs = (ts[:-1], ts[1:], jnp.arange(num_steps))
    (x, _), traj = jax.lax.scan(body, (x0, solver.init(x0)), inputs)
    if return_trajectory:
        return x, jnp.concatenate([x0[None], traj], axis=0)
    return x


def make_sampler(
    solver: Solver,
    velocity_fn: Callable[..., Array],
    grid,
    *,
    return_trajectory: bool = False,
):
    """Compile ``sample`` once for a grid: returns ``fn(params, x0, cond=None)``.

    ``velocity_fn(params, x, t, cond)`` is the model with its parameters as the first
    argument (``velocity_fn(params, x, t, cond, t_end)`` for an average-velocity model and a
    solver with ``needs_end_time``); the parameters are a jit argument (not a baked-in
    constant), so new weights, new noise or new labels of the same shapes reuse the same
    executable. A tag set by :func:`average_velocity` / :func:`instantaneous_velocity` on
    ``velocity_fn`` is checked against the solver here, before anything is traced.
    """
    check_velocity_kind(solver, velocity_fn)
    kind = velocity_kind(velocity_fn)
    grid_np = np.asarray(grid, dtype=np.float64)
    grids.validate_grid(grid_np)
    grid_list = tuple(float(g) for g in grid_np)

    @jax.jit
    def run(params, x0, cond=None):
        ts = jnp.asarray(grid_list, dtype=x0.dtype)

        def v(x, t, c, *t_end):
            return velocity_fn(params, x, t, c, *t_end)

        v = v if kind is None else tag_velocity(v, kind)
        return sample(solver, v, x0, ts, cond, return_trajectory=return_trajectory)

    return run


#: Solvers by name; each entry is ``factory(**kwargs) -> Solver``.
SOLVERS: Registry[Callable[..., Solver]] = Registry("solver")


def register_solver(name: str, factory: Callable[..., Solver]) -> None:
    """Make ``make_solver(name)`` (and ``solver:nfe`` sampler strings) build ``factory()``."""
    SOLVERS[name] = factory


def make_solver(name: str, **kwargs) -> Solver:
    """Build a solver by name (``euler``, ``heun``, ``midpoint``, ``rk4``, ...)."""
    return SOLVERS[name](**kwargs)


def solver_names() -> list[str]:
    return sorted(SOLVERS)
