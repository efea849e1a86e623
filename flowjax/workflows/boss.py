"""BOSS jobs on a trained run: its step schedule, stored, and the straightening fine-tune.

:func:`boss_grid`: the Bellman-optimal schedule of K steps for a solver, computed from a
calibration batch of the model's own trajectories once and stored in
``RUN/boss_schedules.json`` keyed by (costed solver, K, N, M, reference integrator, checkpoint
step); ``flowjax sample --solver=boss`` uses it.

:func:`straighten` (docs/maths/boss.md), ``straighten(config, workdir, init_params, schedule)``:

1. integrates ``num_trajectories`` noises (t = 0) to data (t = 1) on the schedule's fine grid
   with the pretrained model (the schedule's reference integrator), in chunks;
2. reads the states off at consecutive Bellman times ``a < b`` of the K-step schedule:
   ``K * num_trajectories`` tuples ``(x_a, x_b, a, b[, label])``;
3. runs :func:`flowjax.training.train_and_evaluate` from ``init_params`` on those tuples with
   :class:`~flowjax.objectives.straightening.BossStraightening`
   (``||v(x_a, a) - (x_b - x_a)/(b - a)||^2``), so checkpoints, EMA, resumption, evaluation
   and metrics are the ones of any other run. ``config`` is the pretrained run's config with
   the fine-tune's optimizer and step count (the paper: Adam, lr 2e-4, grad clip 1).

One fine-tuned model serves one K (the paper's choice); sample it with Euler on the schedule.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import data as data_lib
from flowjax import solvers
from flowjax.objectives.straightening import BossStraightening, straightening_tuples
from flowjax.solvers import boss
from flowjax.time import grids
from flowjax.training.loop import Experiment, train_and_evaluate
from flowjax.velocity import make_velocity_fn


def boss_grid(
    workdir: str,
    velocity,
    solver,
    num_steps: int,
    *,
    element_shape,
    num_classes: int | None,
    fine_steps: int,
    calibration: int,
    reference: str,
    step: int,
    seed: int = 0,
):
    """The BOSS schedule for ``solver`` with ``num_steps`` steps: stored, or computed and stored."""

    store = boss.ScheduleStore(os.path.join(workdir, "boss_schedules.json"))
    costed = solver if not boss.uses_euler_cost(solver) else None
    key = boss.schedule_key(
        "euler" if costed is None else solver.name,
        num_steps,
        fine_steps,
        calibration,
        reference,
        step,
    )

    def compute():
        k_noise, k_label = jax.random.split(jax.random.PRNGKey(seed + 20_000))
        x0 = jax.random.normal(k_noise, (calibration, *element_shape))
        labels = (
            jax.random.randint(k_label, (calibration,), 0, num_classes) if num_classes else None
        )
        return boss.compute_schedule(
            velocity,
            x0,
            num_steps,
            fine_steps=fine_steps,
            cond=labels,
            solver=costed,
            reference_solver=solvers.make_solver(reference),
            step=step,
        )

    return store.get_or_compute(key, compute)


def make_straightening_data(
    exp: Experiment,
    params: Any,
    schedule: boss.BossSchedule,
    *,
    num_trajectories: int,
    seed: int,
    chunk: int = 1024,
) -> dict[str, np.ndarray]:
    """The ``(x_a, x_b, a, b[, label])`` tuples of ``num_trajectories`` model trajectories."""
    fine = grids.uniform_grid(schedule.fine_steps, schedule.times[0], 1.0)
    if not np.allclose(fine[list(schedule.indices)], schedule.times):
        raise ValueError("the schedule's times are not on a uniform fine grid from its first time")
    velocity = make_velocity_fn(exp.apply_fn, num_classes=exp.num_classes)
    reference = solvers.make_solver(schedule.reference)

    @jax.jit
    def trajectories(x0, labels):
        def v(x, t, c):
            return velocity(params, x, t, c)

        return boss.reference_trajectories(v, x0, fine, labels, solver=reference)

    key = jax.random.PRNGKey(seed)
    parts, label_parts = [], []
    for start in range(0, num_trajectories, chunk):
        n = min(chunk, num_trajectories - start)
        k_noise, k_label = jax.random.split(jax.random.fold_in(key, start))
        x0 = jax.random.normal(k_noise, (n, *exp.data.element_shape), jnp.float32)
        labels = (
            jax.random.randint(k_label, (n,), 0, exp.num_classes)
            if exp.num_classes is not None
            else None
        )
        parts.append(np.asarray(trajectories(x0, labels)))
        if labels is not None:
            label_parts.append(np.asarray(labels))
    traj = np.concatenate(parts, axis=1)
    labels = np.concatenate(label_parts) if label_parts else None
    return straightening_tuples(traj, fine, schedule.indices, labels)


def straighten(
    config: Any,
    workdir: str,
    init_params: Any,
    schedule: boss.BossSchedule,
    *,
    num_trajectories: int = 5000,
    progress: bool | None = None,
) -> dict:
    """Fine-tune ``init_params`` to follow the model's own trajectories on ``schedule``.

    Returns the summary of :func:`flowjax.training.train_and_evaluate` (``workdir`` holds
    the fine-tuned run; re-running resumes it).
    """
    if num_trajectories < 1:
        raise ValueError(f"num_trajectories must be >= 1; got {num_trajectories}")
    exp = Experiment(config)
    tuples = make_straightening_data(
        exp, init_params, schedule, num_trajectories=num_trajectories, seed=int(config.seed) + 1
    )
    source = data_lib.ArraySource(
        tuples, base=exp.data, batch_size=int(config.train.batch_size), seed=int(config.seed)
    )
    return train_and_evaluate(
        config,
        workdir,
        data=source,
        objective=BossStraightening(num_classes=exp.num_classes),
        init_params=init_params,
        progress=progress,
    )
