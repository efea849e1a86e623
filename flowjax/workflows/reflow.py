"""Reflow pairs from a teacher run: the job behind ``flowjax reflow``.

:func:`generate_pairs` restores the teacher's newest checkpoint (EMA weights; the model is
rebuilt from ``DIR/config.json``), draws noise ``z0 ~ N(0, I)`` (noise at t = 0) and, for
class-conditional teachers, uniform labels, integrates the teacher's ODE to t = 1 with any
flowjax solver (or the adaptive diffrax reference, ``solver="tsit5"``, rectified flow's
RK45-style tolerance 1e-5), with the teacher config's CFG scale unless ``cfg_scale`` is given,
and writes the pairs ``(x0 = z0, x1 = z1[, label])`` as a tfds array_record data set
(:func:`flowjax.data.write_pairs`).

Generation is sharded and resumable: shard ``s`` draws its noise from ``fold_in(seed, s)``, so
re-running an interrupted generation writes exactly the missing shards and the result is the
same, byte for byte, as an uninterrupted run, whichever processes wrote which shards (each
record's fields are serialised in sorted order; the solvers are deterministic on one backend).
Several hosts can share the work without any collective: each passes its ``process_index`` and
the ``process_count``, then one finalises (:func:`flowjax.data.pairs.finalize_pairs`).

Then train on the pairs, starting from the teacher (k-rectified flow; one round = 2-RF)::

    flowjax train --config=toy2d_rf --workdir=/tmp/toy
    flowjax reflow --teacher=/tmp/toy --out=/tmp/toy_pairs --num_pairs=100000
    flowjax train --config=toy2d_reflow --workdir=/tmp/toy_2rf \\
        --config.data.pairs_dir=/tmp/toy_pairs --config.init.workdir=/tmp/toy
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import solvers
from flowjax.data import pairs
from flowjax.time import grids
from flowjax.training import load_run
from flowjax.velocity import make_velocity_fn


def make_pair_sampler(
    exp,
    *,
    solver: str,
    nfe: int | None,
    grid: str,
    cfg_scale,
    cfg_interval,
    rtol: float = 1e-5,
    atol: float = 1e-5,
):
    """``(run(params, x0, labels) -> x1, description)`` for the teacher of ``exp``."""
    if exp.average_velocity:
        raise ValueError(
            "reflow integrates an instantaneous-velocity teacher; this run trains an "
            "average-velocity model (sample it with flowjax sample --solver=flowmap instead)"
        )
    velocity = make_velocity_fn(
        exp.apply_fn, num_classes=exp.num_classes, cfg_scale=cfg_scale, cfg_interval=cfg_interval
    )
    if solver in ("tsit5", "dopri5", "dopri8"):
        solve = solvers.AdaptiveSolve(solver, rtol=rtol, atol=atol)

        @jax.jit
        def run(params, x0, labels):
            x1, stats = solve(lambda x, t, c: velocity(params, x, t, c), x0, labels)
            return x1

        return run, {"solver": solver, "rtol": rtol, "atol": atol}
    if nfe is None:
        raise ValueError(f"solver {solver!r} needs --nfe (its number of velocity evaluations)")
    s = solvers.make_solver(solver)
    steps = s.num_steps_for_nfe(nfe)
    return solvers.make_sampler(s, velocity, grids.grid_from_spec(grid, steps)), {
        "solver": solver,
        "nfe": int(nfe),
        "grid": grid,
    }


def generate_pairs(
    teacher: str,
    out_dir: str,
    *,
    num_pairs: int,
    solver: str = "rk4",
    nfe: int | None = 64,
    grid: str = "uniform",
    cfg_scale: float | None = None,
    shard_size: int = 4096,
    chunk: int = 1024,
    seed: int = 0,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    process_index: int = 0,
    process_count: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``num_pairs`` teacher pairs to ``out_dir`` (resumable); returns a report."""
    teacher = os.path.abspath(os.path.expanduser(teacher))
    config, exp, params, step = load_run(teacher)
    scale = float(config.eval.get("cfg_scale", 1.0) if cfg_scale is None else cfg_scale)
    interval = config.eval.get("cfg_interval", None)
    run, description = make_pair_sampler(
        exp,
        solver=solver,
        nfe=nfe,
        grid=grid,
        cfg_scale=scale,
        cfg_interval=interval,
        rtol=rtol,
        atol=atol,
    )
    shape = tuple(exp.data.element_shape)
    chunk = max(1, min(int(chunk), int(shard_size)))
    key = jax.random.PRNGKey(int(seed))

    def shard_fn(index: int, start: int, stop: int) -> dict:
        n = stop - start
        k_noise, k_label = jax.random.split(jax.random.fold_in(key, index))
        x0 = jax.random.normal(k_noise, (n, *shape), jnp.float32)
        labels = (
            None
            if exp.num_classes is None
            else jax.random.randint(k_label, (n,), 0, exp.num_classes)
        )
        parts = []
        for lo in range(0, n, chunk):  # fixed chunk shape: one compiled program
            x = x0[lo : lo + chunk]
            c = None if labels is None else labels[lo : lo + chunk]
            pad = chunk - x.shape[0]
            if pad:
                x = jnp.concatenate([x, jnp.zeros((pad, *shape), x.dtype)])
                c = None if c is None else jnp.concatenate([c, jnp.zeros((pad,), c.dtype)])
            parts.append(np.asarray(run(params, x, c))[: chunk - pad])
        out = {"x0": np.asarray(x0), "x1": np.concatenate(parts)}
        if labels is not None:
            out["label"] = np.asarray(labels)
        return out

    metadata = dict(
        description,
        teacher=teacher,
        teacher_step=int(step),
        cfg_scale=scale,
        cfg_interval=None if interval is None else [float(v) for v in interval],
        seed=int(seed),
        data=str(config.data.name),
    )
    start = time.perf_counter()
    path = pairs.write_pairs(
        out_dir,
        shard_fn,
        num_pairs=int(num_pairs),
        shard_size=int(shard_size),
        element_shape=shape,
        num_classes=exp.num_classes,
        metadata=metadata,
        progress=progress,
        process_index=process_index,
        process_count=process_count,
    )
    seconds = time.perf_counter() - start
    return {
        "out_dir": path,
        "complete": pairs.is_complete(path),
        "seconds": seconds,
        "metadata": metadata,
    }
