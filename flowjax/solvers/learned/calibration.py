"""Calibration: learned step schedules for any flowjax solver, fitted end to end against a
reference solve.

Time convention: noise ``x0 ~ N(0, I)`` at t = 0, data at t = 1; a sampler integrates
``dx/dt = v(x, t, cond)`` forward over a grid ``t_0 < t_1 < ... < t_K``.

Every flowjax sampler is a pure JAX program (one ``lax.scan`` over the grid), so its output
``x_K(grid)`` is differentiable in the grid. Given ``M`` calibration noises ``x0^m`` (and their
labels; the guided field under classifier-free guidance) and their reference endpoints
``x_ref^m`` (an adaptive diffrax solve, or RK4 on a fine uniform grid), the grid is fitted by
Adam (optax) on

    L(grid) = (1/M) sum_m  max(0, e_m - r)^2,      e_m = ||x_K^m(grid) - x_ref^m|| / sqrt(D)

(``D`` elements per sample; ``r = slack`` >= 0 is an LD3-style slack: a ball of RMS radius ``r``
around each reference endpoint within which no error is charged; ``r = 0`` is the plain mean
squared error).

Parametrisation (monotone with fixed ends): the logits of :mod:`flowjax.solvers.learned.grid`,
so every iterate is a valid grid. The grid is initialised from any grid spec (uniform by
default: ``theta = log(diff(grid))``; ``init="best"`` starts from whichever of a few fixed
grids has the lowest calibration loss, since the loss is not convex in the grid and a start far
from a good basin under-converges at higher NFE). The best iterate on the calibration loss is
kept, so the learned grid's calibration loss is never above its initial grid's.

Honest evaluation: the calibration noises are used only for fitting; errors are reported on
other noises (:func:`heldout_error`).

Stored and reused like BOSS schedules: a
:class:`~flowjax.solvers.learned.store.LearnedSchedule` (times, for learned coefficients also
the weights of :mod:`flowjax.solvers.learned.bespoke`) lives in
``<workdir>/learned_schedules.json`` (:class:`~flowjax.solvers.learned.store.LearnedStore`),
keyed by kind, solver, NFE, calibration size, reference, seed, slack, the requested initial
grid and checkpoint step.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowjax.solvers.adaptive import AdaptiveSolve
from flowjax.solvers.base import check_inputs, make_solver, sample
from flowjax.solvers.learned.grid import (
    INIT_CANDIDATES,
    grid_from_logits,
    grid_from_logits_np,
    init_grid,
    logits_from_grid,
)
from flowjax.solvers.learned.store import LearnedSchedule
from flowjax.time import grids
from flowjax.types import Array, Solver, VelocityFn

# ---------------------------------------------------------------------------------------------
# Reference endpoints
# ---------------------------------------------------------------------------------------------


def parse_reference(reference: str) -> tuple[str, int | None]:
    """``"tsit5"`` (adaptive, rtol = atol = 1e-6) or ``"rk4:N"`` (N uniform RK4 steps)."""
    name, _, steps = str(reference).partition(":")
    name = name.strip()
    if name in ("tsit5", "dopri5", "dopri8") and not steps:
        return name, None
    if name in ("rk4", "heun", "midpoint", "euler") and steps.strip().isdigit():
        return name, int(steps)
    raise ValueError(
        f"reference {reference!r} must be an adaptive solver ('tsit5', 'dopri5', 'dopri8') or "
        "a fixed solver with its number of steps, e.g. 'rk4:200'"
    )


def reference_endpoints(
    velocity_fn: VelocityFn, x0: Array, cond: Any = None, reference: str = "tsit5"
) -> tuple[Array, int]:
    """``(x_ref [M, ...], nfe)``: the reference solve from ``x0`` and its (batched) NFE."""
    name, steps = parse_reference(reference)
    if steps is None:
        solve = AdaptiveSolve(name, rtol=1e-6, atol=1e-6, max_steps=100_000)
        x, stats = jax.jit(lambda x, c: solve(velocity_fn, x, c))(x0, cond)
        return x, int(stats["nfe"])
    solver = make_solver(name)
    grid = grids.uniform_grid(steps)
    x = jax.jit(lambda x, c: sample(solver, velocity_fn, x, grid, c))(x0, cond)
    return x, solver.nfe(steps)


def check_calibration(
    solver: Solver,
    nfe: int,
    x0: Array,
    cond: Any,
    reference: str,
    element_shape: tuple[int, ...] | None = None,
) -> int:
    """Validate the public inputs of a calibration (before any work); returns ``K``."""
    num_steps = solver.num_steps_for_nfe(nfe)
    x0 = jnp.asarray(x0)
    if x0.ndim < 2 or x0.shape[0] < 1:
        raise ValueError(
            f"calibration noise must be [M, ...] with M >= 1 samples; got shape {x0.shape}"
        )
    if element_shape is not None and tuple(x0.shape[1:]) != tuple(element_shape):
        raise ValueError(
            f"calibration noise has element shape {tuple(x0.shape[1:])} but the model takes "
            f"{tuple(element_shape)}; draw it as [M, *{tuple(element_shape)}]"
        )
    check_inputs(x0, cond)
    _, ref_steps = parse_reference(reference)
    if ref_steps is not None and num_steps > ref_steps:
        raise ValueError(
            f"K={num_steps} steps is more than the reference resolution ({reference!r}: "
            f"{ref_steps} steps); use a finer reference such as 'rk4:{max(4 * num_steps, 100)}' "
            "or 'tsit5'"
        )
    return num_steps


def resolve_init(
    init: str,
    solver: Solver,
    velocity_fn: VelocityFn,
    x0: Array,
    cond: Any,
    x_ref: Array,
    num_steps: int,
    slack: float = 0.0,
) -> tuple[str, dict[str, float]]:
    """``(spec, losses)``: ``init`` itself, or for ``init="best"`` the grid of
    :data:`INIT_CANDIDATES` with the lowest calibration loss for ``solver`` (one forward
    solve of the calibration batch per candidate; ``losses`` maps each candidate to its loss).

    The optimisation is local (the loss is not convex in the grid), so starting from the best
    fixed grid makes the learned setting at least as good as every candidate on the
    calibration batch (the best iterate is kept).
    """
    if init != "best":
        return init, {}
    run = jax.jit(lambda g: endpoint_loss(sample(solver, velocity_fn, x0, g, cond), x_ref, slack))
    losses = {}
    for spec in INIT_CANDIDATES:
        try:
            grid = init_grid(spec, num_steps)
        except ValueError:  # e.g. the log-SNR grid needs K >= 2
            continue
        value = float(run(jnp.asarray(grid, x0.dtype)))
        if math.isfinite(value):
            losses[spec] = value
    if not losses:
        raise ValueError(
            f"every initial grid of {INIT_CANDIDATES} gives a non-finite calibration loss; check "
            "the velocity function and the reference"
        )
    return min(losses, key=losses.get), losses


# ---------------------------------------------------------------------------------------------
# Loss and optimisation (shared with the learned coefficients)
# ---------------------------------------------------------------------------------------------


def endpoint_loss(x: Array, x_ref: Array, slack: float = 0.0) -> Array:
    """``mean_m max(0, e_m - slack)^2`` with ``e_m`` the RMS error of sample ``m``."""
    d = x - x_ref
    e2 = jnp.mean(jnp.reshape(d * d, (d.shape[0], -1)), axis=1)
    if slack == 0.0:
        return jnp.mean(e2)
    pos = e2 > 0
    e = jnp.where(pos, jnp.sqrt(jnp.where(pos, e2, 1.0)), 0.0)  # finite gradient at e = 0
    return jnp.mean(jnp.maximum(e - slack, 0.0) ** 2)


def optimise(
    loss_fn: Callable[[Any], Array],
    params: Any,
    *,
    iters: int,
    lr: float,
    chunk: int = 25,
    progress: bool = False,
    desc: str = "calibrate",
) -> tuple[Any, dict]:
    """Adam (cosine-decayed step size) on ``loss_fn(params)``; returns the best iterate.

    The loop runs in jitted chunks of ``chunk`` steps (one ``lax.scan`` each) so a progress
    bar can follow it. Returns ``(best_params, info)`` with the initial and best losses and
    the loss history.
    """
    if iters < 0:
        raise ValueError(f"iters must be >= 0; got {iters}")
    opt = optax.adam(optax.cosine_decay_schedule(lr, max(iters, 1), alpha=0.05))
    opt_state = opt.init(params)
    value_and_grad = jax.value_and_grad(loss_fn)
    chunk = max(1, min(int(chunk), int(iters)))  # iters = 0 still evaluates the initial loss

    def one(carry, _):
        p, s, best_p, best_l = carry
        loss, g = value_and_grad(p)
        # A non-finite gradient must never move the parameters (it would poison the grid).
        ok = jnp.isfinite(loss) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(g)])
        )
        better = ok & (loss < best_l)
        best_p = jax.tree.map(lambda a, b: jnp.where(better, a, b), p, best_p)
        best_l = jnp.where(better, loss, best_l)
        updates, s_new = opt.update(g, s, p)
        p_new = optax.apply_updates(p, updates)
        p = jax.tree.map(lambda a, b: jnp.where(ok, a, b), p_new, p)
        s = jax.tree.map(lambda a, b: jnp.where(ok, a, b), s_new, s)
        return (p, s, best_p, best_l), (loss, ok)

    @jax.jit
    def run(carry):
        return jax.lax.scan(one, carry, None, length=chunk)

    # The first step evaluates the loss at the initial parameters (best starts at +inf), so
    # the initial loss is the first entry of the history and nothing else is compiled.
    carry = (params, opt_state, params, jnp.asarray(jnp.inf, jnp.result_type(float)))
    history, bad = [], 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iters, desc=desc, leave=False)
    done = 0
    while done < max(iters, 1):  # whole chunks: iters is rounded up to a multiple of chunk
        carry, (losses, oks) = run(carry)
        history += [float(v) for v in np.asarray(losses)]
        bad += int(np.sum(~np.asarray(oks)))
        done += chunk
        if bar is not None:
            bar.update(chunk)
            bar.set_postfix(loss=f"{float(carry[3]):.3g}")
    if bar is not None:
        bar.close()
    init_loss = history[0]
    if not math.isfinite(init_loss):
        raise ValueError(
            f"the calibration loss at the initial setting is {init_loss}; check the velocity "
            "function and the reference (NaN or inf)"
        )
    best_p, best_l = carry[2], float(carry[3])
    return best_p, {
        "initial_loss": init_loss,
        "loss": best_l,
        "history": history,
        "non_finite_steps": bad,
        "steps": done,
    }


# ---------------------------------------------------------------------------------------------
# Learned grids
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The checked inputs of a calibration, shared by :func:`learn_grid` and
    :func:`flowjax.solvers.learned.bespoke.learn` (made by :func:`prepare_calibration`).

    Attributes:
      num_steps: ``K``; x_ref: reference endpoints of ``x0``; ref_nfe: evaluations the
        reference solve spent (0 when ``x_ref`` was given); init: the resolved initial grid
        spec; init_losses: the candidates' losses under ``init="best"`` (else empty);
        settings: the :class:`LearnedSchedule` fields fixed before optimising; started: the
        ``time.perf_counter()`` at the start.
    """

    num_steps: int
    x_ref: Array
    ref_nfe: int
    init: str
    init_losses: dict
    settings: dict
    started: float

    def schedule_fields(self, info: dict) -> dict:
        """The :class:`LearnedSchedule` fields other than kind, solver, NFE, times, weights,
        from ``info`` of :func:`optimise`."""
        nfe = self.settings["nfe"]
        return dict(
            loss=info["loss"],
            initial_loss=info["initial_loss"],
            init=self.init,
            calibration_nfe=int(self.ref_nfe + (info["steps"] + len(self.init_losses)) * nfe),
            seconds=time.perf_counter() - self.started,
            **{k: v for k, v in self.settings.items() if k != "nfe"},
        )


