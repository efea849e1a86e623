"""``train_and_evaluate(config, workdir)``: the whole training job, resumable and fault-tolerant.

What it writes into ``workdir``:

- ``checkpoints/<step>/`` orbax checkpoints (async, keep-N) of the full :class:`TrainState`;
- ``metrics.jsonl`` (and ``tensorboard/`` event files): train loss every ``log_every`` steps,
  evaluation metrics at several NFE every ``eval_every`` steps and at the end;
- ``samples.png``: generated vs held-out data at the end; ``summary.json``: final metrics,
  the same metrics for the untrained network, wall time, steps/s; ``config.json``.

Re-running the same command resumes from the newest readable checkpoint. SIGTERM / SIGINT
save a checkpoint and return with ``summary["preempted"] = True``. A non-finite loss raises
:class:`NonFiniteLossError` naming the step; the last good checkpoint is kept because a
checkpoint is written only after every loss up to its step has been checked.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from flowjax import data as data_lib
from flowjax import models, objectives, parallel
from flowjax.training import checkpoint as ckpt_lib
from flowjax.training.evaluate import Evaluator
from flowjax.training.faults import NonFiniteLossError, PreemptionGuard, SetupError
from flowjax.training.optim import make_optimizer
from flowjax.training.state import TrainState
from flowjax.training.step import make_train_step
from flowjax.training.writers import MetricWriter

log = logging.getLogger(__name__)


class Experiment:
    """Everything built from a config, before any training: usable from a notebook.

    Attributes: ``data``, ``model``, ``apply_fn``, ``objective``, ``tx``, ``mesh``,
    ``state_sharding``, ``batch_sharding``, ``num_classes``.
    """

    def __init__(self, config: Any, *, data: Any = None, objective: Any = None):
        self.config = config
        tcfg = config.train
        self.mesh = parallel.make_mesh(dict(config.get("mesh", {"data": -1})))
        dp = parallel.data_parallel_size(self.mesh)
        if tcfg.batch_size % dp:
            raise ValueError(
                f"train.batch_size={tcfg.batch_size} is not divisible by the data-parallel size "
                f"{dp} of mesh {dict(self.mesh.shape)}"
            )
        self.data = (
            data
            if data is not None
            else data_lib.make_source(
                config.data,
                batch_size=int(tcfg.batch_size),
                seed=int(config.seed),
                shard_index=jax.process_index(),
                shard_count=jax.process_count(),
            )
        )
        conditional = bool(config.model.get("conditional", False))
        self.num_classes = self.data.num_classes if conditional else None
        self.model = models.make_model(config.model, num_classes=self.num_classes)
        self.apply_fn = models.make_apply_fn(self.model)
        self.objective = (
            objective
            if objective is not None
            else objectives.make_objective(config.objective, num_classes=self.num_classes)
        )
        self.tx = make_optimizer(config.optim, int(tcfg.num_steps))
        self.state_sharding = parallel.replicated(self.mesh)
        self.batch_sharding = parallel.batch_sharding(self.mesh)

    # -- state ------------------------------------------------------------------------------
    def _init(self, rng, params=None):
        init_key, state_key = jax.random.split(rng)
        if params is None:
            shape = (1, *self.data.element_shape)
            x = jnp.zeros(shape, jnp.float32)
            t = jnp.zeros((1,), jnp.float32)
            cond = None if self.num_classes is None else jnp.zeros((1,), jnp.int32)
            params = self.model.init(init_key, x, t, cond)["params"]
        return TrainState.create(params, self.tx, state_key)

    def init_state(self, params: Any = None) -> TrainState:
        """Parameters and optimizer state created directly with their shardings.

        ``params`` (e.g. a pretrained model's EMA weights, for a fine-tune) replaces the
        random initialisation; they must have the structure and shapes the config's model
        creates. The optimizer state is fresh and the EMA starts at ``params``.
        """
        key = jax.random.PRNGKey(int(self.config.seed))
        if params is not None:
            expected = jax.tree.structure(self.abstract_state().params)
            if jax.tree.structure(params) != expected:
                raise ValueError(
                    "init_params do not match the parameters of the config's model; fine-tune "
                    "with the config the weights were trained with"
                )
        init = jax.jit(self._init, out_shardings=self.state_sharding)
        return init(key, params)

    def abstract_state(self) -> Any:
        shapes = jax.eval_shape(self._init, jax.random.PRNGKey(0))
        return jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.state_sharding), shapes
        )

    # -- step ---------------------------------------------------------------------------------
    def jit_train_step(self):
        step = make_train_step(
            self.objective, self.apply_fn, self.tx, float(self.config.train.ema_decay)
        )
        return jax.jit(
            step,
            in_shardings=(self.state_sharding, self.batch_sharding),
            out_shardings=(self.state_sharding, None),
            donate_argnums=(0,),
        )

    def global_batch(self, local_batch: dict) -> dict:
        """Process-local numpy batch -> global jax arrays sharded over the batch axes."""
        out = {}
        for k, v in local_batch.items():
            if v is None:
                continue
            if isinstance(v, jax.Array) and jax.process_count() == 1:
                out[k] = jax.device_put(v, self.batch_sharding)  # already on device
            else:
                out[k] = jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v))
        return out


def _first_nonfinite(pending: list[tuple[int, dict]]) -> tuple[int, str, float] | None:
    if not pending:
        return None
    host = jax.device_get([m for _, m in pending])
    for (step, _), metrics in zip(pending, host):
        for name in ("loss", "grad_norm"):
            if name in metrics and not math.isfinite(float(metrics[name])):
                return step, name, float(metrics[name])
    return None


def _mean_metrics(pending: list[tuple[int, dict]]) -> dict[str, float]:
    host = jax.device_get([m for _, m in pending])
    keys = host[0].keys()
    return {f"train/{k}": float(np.mean([h[k] for h in host])) for k in keys}


def _write_json(path: str, obj: Any) -> None:
    if jax.process_index() != 0:
        return
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def train_and_evaluate(
    config: Any,
    workdir: str,
    *,
    data: Any = None,
    objective: Any = None,
    progress: bool | None = None,
    init_params: Any = None,
) -> dict:
    """Train (or resume) the job described by ``config`` in ``workdir``; return the summary.

    ``data`` / ``objective`` replace the ones the config would build (notebooks, tests,
    fine-tunes on generated data). ``init_params`` starts a fresh run from given weights
    instead of a random initialisation (a fine-tune); a run that finds a checkpoint in
    ``workdir`` resumes from it as usual.
    """
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    tcfg = config.train
    num_steps = int(tcfg.num_steps)
    try:
        exp = Experiment(config, data=data, objective=objective)
    except (ValueError, FileNotFoundError) as err:
        raise SetupError(f"cannot set up the job from its config: {err}") from err
    _write_json(os.path.join(workdir, "config.json"), config.to_dict())

    checkpointer = ckpt_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=int(tcfg.get("keep_checkpoints", 3)),
        async_save=bool(tcfg.get("async_checkpoint", True)),
    )
    restored = checkpointer.restore_latest(exp.abstract_state())
    if restored is None:
        state, start_step = exp.init_state(init_params), 0
    else:
        state, _, start_step = restored
        log.info("resumed from the checkpoint at step %d", start_step)
    last_saved = start_step if restored is not None else None

    writer = MetricWriter(workdir, tensorboard=bool(tcfg.get("tensorboard", True)))
    writer.truncate_after(start_step)
    evaluator = Evaluator(
        config, exp.data, exp.apply_fn, num_classes=exp.num_classes, workdir=workdir
    )
    train_step = exp.jit_train_step()
    log_every = int(tcfg.log_every)
    eval_every = int(tcfg.get("eval_every", 0)) or num_steps
    ckpt_every = int(tcfg.get("checkpoint_every", 0)) or num_steps
    meta = {"config": config.to_dict()}

    def save(step: int, st: TrainState) -> None:
        nonlocal last_saved
        checkpointer.save(step, st, meta)
        last_saved = step

    if progress is None:
        progress = bool(tcfg.get("progress", True))
    bar = tqdm(
        total=num_steps,
        initial=start_step,
        disable=not progress or jax.process_index() != 0,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
    )
    pending: list[tuple[int, dict]] = []
    preempted = False
    t_start = time.perf_counter()
    steps_run = 0

    def check(pending):
        bad = _first_nonfinite(pending)
        if bad is not None:
            checkpointer.wait()
            raise NonFiniteLossError(bad[0], bad[1], bad[2], last_saved)

    try:
        with PreemptionGuard() as guard:
            batches = exp.data.iterator(start_step)
            step = start_step
            while step < num_steps:
                batch = exp.global_batch(next(batches))
                state, metrics = train_step(state, batch)
                step += 1
                steps_run += 1
                pending.append((step, metrics))
                if step % log_every == 0 or step == num_steps:
                    check(pending)
                    means = _mean_metrics(pending)
                    writer.write(step, means)
                    bar.set_postfix(loss=f"{means['train/loss']:.4f}", refresh=False)
                    pending = []
                bar.update(1)
                if step % eval_every == 0 and step != num_steps:
                    check(pending)
                    metrics_eval, _ = evaluator(state.ema_params)
                    writer.write(step, {f"eval/{k}": v for k, v in metrics_eval.items()})
                if step % ckpt_every == 0 or step == num_steps:
                    check(pending)
                    save(step, state)
                if guard.requested:
                    check(pending)
                    log.warning(
                        "%s received: saving a checkpoint at step %d and stopping",
                        guard.signal_name,
                        step,
                    )
                    if last_saved != step:
                        save(step, state)
                    preempted = True
                    break
        check(pending)
    finally:
        bar.close()
        checkpointer.wait()
        writer.flush()

    wall = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        "step": int(jax.device_get(state.step)),
        "num_steps": num_steps,
        "preempted": preempted,
        "steps_run_this_session": steps_run,
        "train_seconds_this_session": wall,
        "steps_per_second": steps_run / wall if steps_run and wall > 0 else None,
    }
    if not preempted:
        final_metrics, samples = evaluator(state.ema_params)
        writer.write(num_steps, {f"eval/{k}": v for k, v in final_metrics.items()})
        # The untrained network (zero output layer) maps noise to itself; score it with the
        # reference sampler only.
        untrained, _ = evaluator(exp.init_state().ema_params, [evaluator.reference_label])
        summary.update(final=final_metrics, untrained=untrained)
        if jax.process_index() == 0:
            evaluator.plot(
                samples,
                os.path.join(workdir, "samples.png"),
                title=f"{config.data.name}: EMA model after {num_steps} steps",
            )
            summary["samples_png"] = os.path.join(workdir, "samples.png")
        _write_json(os.path.join(workdir, "summary.json"), summary)
    writer.close()
    checkpointer.close()
    return summary
