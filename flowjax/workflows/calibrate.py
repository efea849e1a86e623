"""Learn a step schedule or bespoke coefficients for a trained run, and store them: the job
behind ``flowjax calibrate``.

    flowjax calibrate --workdir=RUN --solver=unipc2 --nfe=4             # grid
    flowjax calibrate --workdir=RUN --solver=bespoke-unipc2 --nfe=4     # coefficients
    flowjax sample --workdir=RUN --solver=unipc2 --nfe=4 --grid=learned
    flowjax sample --workdir=RUN --solver=bespoke-unipc2 --nfe=4

:func:`calibrate_run` restores the newest checkpoint of ``RUN`` (EMA parameters; the guided
field if the run's ``config.eval.cfg_scale`` asks for guidance), draws ``calibration`` noises
(and labels, for a conditional model) from ``seed``, solves them with the reference
(``tsit5``, or ``rk4:N``), fits the grid (``solver_name=NAME``) or the bespoke coefficients on
top of a base solver (``bespoke-NAME``; ``bespoke`` alone means ``bespoke-unipc2``) with Adam,
and stores the result in ``RUN/learned_schedules.json`` keyed by (kind, solver, NFE, M,
reference, seed, slack, requested initial grid, checkpoint step). A stored result is reused
unless ``force``.

It reports the calibration NFE (reference + one forward pass per Adam step; each step's
gradient adds one VJP per evaluation), the seconds, and the RMS error against the reference
on ``calibration`` *held-out* noises (another key), for the initial and the learned setting.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp

from flowjax import solvers
from flowjax.solvers import learned
from flowjax.solvers.learned import bespoke
from flowjax.training import load_run
from flowjax.velocity import make_velocity_fn


def calibration_batch(seed: int, m: int, element_shape, num_classes, offset: int = 30_000):
    """``(x0 [m, *element_shape], labels [m] or None)`` drawn from ``seed + offset``."""
    k_x, k_c = jax.random.split(jax.random.PRNGKey(int(seed) + offset))
    x0 = jax.random.normal(k_x, (m, *element_shape))
    labels = jax.random.randint(k_c, (m,), 0, num_classes) if num_classes else None
    return x0, labels


def calibrate_run(
    workdir: str,
    solver_name: str,
    nfe: int,
    *,
    calibration: int = 256,
    reference: str = "tsit5",
    init: str = "best",
    iters: int = 300,
    lr: float | None = None,
    slack: float = 0.0,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    run: Any = None,
) -> dict:
    """Everything ``flowjax calibrate`` does; returns a report (``run``: an already loaded
    :func:`flowjax.training.load_run` tuple)."""
    kind, base = bespoke.split_name(solver_name)
    solver = solvers.make_solver(base)
    solver.num_steps_for_nfe(nfe)  # clear error before loading anything
    learned.parse_reference(reference)
    config, exp, params, step = run or load_run(workdir)
    if exp.average_velocity:
        raise ValueError(
            "learned schedules are for instantaneous-velocity solvers; this run trains an "
            "average-velocity model (use --solver=flowmap with flowjax sample)"
        )
    v = make_velocity_fn(
        exp.apply_fn,
        num_classes=exp.num_classes,
        cfg_scale=float(config.eval.get("cfg_scale", 1.0)),
        cfg_interval=config.eval.get("cfg_interval", None),
    )

    def velocity(x, t, c):
        return v(params, x, t, c)

    shape = tuple(exp.data.element_shape)
    x0, labels = calibration_batch(seed, calibration, shape, exp.num_classes)
    store = learned.LearnedStore(os.path.join(workdir, learned.STORE_NAME))
    key = learned.schedule_key(
        kind, base, nfe, calibration, reference, seed, step, slack, init=init
    )
    found = None if force else store.get(key)
    t0 = time.perf_counter()
    if found is None:
        common = dict(
            cond=labels,
            reference=reference,
            init=init,
            iters=iters,
            slack=slack,
            seed=seed,
            step=step,
            element_shape=shape,
            progress=progress,
        )
        if kind == "grid":
            schedule = learned.learn_grid(
                solver, velocity, x0, nfe, lr=0.05 if lr is None else lr, **common
            )
        else:
            _, schedule = bespoke.learn(
                solver, velocity, x0, nfe, lr=0.02 if lr is None else lr, **common
            )
        store.put(schedule)
    else:
        schedule = found
    seconds = time.perf_counter() - t0
    # Held-out check: other noises (and labels), their own reference.
    hx, hl = calibration_batch(seed, calibration, shape, exp.num_classes, offset=40_000)
    h_ref, _ = learned.reference_endpoints(velocity, hx, hl, reference)
    k = solver.num_steps_for_nfe(nfe)
    g0 = jnp.asarray(learned.init_grid(schedule.init, k), hx.dtype)  # the resolved start
    x_init = jax.jit(lambda a, c: solvers.sample(solver, velocity, a, g0, c))(hx, hl)
    if kind == "grid":
        g = jnp.asarray(schedule.grid, hx.dtype)
        x_new = jax.jit(lambda a, c: solvers.sample(solver, velocity, a, g, c))(hx, hl)
    else:
        sampler = bespoke.Bespoke.from_schedule(schedule)
        x_new = jax.jit(lambda a, c: sampler(velocity, a, c))(hx, hl)

    def rmse(x):
        return float(jnp.sqrt(jnp.mean((x - h_ref) ** 2)))

    return {
        "key": key,
        "reused": found is not None,
        "schedule": schedule.to_dict(),
        "seconds": seconds,
        "heldout_rmse_initial": rmse(x_init),
        "heldout_rmse_learned": rmse(x_new),
        "store": store.path,
    }
