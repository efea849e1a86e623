"""Learn a step schedule or bespoke coefficients for a trained run, and store them.

    python -m flowjax.calibrate --workdir=RUN --solver=unipc2 --nfe=4             # grid
    python -m flowjax.calibrate --workdir=RUN --solver=bespoke-unipc2 --nfe=4     # coefficients
    python -m flowjax.sample --workdir=RUN --solver=unipc2 --nfe=4 --grid=learned
    python -m flowjax.sample --workdir=RUN --solver=bespoke-unipc2 --nfe=4

Restores the newest checkpoint of ``RUN`` (EMA parameters; the guided field if the run's
``config.eval.cfg_scale`` asks for guidance), draws ``--calibration`` noises (and labels, for
a conditional model) from ``--seed``, solves them with the reference (``tsit5``, or
``rk4:N``), fits the grid (``--solver=NAME``) or the bespoke coefficients on top of a base
solver (``--solver=bespoke-NAME``; ``bespoke`` alone means ``bespoke-unipc2``) with Adam, and
stores the result in ``RUN/learned_schedules.json`` keyed by (kind, solver, NFE, M,
reference, seed, slack, requested initial grid, checkpoint step). A stored result is reused
unless ``--force``.

It reports the calibration NFE (reference + one forward pass per Adam step; each step's
gradient adds one VJP per evaluation), the seconds, and the RMS error against the reference
on ``--calibration`` *held-out* noises (another key), for the initial and the learned setting.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from absl import app, flags

from flowjax import console

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define this command's flags (once). Called by :func:`run`, not at import, so that a
    process importing several flowjax workflows (e.g. the tests) never defines a flag twice.
    """
    if "calibration" in FLAGS:
        return
    flags.DEFINE_string("workdir", None, "Training directory (with config.json and checkpoints/).")
    flags.DEFINE_string("solver", "unipc2", "Solver whose grid to learn, or bespoke-<base solver>.")
    flags.DEFINE_integer("nfe", None, "Number of velocity evaluations per sample.")
    flags.DEFINE_integer("calibration", 256, "Calibration noises M.")
    flags.DEFINE_string("reference", "tsit5", "Reference solve: tsit5, dopri5, dopri8 or rk4:N.")
    flags.DEFINE_string(
        "init",
        "best",
        "Grid spec the optimisation starts from, or 'best' (the fixed grid among uniform, "
        "diffusers, logsnr, edm, shifted,alpha=3 with the lowest calibration loss).",
    )
    flags.DEFINE_integer("iters", 300, "Adam steps.")
    flags.DEFINE_float("lr", None, "Adam step size (default 0.05 for grids, 0.02 for bespoke).")
    flags.DEFINE_float("slack", 0.0, "LD3-style slack radius (RMS units).")
    flags.DEFINE_integer("seed", 0, "Calibration seed.")
    flags.DEFINE_bool("force", False, "Recompute even if a stored result exists.")
    flags.mark_flags_as_required(["workdir", "nfe"])


def calibration_batch(seed: int, m: int, element_shape, num_classes, offset: int = 30_000):
    import jax

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
    """Everything the CLI does; returns a report (``run`` = a loaded ``load_run`` tuple)."""
    import jax
    import jax.numpy as jnp

    from flowjax import solvers
    from flowjax.sampling import load_run
    from flowjax.solvers import bespoke, learned
    from flowjax.velocity import make_velocity_fn

    kind, base = bespoke.split_name(solver_name)
    solver = solvers.make_solver(base)
    solver.num_steps_for_nfe(nfe)  # clear error before loading anything
    learned.parse_reference(reference)
    config, exp, params, step = run or load_run(workdir)
    if exp.average_velocity:
        raise ValueError(
            "learned schedules are for instantaneous-velocity solvers; this run trains an "
            "average-velocity model (use --solver=flowmap with flowjax.sample)"
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


def main(argv):
    del argv
    console.setup_logging()  # WARNING unless -v, no backend-probe line
    try:
        report = calibrate_run(
            os.path.abspath(FLAGS.workdir),
            FLAGS.solver,
            FLAGS.nfe,
            calibration=FLAGS.calibration,
            reference=FLAGS.reference,
            init=FLAGS.init,
            iters=FLAGS.iters,
            lr=FLAGS.lr,
            slack=FLAGS.slack,
            seed=FLAGS.seed,
            force=FLAGS.force,
        )
    except ValueError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
    s = report["schedule"]
    print(
        f"{report['key']}: {'reused' if report['reused'] else 'computed'}; calibration "
        f"NFE={s['calibration_nfe']} in {s['seconds']:.1f}s (M={s['num_calibration']}, "
        f"ref={s['reference']}); calibration RMSE {s['initial_loss'] ** 0.5:.4g} -> "
        f"{s['loss'] ** 0.5:.4g}; held-out RMSE {report['heldout_rmse_initial']:.4g} -> "
        f"{report['heldout_rmse_learned']:.4g}"
    )
    print(f"grid: {[round(t, 4) for t in s['times']]}")
    print(f"stored in {report['store']}")


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
