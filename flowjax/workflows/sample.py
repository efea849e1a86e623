"""Sample a trained run: the job behind ``flowjax sample``.

:func:`run_sampling` restores the newest checkpoint of a training directory
(:func:`flowjax.training.load_run`), samples with the EMA parameters (noise at t = 0 to data
at t = 1) under one (solver, NFE, grid) setting or one sampler string, scores the samples with
the training evaluator against the run's own held-out data (or skips the scores, saying why,
where :func:`flowjax.training.run_data` cannot rebuild that data) and writes
``<label>.png/.npz/.json``; :mod:`flowjax.cli.sample` is its command line and lists the
outputs. BOSS grids come from :func:`flowjax.workflows.boss.boss_grid`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import data as data_lib
from flowjax import solvers
from flowjax.evaluation.evaluator import Evaluator
from flowjax.solvers.learned import bespoke
from flowjax.solvers.spec import eval_spec_label, parse_eval_spec, sampler_label
from flowjax.spec import parse_spec
from flowjax.time import grids
from flowjax.training import accounting
from flowjax.training.experiment import load_run
from flowjax.velocity import validate_channels
from flowjax.workflows.boss import boss_grid

log = logging.getLogger(__name__)

__all__ = ["STAGES", "SampleOptions", "run_sampling"]

# What run_sampling does, in order (its on_stage hook names each as it ends).
STAGES = ("load", "grid", "compile", "sample", "score", "write")


def run_sampling(
    workdir: str,
    solver_name: str,
    nfe: int,
    grid_spec: str = "uniform",
    *,
    num_samples: int | None = None,
    boss_fine_steps: int = 100,
    boss_calibration: int = 256,
    boss_reference: str = "euler",
    out_dir: str | None = None,
    on_stage: Callable[[str], None] | None = None,
    spec: str | None = None,
    height: int | None = None,
    width: int | None = None,
    rope: str | None = None,
    guidance_channels: Any = None,
) -> dict[str, Any]:
    """Everything ``flowjax sample`` does; returns the report written to ``<label>.json``.

    ``on_stage(name)`` is called as each of :data:`STAGES` ends (the CLI's progress bar).
    ``spec`` (optional) is a full sampler string of ``config.eval.samplers`` form, which
    replaces ``solver_name``/``nfe``/``grid_spec``: per-segment settings of a blockwise model
    (``"euler:2|heun:4"``) and options (``"euler:8@frn"``).

    ``height`` / ``width`` sample images of that size (default: the run's data size) from a
    network that takes it (an any-resolution transformer at any multiple of its patch; a
    network whose weights fix the size is refused); the data-based scores are then skipped.
    ``rope`` replaces the network's ``model.rope`` spec (its rotary extrapolation rule) for this
    sampling only, and ``guidance_channels`` the ``eval.guidance_channels`` of the run.
    """
    stage_done = on_stage or (lambda name: None)

    workdir = os.path.abspath(os.path.expanduser(workdir))
    options = SampleOptions(height, width, rope, guidance_channels)
    if spec is not None:
        return _run_spec(
            workdir,
            spec,
            num_samples=num_samples,
            out_dir=out_dir,
            stage_done=stage_done,
            options=options,
        )
    if int(nfe) < 1:
        raise ValueError(f"nfe={nfe}: must be >= 1")
    if num_samples is not None and int(num_samples) < 1:
        raise ValueError(f"num_samples={num_samples}: must be >= 1")
    if solver_name == "boss":
        solver_name, grid_spec = "euler", "boss"

    learned_name = solver_name if bespoke.is_learned_setting(solver_name, grid_spec) else None
    if learned_name is not None:  # stored learned grid / coefficients (flowjax.calibrate)
        solver_name = bespoke.split_name(solver_name)[1]
        grid_spec = "learned" if learned_name == solver_name else "bespoke"
    solver = solvers.make_solver(solver_name)
    num_steps = solver.num_steps_for_nfe(nfe)
    config, exp, params, step, evaluator = options.load(workdir, num_samples)
    stage_done("load")
    if (grid_spec == "boss" or learned_name is not None) and _has_own_sampler(
        exp, evaluator, solver, nfe
    ):
        raise ValueError(
            f"objective {type(exp.objective).__name__} samples with its own sampler; BOSS and "
            "learned grids are for single-network flows: use a solver and a grid spec"
        )
    if grid_spec == "boss" and exp.average_velocity:
        raise ValueError(
            "BOSS grids are chosen for instantaneous-velocity solvers; this run trains an "
            "average-velocity model: use --solver=flowmap with a uniform or given grid"
        )
    report: dict[str, Any] = {"checkpoint_step": step, "solver": solver.name, "nfe": int(nfe)}
    skipped = data_lib.unavailable_reason(exp.data)
    if skipped:
        report["metrics_skipped"] = f"data-based metrics skipped: {skipped}"
        log.warning("%s", report["metrics_skipped"])
    if grid_spec == "boss":

        def velocity(x, t, c):
            return evaluator.velocity(params, x, t, c)

        t0 = time.perf_counter()
        schedule, reused = boss_grid(
            workdir,
            velocity,
            solver,
            num_steps,
            element_shape=exp.data.element_shape,
            num_classes=exp.num_classes,
            fine_steps=boss_fine_steps,
            calibration=boss_calibration,
            reference=boss_reference,
            step=step,
            seed=int(config.seed),
        )
        grid = schedule.grid
        report["boss"] = dict(schedule.to_dict(), reused=reused, seconds=time.perf_counter() - t0)
    elif learned_name is not None:
        learned_run, schedule = bespoke.stored_sampler(
            workdir, learned_name, int(nfe), evaluator.velocity
        )
        grid = schedule.grid
        report["learned"] = schedule.to_dict()
    else:
        grid = grids.grid_from_spec(grid_spec, num_steps)
    label = sampler_label(solver.name, int(nfe), grid_spec)
    if learned_name is not None:
        evaluator.samplers[label] = learned_run
        evaluator.network_calls[label] = {"full": int(nfe)}
    elif grid_spec == "boss":
        evaluator.add_sampler(label, solver, grid)
    else:  # the objective's own sampler where it has one, else the standard one
        label = evaluator.add_spec([(solver.name, int(nfe), grid_spec)], {})
        grid = _segment_grids(evaluator.samplers[label]) or grid
    title = f"{solver.name}, NFE={nfe}, grid={grid_spec}, step {step}"
    return _sample_and_write(
        exp, params, evaluator, label, report, grid, title, workdir, out_dir, stage_done, options
    )


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """What ``flowjax sample`` may change about a trained run for one sampling: the image size
    (``height`` x ``width``), the network's rotary spec (``rope``) and the guided channels
    (``guidance_channels``); None keeps the run's own."""

    height: int | None = None
    width: int | None = None
    rope: str | None = None
    guidance_channels: Any = None

    def __post_init__(self):
        if (self.height is None) != (self.width is None):
            raise ValueError("give both --height and --width (the size of the sampled images)")
        for side in (self.height, self.width):
            if side is not None and (not isinstance(side, int) or side < 1):
                raise ValueError(f"--height and --width must be positive ints; got {side!r}")
        if self.rope is not None:
            parse_spec(self.rope, kind="rotary position encoding", example="visionyarn")
        if self.guidance_channels is not None:
            object.__setattr__(self, "guidance_channels", validate_channels(self.guidance_channels))

    @property
    def suffix(self) -> str:
        """Appended to the output files' label: ``_32x48``, ``_rope-ntk-theta-1e4``, ..."""
        out = "" if self.height is None else f"_{self.height}x{self.width}"
        if self.rope is not None:
            out += "_rope-" + re.sub(r"[^A-Za-z0-9.]+", "-", self.rope).strip("-")
        if self.guidance_channels is not None:
            out += "_ch" + "-".join(str(c) for c in self.guidance_channels)
        return out

    @property
    def title(self) -> str:
        parts = [] if self.height is None else [f"{self.height}x{self.width}"]
        parts += [] if self.rope is None else [f"rope={self.rope}"]
        return "".join(f", {p}" for p in parts)

    def report(self) -> dict[str, Any]:
        out = {} if self.rope is None else {"rope": self.rope}
        if self.guidance_channels is not None:
            out["guidance_channels"] = list(self.guidance_channels)
        return out

    def load(self, workdir: str, num_samples: int | None):
        """``(config, exp, params, step, evaluator)`` of the run with these options applied."""
        config, exp, params, step = load_run(
            workdir,
            num_samples=num_samples,
            model_fields=None if self.rope is None else {"rope": self.rope},
            eval_fields=(
                None
                if self.guidance_channels is None
                else {"guidance_channels": list(self.guidance_channels)}
            ),
        )
        if self.height is not None:
            exp.data = self._sized(config, exp, params)
        return config, exp, params, step, Evaluator.for_experiment(config, exp, workdir)

    def _sized(self, config, exp, params):
        """The run's data as a shape stand-in at ``height x width`` (no examples: the held-out
        data has the trained size), after checking that the network takes that size."""
        data = exp.data
        if data.kind != "images":
            raise ValueError(
                f"--height/--width sample images; this run's data {data.name!r} is {data.kind}"
            )
        h, w, c = data.element_shape
        if (self.height, self.width) == (h, w):
            return data
        shape = (self.height, self.width, c)
        name = config.model.get("name")
        exp.model.check_input((1, *shape))
        x, t = jnp.zeros((1, *shape)), jnp.zeros((1,))
        cond = None if exp.num_classes is None else jnp.zeros((1,), jnp.int32)
        extra = {"t_end": t} if exp.average_velocity else {}
        try:
            jax.eval_shape(lambda p: exp.apply_fn(p, x, t, cond, **extra), params)
        except ValueError as err:
            raise ValueError(f"{self.height}x{self.width}: {err}") from err
        except Exception as err:  # noqa: BLE001 - weights whose shapes fix the input size
            raise ValueError(
                f"the network of this run (model {name!r}) cannot take {self.height}x"
                f"{self.width} images: its weights fix the input size ({type(err).__name__}); "
                f"sample at the trained {h}x{w}, or train an any-resolution model (fitv2, nextdit)"
            ) from err
        record = {
            "kind": data.kind,
            "name": data.name,
            "element_shape": shape,
            "num_classes": data.num_classes,
        }
        return data_lib.RecordedShapeSource(
            record,
            f"sampled at {self.height}x{self.width}, not the {h}x{w} of the run's data",
        )


def _has_own_sampler(exp, evaluator, solver, nfe: int) -> bool:
    """Whether the run's objective samples with its own sampler (blockwise flows)."""
    return exp.objective.make_sampler(evaluator.velocity, solver, int(nfe), "uniform") is not None


def _segment_grids(run) -> list | None:
    plan = getattr(run, "plan", None)
    return None if plan is None else [list(seg["grid"]) for seg in plan]


def _run_spec(workdir, spec, *, num_samples, out_dir, stage_done, options) -> dict[str, Any]:
    pieces, sampler_options = parse_eval_spec(spec)
    for name, nfe, _ in pieces:
        solvers.make_solver(name).num_steps_for_nfe(nfe)  # clear errors before loading
    config, exp, params, step, evaluator = options.load(workdir, num_samples)
    stage_done("load")
    label = evaluator.add_spec(pieces, sampler_options)
    report: dict[str, Any] = {
        "checkpoint_step": step,
        "solver": "|".join(p[0] for p in pieces),
        "nfe": int(sum(p[1] for p in pieces)),
        "spec": spec,
    }
    skipped = data_lib.unavailable_reason(exp.data)
    if skipped:
        report["metrics_skipped"] = f"data-based metrics skipped: {skipped}"
        log.warning("%s", report["metrics_skipped"])
    run = evaluator.samplers[label]
    grid = _segment_grids(run)
    if grid is None:
        name, nfe, grid_spec = pieces[0]
        grid = grids.grid_from_spec(grid_spec, solvers.make_solver(name).num_steps_for_nfe(nfe))
    title = f"{eval_spec_label(pieces, sampler_options)}, step {step}"
    return _sample_and_write(
        exp, params, evaluator, label, report, grid, title, workdir, out_dir, stage_done, options
    )


def _flat(grid) -> list:
    if len(grid) and isinstance(grid[0], (list, tuple)):
        return [[float(g) for g in seg] for seg in grid]
    return [float(g) for g in grid]


def _sample_and_write(
    exp, params, evaluator, label, report, grid, title, workdir, out_dir, stage_done, options
) -> dict[str, Any]:
    run = evaluator.samplers[label]
    stage_done("grid")

    t0 = time.perf_counter()
    compiled = run.lower(params, evaluator.x0, evaluator.labels).compile()
    compile_seconds = time.perf_counter() - t0
    stage_done("compile")
    jax.block_until_ready(compiled(params, evaluator.x0, evaluator.labels))  # warm-up
    t0 = time.perf_counter()
    samples = np.asarray(jax.device_get(compiled(params, evaluator.x0, evaluator.labels)))
    steady = time.perf_counter() - t0
    # The jitted sampler takes the noise as an argument: a new batch must reuse the program.
    other_noise = jax.random.normal(jax.random.PRNGKey(12345), evaluator.x0.shape)
    for x0 in (evaluator.x0, other_noise):
        jax.block_until_ready(run(params, x0, evaluator.labels))
    stage_done("sample")
    metrics = evaluator.score(samples, label)
    stage_done("score")
    calls = evaluator.network_calls.get(label, {"full": int(report["nfe"])})
    report.update(
        network_calls=calls,
        inference_flops_per_sample=accounting.inference_flops(
            exp.model,
            tuple(exp.data.element_shape),
            calls,
            guided=getattr(evaluator.velocity, "guidance", None) is not None,
        ),
        grid=_flat(grid),
        label=label + options.suffix,
        **options.report(),
        num_samples=int(samples.shape[0]),
        samples_per_second=samples.shape[0] / steady,
        compile_seconds=compile_seconds,
        recompiled_for_new_noise=run._cache_size() != 1,
        metrics=metrics,
    )
    out_dir = os.path.expanduser(out_dir) if out_dir else os.path.join(workdir, "samples")
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, label + options.suffix)
    arrays = {"x": samples}
    if evaluator.labels is not None:
        arrays["label"] = np.asarray(evaluator.labels)
    np.savez(base + ".npz", **arrays)
    evaluator.plot({label: samples}, base + ".png", title=title + options.title)
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    report["files"] = [base + ext for ext in (".png", ".npz", ".json")]
    stage_done("write")
    return report