def prepare_calibration(
    solver: Solver,
    velocity_fn: VelocityFn,
    x0: Array,
    nfe: int,
    *,
    cond: Any,
    reference: str,
    x_ref: Array | None,
    init: str,
    iters: int,
    lr: float,
    slack: float,
    seed: int,
    step: int,
    element_shape: tuple[int, ...] | None,
) -> Calibration:
    """Check the arguments, solve the reference (unless ``x_ref`` is given) and resolve
    ``init`` (:func:`resolve_init`); arguments as :func:`learn_grid`."""
    started = time.perf_counter()
    num_steps = check_calibration(solver, nfe, x0, cond, reference, element_shape)
    if slack < 0:
        raise ValueError(f"slack must be >= 0; got {slack}")
    ref_nfe = 0
    if x_ref is None:
        x_ref, ref_nfe = reference_endpoints(velocity_fn, x0, cond, reference)
    elif jnp.shape(x_ref) != jnp.shape(x0):
        raise ValueError(f"x_ref has shape {jnp.shape(x_ref)}; expected {jnp.shape(x0)}")
    resolved, init_losses = resolve_init(
        init, solver, velocity_fn, x0, cond, x_ref, num_steps, slack
    )
    settings = dict(
        nfe=int(nfe),
        requested_init=init,
        reference=reference,
        num_calibration=int(x0.shape[0]),
        seed=int(seed),
        step=int(step),
        slack=float(slack),
        iters=int(iters),
        lr=float(lr),
    )
    return Calibration(num_steps, x_ref, ref_nfe, resolved, init_losses, settings, started)


