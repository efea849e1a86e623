"""``train_and_evaluate(config, workdir)``: the whole training job, resumable and fault-tolerant.

What it writes into ``workdir``:

- ``checkpoints/<step>/`` orbax checkpoints (async, keep-N) of the full :class:`TrainState`;
- ``metrics.jsonl`` (and ``tensorboard/`` event files): train loss every ``log_every`` steps,
  evaluation metrics at several NFE every ``eval_every`` steps and at the end;
- ``samples.png``: samples of the EMA weights vs held-out data at the end; ``summary.json``:
  final metrics of the (debiased) EMA weights (``final``) and of the raw weights
  (``final_raw``), the cheapest setting's metrics for the untrained network (``untrained``),
  the data's record (``dataset``), wall time, steps/s; ``config.json``: the config and, under
  ``dataset``, the data's name, kind, element shape, classes and fingerprint
  (:func:`flowjax.data.describe_source`).

Re-running the same command resumes from the newest verified checkpoint. SIGTERM / SIGINT
save a checkpoint and return with ``summary["preempted"] = True``. A non-finite loss raises
:class:`NonFiniteLossError` naming the step; the last good checkpoint is kept because a
checkpoint is written only after every loss up to its step has been checked.

Before any work (:mod:`flowjax.training.workdir`, :mod:`flowjax.training.validate`): the
config's values are validated, the workdir is locked against a second writer, and a config
that differs from the stored ``config.json`` of a run with checkpoints is refused (unless the
change cannot alter the state, or ``allow_config_change`` accepts it). Checkpoints carry
checksums and a failing one falls back to the previous (:mod:`flowjax.training.checkpoint`);
a non-finite loss within :data:`SUSPECT_STEPS` steps of a restore makes the restored
checkpoint the suspect: it is moved aside and the run falls back once to the one before.
Every evaluation step is also a checkpoint step, and SIGTERM during an evaluation or during
the setup ends the process at once with exit code 0 (nothing is lost; single-process jobs).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from flowjax import data as data_lib
from flowjax import models, objectives, parallel
from flowjax.parallel import multihost
from flowjax.training import accounting
from flowjax.training import checkpoint as ckpt_lib
from flowjax.training import workdir as workdir_lib
from flowjax.training.evaluate import Evaluator
from flowjax.training.faults import (
    ExitOnSignal,
    NonFiniteLossError,
    PreemptionGuard,
    SetupError,
)
from flowjax.training.optim import make_optimizer
from flowjax.training.state import TrainState
from flowjax.training.step import make_train_step
from flowjax.training.validate import validate_config
from flowjax.training.writers import MetricWriter

log = logging.getLogger(__name__)

# A non-finite loss this many steps or fewer after a restore blames the restored checkpoint.
SUSPECT_STEPS = 10


class Experiment:
    """Everything built from a config, before any training: usable from a notebook.

    Attributes: ``data``, ``model``, ``apply_fn``, ``objective``, ``tx``, ``mesh``, ``rules``
    (logical-axis rules), ``state_sharding`` (a :class:`TrainState` of ``NamedSharding``s, one
    per leaf), ``batch_sharding``, ``num_classes``, ``grad_accum_steps``. ``data`` and
    ``objective`` replace the ones the config would build; ``devices`` (default: all devices of
    all processes) are the devices the mesh is laid over.

    Shardings are decided before anything is allocated: the state's shapes come from
    ``jax.eval_shape`` of the initialiser with the parameters still carrying their logical axis
    names; the rules turn those names into per-leaf shardings (the optimizer moments and the
    EMA copy follow their parameter); ``jax.jit(init, out_shardings=...)`` then creates every
    array directly on its devices. Configuration errors (a mesh that does not match the
    devices, a rule naming an unknown mesh axis, a batch or a weight that does not divide over
    its mesh axes) are raised here, before compiling.
    """

    def __init__(
        self, config: Any, *, data: Any = None, objective: Any = None, devices: Any = None
    ):
        self.config = config
        tcfg = config.train
        self.mesh = parallel.make_mesh(dict(config.get("mesh", None) or {"data": -1}), devices)
        self.rules = parallel.rules_from_config(config, self.mesh)
        self.batch_sharding = parallel.batch_sharding(self.mesh, self.rules)
        self.grad_accum_steps = int(tcfg.get("grad_accum_steps", 1))
        dp = parallel.batch_parallel_size(self.mesh, self.rules)
        if self.grad_accum_steps < 1:
            raise ValueError(f"train.grad_accum_steps must be >= 1; got {self.grad_accum_steps}")
        if tcfg.batch_size % (dp * self.grad_accum_steps):
            raise ValueError(
                f"train.batch_size={tcfg.batch_size} is not divisible by the data-parallel size "
                f"{dp} of mesh {dict(self.mesh.shape)}"
                + (
                    f" times grad_accum_steps={self.grad_accum_steps}"
                    if self.grad_accum_steps > 1
                    else ""
                )
                + "; change the batch size or the mesh"
            )
        if jax.process_count() > 1:
            local = int(tcfg.batch_size) // jax.process_count()
            expected = (jax.process_index() * local, (jax.process_index() + 1) * local)
            if multihost.process_rows(self.batch_sharding, int(tcfg.batch_size)) != expected:
                raise ValueError(
                    f"the batch sharding does not give process {jax.process_index()} the rows "
                    f"{expected} its data shard holds; keep each process's devices together on "
                    f"the batch axes of the mesh"
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
        self.objective = (
            objective
            if objective is not None
            else objectives.make_objective(config.objective, num_classes=self.num_classes)
        )
        self.average_velocity = bool(getattr(self.objective, "average_velocity", False))

        def make(use_end_time: bool):
            return models.make_model(
                config.model, num_classes=self.num_classes, use_end_time=use_end_time
            )

        builder = getattr(self.objective, "build_model", None)
        self.model = builder(make) if builder is not None else make(self.average_velocity)
        self.apply_fn = models.make_apply_fn(self.model)
        self.frozen = tuple(getattr(self.objective, "frozen", ()))
        self.tx = _freeze(make_optimizer(config.optim, int(tcfg.num_steps)), self.frozen)
        network = getattr(self.model, "student", self.model)
        if hasattr(network, "check_input"):
            network.check_input((1, *self.data.element_shape))
        key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # a raw PRNG key; nothing is computed
        boxed = jax.eval_shape(self._init_boxed, key)
        self.state_sharding = parallel.state_shardings(boxed, self.mesh, self.rules)
        self._abstract = nn.meta.unbox(boxed)
        parallel.check_divisible(self._abstract, self.state_sharding)

    # -- state ------------------------------------------------------------------------------
    def _init_boxed(self, rng, params=None, loaded=None):
        """The initial state with parameters (and so moments, EMA) boxed with logical names.

        Given ``params`` (plain arrays) are used instead of a random initialisation; given
        ``loaded`` (another run's weights) are mapped by the objective's ``initial_params``
        (or used as they are).
        """
        init_key, state_key = jax.random.split(rng)
        if params is None:
            params = models.init_params(
                self.model, init_key, self.data.element_shape, self.num_classes
            )
            if loaded is not None:
                mapper = getattr(self.objective, "initial_params", None)
                fresh = nn.meta.unbox(params)
                params = mapper(fresh, loaded) if mapper is not None else loaded
        return TrainState.create(params, self.tx, state_key)

    def _init(self, rng, params=None, loaded=None):
        return nn.meta.unbox(self._init_boxed(rng, params, loaded))

    def init_state(self, params: Any = None, *, loaded: Any = None) -> TrainState:
        """Parameters and optimizer state created directly with their shardings.

        ``params`` (e.g. a pretrained model's EMA weights, for a fine-tune) replaces the
        random initialisation; they must have the structure and shapes the config's model
        creates. ``loaded`` are another run's weights that the objective maps into its own
        parameters (``initial_params``: e.g. a FreeFlow student, fake and teacher from one
        teacher). The optimizer state is fresh; the (debiased) EMA averages the parameters
        from the first step on.
        """
        key = jax.random.PRNGKey(int(self.config.seed))
        if params is not None or (
            loaded is not None and not hasattr(self.objective, "initial_params")
        ):
            given = params if params is not None else loaded
            expected = jax.tree.structure(self.abstract_state().params)
            if jax.tree.structure(given) != expected:
                raise ValueError(
                    "the initial parameters do not match the parameters of the config's model; "
                    "start from a run trained with the same model config"
                )
            params, loaded = given, None
        return self._jit_init(key, params, loaded)

    @functools.cached_property
    def _jit_init(self):
        # One jitted initialiser per experiment: a fresh ``jax.jit`` per call would retrace and
        # recompile it every time (the untrained baseline, benchmarks, notebooks).
        return jax.jit(self._init, out_shardings=self.state_sharding)

    def pretrained_params(self) -> Any:
        """The EMA weights of the run named by ``config.init.workdir`` (None if unset)."""
        workdir = (self.config.get("init", None) or {}).get("workdir", None)
        if not workdir:
            return None
        from flowjax.sampling import load_run

        _, _, params, step = load_run(os.path.expanduser(workdir))
        log.info("initialising from %s (step %d)", workdir, step)
        return params

    def abstract_state(self) -> Any:
        """``ShapeDtypeStruct``s of the state with their shardings (a restore target)."""
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            self._abstract,
            self.state_sharding,
        )

    # -- step ---------------------------------------------------------------------------------
    def jit_train_step(self):
        """The train step, jitted with explicit in/out shardings and the state donated.

        The model's logical constraints are resolved with this experiment's rules and mesh.
        """
        step = make_train_step(
            self.objective,
            self.apply_fn,
            self.tx,
            float(self.config.train.ema_decay),
            grad_accum_steps=self.grad_accum_steps,
        )
        rules, abstract_mesh = self.rules, self.mesh.abstract_mesh
        device_batch = getattr(self.data, "device_batch", None) if self.fuse_data else None
        batch_sharding = self.batch_sharding

        def sharded_step(state, batch):
            if device_batch is not None:  # synthetic data: generated inside the step
                batch = jax.lax.with_sharding_constraint(device_batch(state.step), batch_sharding)
            with nn.logical_axis_rules(rules), jax.sharding.use_abstract_mesh(abstract_mesh):
                return step(state, batch)

        return jax.jit(
            sharded_step,
            in_shardings=(self.state_sharding, None if device_batch else self.batch_sharding),
            out_shardings=(self.state_sharding, parallel.replicated(self.mesh)),
            donate_argnums=(0,),
        )

    def step_cost(self) -> accounting.StepCost:
        """Model FLOPs, tokens and examples of one training step at the global batch size."""
        return accounting.step_cost(
            self.model, tuple(self.data.element_shape), int(self.config.train.batch_size)
        )

    @property
    def data_free(self) -> bool:
        """The objective reads no data (FreeFlow): batches are zeros that fix the shapes."""
        return bool(getattr(self.objective, "data_free", False))

    @property
    def fuse_data(self) -> bool:
        """Whether batches are generated inside the jitted step (sources with ``device_batch``:
        a pure function of the step, e.g. the 2-D toys), saving a dispatch and a transfer."""
        return not self.data_free and callable(getattr(self.data, "device_batch", None))

    def batches(self, start_step: int):
        """Global batches ``start_step, start_step + 1, ...`` for :meth:`jit_train_step`'s step
        (``None`` placeholders when the step generates its own data; one device batch of
        zeros, reused, for data-free objectives)."""
        if self.fuse_data:
            while True:
                yield None
        if self.data_free:
            local = int(self.config.train.batch_size) // jax.process_count()
            zeros = self.global_batch(
                {"x1": np.zeros((local, *self.data.element_shape), np.float32)}
            )
            while True:
                yield zeros
        for local in self.data.iterator(start_step):
            yield self.global_batch(local)

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


def _freeze(tx: optax.GradientTransformation, frozen: tuple[str, ...]):
    """``tx`` for every top-level parameter group except ``frozen`` ones, which never change
    and keep no optimizer state."""
    if not frozen:
        return tx

    def labels(params):
        return {
            k: jax.tree.map(lambda _, k=k: "frozen" if k in frozen else "train", v)
            for k, v in params.items()
        }

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def _log_setup(exp: Experiment, cost: accounting.StepCost) -> None:
    """Log the devices, the mesh, bytes per device and the model FLOPs of one step."""
    if jax.process_index() != 0:
        return
    memory = accounting.memory_report(exp.abstract_state())
    log.info(
        "devices: %s; mesh %s; batch sharded as %s",
        accounting.describe_devices(),
        dict(exp.mesh.shape),
        exp.batch_sharding.spec,
    )
    log.info(
        "per device: params %s, optimizer state %s, EMA params %s (total %s)",
        *(accounting.format_bytes(memory[k]) for k in ("params", "opt_state", "ema_params")),
        accounting.format_bytes(sum(memory.values())),
    )
    if cost.model_flops is not None:
        log.info(
            "model FLOPs per step: %.4g (%d tokens, %.4g per token)",
            cost.model_flops,
            cost.tokens,
            cost.model_flops / cost.tokens,
        )


@jax.jit
def _stack_metrics(metrics: list[dict]) -> dict:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)


class _Pending:
    """Per-step metrics still on the device; fetched in one transfer per key when needed.

    ``carried`` (from :meth:`saved`, stored in a checkpoint's meta) holds the host values of
    the steps of the current log window that precede a checkpoint, so the first log after a
    resume averages the same window as an uninterrupted run.
    """

    def __init__(self, carried: dict | None = None):
        carried = carried or {}
        self.steps: list[int] = [int(s) for s in carried.get("steps", [])]
        self._carried = {k: np.asarray(v) for k, v in carried.get("values", {}).items()}
        self.metrics: list[dict] = []
        self._host: dict[str, np.ndarray] | None = None

    def append(self, step: int, metrics: dict) -> None:
        self.steps.append(step)
        self.metrics.append(metrics)
        self._host = None

    def host(self) -> dict[str, np.ndarray]:
        if self._host is None:
            fresh = jax.device_get(_stack_metrics(self.metrics)) if self.metrics else {}
            if self._carried:
                fresh = {
                    k: np.concatenate(
                        [v.astype(fresh[k].dtype if k in fresh else v.dtype), fresh.get(k, v[:0])]
                    )
                    for k, v in self._carried.items()
                }
            self._host = fresh
        return self._host

    def saved(self) -> dict:
        """The window so far as JSON (exact: float32 values round-trip through float64)."""
        if not self.steps:
            return {}
        return {
            "steps": list(self.steps),
            "values": {k: [float(x) for x in v] for k, v in self.host().items()},
        }

    def first_nonfinite(self) -> tuple[int, str, float] | None:
        host = self.host()
        for i, step in enumerate(self.steps):
            for name in ("loss", "grad_norm"):
                if name in host and not math.isfinite(float(host[name][i])):
                    return step, name, float(host[name][i])
        return None

    def means(self) -> dict[str, float]:
        return {f"train/{k}": float(np.mean(v)) for k, v in self.host().items()}

    def __len__(self) -> int:
        return len(self.steps)


def _write_json(path: str, obj: Any) -> None:
    if jax.process_index() != 0:
        return
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def _samples_title(data_name: str, ema_decay: float, num_steps: int) -> str:
    return (
        f"{data_name}: EMA weights (decay {float(ema_decay):g}, debiased) after {num_steps} steps"
    )


def _agreed(fn) -> None:
    """Run ``fn`` on process 0; its SetupError is raised on every process (multi-host)."""
    error = None
    if jax.process_index() == 0:
        try:
            fn()
        except SetupError as err:
            error = err
    if multihost.any_process(error is not None):
        raise error or SetupError("refused by process 0 (see its log)")


def train_and_evaluate(
    config: Any,
    workdir: str,
    *,
    data: Any = None,
    objective: Any = None,
    progress: bool | None = None,
    init_params: Any = None,
    allow_config_change: bool | tuple[str, ...] = (),
) -> dict:
    """Train (or resume) the job described by ``config`` in ``workdir``; return the summary.

    ``data`` / ``objective`` replace the ones the config would build (notebooks, tests,
    fine-tunes on generated data); the data's name, shape and fingerprint are recorded either
    way (``config.json`` ``dataset``), and ``flowjax.sample`` will not score a model trained on
    ``data`` the config does not rebuild. ``init_params`` starts a fresh run from given weights
    instead of a random initialisation (a fine-tune); a run that finds a checkpoint in
    ``workdir`` resumes from it as usual. ``allow_config_change`` (field names, or ``True``
    for any) accepts a config that differs from the stored one of the run being resumed;
    without it such a config raises :class:`~flowjax.training.faults.ConfigChangedError`.
    Bad config values, a workdir that is a file or not writable and a workdir in use by
    another process raise :class:`SetupError` before any work.
    """
    config = validate_config(config)
    workdir = workdir_lib.prepare_workdir(workdir)
    lock = workdir_lib.WorkdirLock(workdir, enabled=jax.process_index() == 0)
    _agreed(lock.acquire)
    try:
        kwargs = dict(data=data, objective=objective, progress=progress, init_params=init_params)
        try:
            return _train(config, workdir, lock, allow_config_change, retry=True, **kwargs)
        except _SuspectCheckpoint as suspect:
            log.warning("%s", suspect)
            return _train(config, workdir, lock, allow_config_change, retry=False, **kwargs)
    finally:
        lock.release()


class _SuspectCheckpoint(Exception):
    """A non-finite loss right after a restore: the restored checkpoint is moved aside."""


def _train(
    config: Any,
    workdir: str,
    lock: workdir_lib.WorkdirLock,
    allow_config_change: Any,
    *,
    retry: bool,
    data: Any,
    objective: Any,
    progress: bool | None,
    init_params: Any,
) -> dict:
    tcfg = config.train
    num_steps = int(tcfg.num_steps)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    single = jax.process_count() == 1
    setup = ExitOnSignal(
        "SIGTERM during the setup: stopped before training (nothing to save)",
        cleanup=lock.release,
        enabled=single,
    )
    setup.__enter__()
    try:
        _agreed(lambda: workdir_lib.remove_partial_checkpoints(ckpt_dir))

        def check_config():
            steps = workdir_lib.saved_steps(ckpt_dir)
            changed = workdir_lib.check_config_change(
                workdir, config, steps[-1] if steps else None, allow=allow_config_change
            )
            if changed:
                log.info("resuming with changed config fields: %s", ", ".join(changed))

        _agreed(check_config)
        try:
            exp = Experiment(config, data=data, objective=objective)
        except (ValueError, FileNotFoundError) as err:
            raise SetupError(f"cannot set up the job from its config: {err}") from err
        dataset = data_lib.describe_source(exp.data, from_config=data is None)
        cost = exp.step_cost()
        _log_setup(exp, cost)

        checkpointer = ckpt_lib.Checkpointer(
            ckpt_dir,
            max_to_keep=int(tcfg.get("keep_checkpoints", 3)),
            async_save=bool(tcfg.get("async_checkpoint", True)),
        )
        try:
            restored = checkpointer.restore_latest(exp.abstract_state())
            _write_json(
                os.path.join(workdir, "config.json"), dict(config.to_dict(), dataset=dataset)
            )
            checkpointer.prune()
            if restored is None:
                loaded = None if init_params is not None else exp.pretrained_params()
                state, start_step, carried = exp.init_state(init_params, loaded=loaded), 0, None
            else:
                state, restored_meta, start_step = restored
                carried = restored_meta.get("pending_metrics")
                log.info("resumed from the checkpoint at step %d", start_step)
            last_saved = start_step if restored is not None else None

            writer = MetricWriter(workdir, tensorboard=bool(tcfg.get("tensorboard", True)))
            writer.truncate_after(start_step)
            evaluator = Evaluator.for_experiment(config, exp, workdir)
            train_step = exp.jit_train_step()
        except BaseException:
            checkpointer.close()
            raise
    finally:
        setup.__exit__(None, None, None)
    log_every = int(tcfg.log_every)
    eval_every = int(tcfg.get("eval_every", 0)) or num_steps
    ckpt_every = int(tcfg.get("checkpoint_every", 0)) or num_steps
    meta = {"config": config.to_dict()}

    def save(step: int, st: TrainState) -> None:
        nonlocal last_saved
        checkpointer.save(step, st, dict(meta, pending_metrics=pending.saved()))
        last_saved = step

    def abandon(where: str, step: int) -> ExitOnSignal:
        def cleanup():
            writer.flush()
            lock.release()

        return ExitOnSignal(
            f"SIGTERM during {where}: abandoned it; the checkpoint at step {step} is saved in "
            f"{ckpt_dir} (re-run the command to continue)",
            cleanup=cleanup,
            enabled=single,
        )

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
    pending = _Pending(carried)
    preempted = False
    t_start = time.perf_counter()
    steps_run = 0
    preemption = multihost.PreemptionSync(int(tcfg.get("preemption_check_every", 10)))
    peak = tcfg.get("peak_flops_per_device", None) or accounting.peak_flops_per_device(
        jax.devices()[0].device_kind
    )
    timer: tuple[int, float] | None = None  # (step, time) at the last log, after the first

    def check(pending):
        bad = pending.first_nonfinite()
        if bad is not None:
            checkpointer.wait()
            if retry and restored is not None and bad[0] - start_step <= SUSPECT_STEPS:
                aside = checkpointer.move_aside(start_step, "suspect")
                previous = [s for s in checkpointer.steps() if s < start_step]
                raise _SuspectCheckpoint(
                    f"{bad[1]} = {bad[2]} at step {bad[0]}, {bad[0] - start_step} step(s) after "
                    f"restoring the checkpoint at step {start_step}: that checkpoint is the "
                    f"suspect; moved it to {aside} and falling back once to "
                    + (f"the checkpoint at step {previous[-1]}" if previous else "step 0")
                )
            raise NonFiniteLossError(bad[0], bad[1], bad[2], last_saved)

    try:
        with PreemptionGuard() as guard:
            batches = exp.batches(start_step)
            step = start_step
            while step < num_steps:
                batch = next(batches)
                state, metrics = train_step(state, batch)
                step += 1
                steps_run += 1
                pending.append(step, metrics)
                if step % log_every == 0 or step == num_steps:
                    check(pending)
                    means = pending.means()  # waits for the step: timing is honest
                    now = time.perf_counter()
                    if timer is not None and step > timer[0]:
                        rates = cost.rates(
                            (now - timer[1]) / (step - timer[0]), exp.mesh.size, peak
                        )
                        means.update({f"perf/{k}": v for k, v in rates.items()})
                    timer = (step, now)  # the first interval (compilation) is not reported
                    writer.write(step, means)
                    bar.set_postfix(loss=f"{means['train/loss']:.4f}", refresh=False)
                    pending = _Pending()
                    checkpointer.check_for_errors()  # a failed async save stops the run now
                bar.update(1)
                evaluate = step % eval_every == 0 and step != num_steps
                if step % ckpt_every == 0 or step == num_steps or evaluate:
                    check(pending)
                    save(step, state)  # the checkpoint precedes the evaluation
                if evaluate and not (single and guard.requested):
                    checkpointer.wait()
                    log.info("evaluating at step %d", step)
                    with abandon(f"the evaluation at step {step}", step):
                        metrics_eval, _ = evaluator(state.ema_params)
                    writer.write(step, {f"eval/{k}": v for k, v in metrics_eval.items()})
                if preemption.should_stop(step, guard.requested):
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
    except BaseException:
        writer.flush()
        checkpointer.close()  # raises the save error, if that is what stopped the run
        raise
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
        with abandon("the final evaluation", num_steps):
            final_metrics, samples = evaluator(state.ema_params)
            final_raw, _ = evaluator(state.params)
            # The untrained network (zero output layer) maps noise to itself under any
            # solver; score it with the cheapest sampler.
            untrained, _ = evaluator(exp.init_state().ema_params, [evaluator.baseline_label])
        writer.write(
            num_steps,
            {f"eval/{k}": v for k, v in final_metrics.items()}
            | {f"eval_raw/{k}": v for k, v in final_raw.items()},
        )
        summary.update(final=final_metrics, final_raw=final_raw, untrained=untrained)
        summary["dataset"] = dataset
        if jax.process_index() == 0:
            evaluator.plot(
                samples,
                os.path.join(workdir, "samples.png"),
                title=_samples_title(dataset["name"], tcfg.ema_decay, num_steps),
            )
            summary["samples_png"] = os.path.join(workdir, "samples.png")
        _write_json(os.path.join(workdir, "summary.json"), summary)
    writer.close()
    checkpointer.close()
    return summary