def grid_loss_fn(solver, velocity_fn, x0, cond, x_ref, t_start, t_end, slack=0.0):
    """``logits -> L(grid_from_logits(logits))`` (traceable)."""

    def loss(logits):
        grid = grid_from_logits(logits, t_start, t_end)
        x = sample(solver, velocity_fn, x0, grid.astype(x0.dtype), cond)
        return endpoint_loss(x, x_ref, slack)

    return loss


def learn_grid(
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
    lr: float = 0.05,
    slack: float = 0.0,
    seed: int = 0,
    step: int = -1,
    element_shape: tuple[int, ...] | None = None,
    progress: bool = False,
) -> LearnedSchedule:
    """Fit the ``K + 1`` times of ``solver`` at ``nfe`` evaluations to the reference.

    Args:
      solver: any flowjax ODE solver (one-step or multistep).
      velocity_fn: ``v(x, t, cond)`` (guided already, under CFG).
      x0: calibration noise ``[M, ...]``; cond: its labels (``[M]``) or None.
      nfe: evaluations per sample (``K = nfe / solver.nfe_per_step`` steps).
      reference: ``"tsit5"`` or ``"rk4:N"`` (:func:`parse_reference`); x_ref: precomputed
        reference endpoints of ``x0`` (skips the reference solve).
      init: grid spec the optimisation starts from (its ends stay fixed), or ``"best"``: the
        candidate of :data:`INIT_CANDIDATES` with the lowest calibration loss (the schedule
        records the chosen spec).
      slack: LD3-style slack radius (RMS units), 0 for the plain MSE.
      seed, step: recorded in the key (the caller drew ``x0`` from ``seed``).
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
    g0 = init_grid(cal.init, cal.num_steps)
    t_start, t_end = float(g0[0]), float(g0[-1])
    logits0 = jnp.asarray(logits_from_grid(g0), x0.dtype)
    loss = grid_loss_fn(solver, velocity_fn, x0, cond, cal.x_ref, t_start, t_end, slack)
    best, info = optimise(
        loss, logits0, iters=iters, lr=lr, progress=progress, desc=f"grid {solver.name}@{nfe}"
    )
    grid = grid_from_logits_np(np.asarray(best, np.float64), t_start, t_end)
    # Float64 rebuild of the best logits; fall back to the initial grid if rounding ever
    # collapsed two points (it keeps the learned <= initial guarantee).
    try:
        grids.validate_grid(grid)
    except ValueError:
        grid = g0
    return LearnedSchedule(
        kind="grid",
        solver=solver.name,
        nfe=int(nfe),
        times=tuple(float(t) for t in grid),
        **cal.schedule_fields(info),
    )


def heldout_error(run: Callable[[Array, Any], Array], x0: Array, cond: Any, x_ref: Array) -> float:
    """RMS over samples and elements of ``run(x0, cond) - x_ref`` on noises never calibrated."""
    x = run(x0, cond)
    return float(jnp.sqrt(jnp.mean((x - x_ref) ** 2)))
