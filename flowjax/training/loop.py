"""``train_and_evaluate(config, workdir)``: the whole training job, resumable and fault-tolerant.

What it writes into ``workdir``:

- ``checkpoints/<step>/`` orbax checkpoints (async, keep-N) of the full :class:`TrainState`;
- ``metrics.jsonl`` (and ``tensorboard/`` event files): train loss every ``log_every`` steps,
  evaluation metrics at several NFE every ``eval_every`` steps and at the end;
- ``samples.png``: samples of the EMA weights vs held-out data at the end; ``summary.json``:
  final metrics of the (debiased) EMA weights (``final``) and of the raw weights
  (``final_raw``), the cheapest setting's metrics for the untrained network (``untrained``)
  or, for a fine-tune from given weights or ``config.init.workdir``, every setting's metrics
  for the weights it started from (``initial``),
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
when none is left the start is refused unless ``start_over``; data too small for the final
evaluation is refused at set-up; a torn ``metrics.jsonl`` is repaired
(:class:`~flowjax.training.writers.MetricWriter`); a run refused at set-up (a
:class:`SetupError`) removes the workdir it created if nothing was written there. A
non-finite loss within :data:`SUSPECT_STEPS` steps of a restore makes the restored checkpoint
the suspect: it is moved aside and the run falls back once to the one before.
Every evaluation step is also a checkpoint step, and SIGTERM during an evaluation or during
the setup ends the process at once with exit code 0 (nothing is lost; single-process jobs).

The job is three steps: :func:`_set_up` (everything before the first step; it returns a
:class:`_Run`: the experiment, the state and its start step, the open checkpointer and
writer, the evaluator, the jitted step), :func:`_loop` (the steps, their logs, checkpoints,
evaluations, SIGTERM and non-finite losses; it returns a :class:`_LoopEnd`) and
:func:`_finish` (the final evaluation and ``summary.json``). The config is read through its
declared sections (:class:`~flowjax.training.experiment.TrainSettings` and the others that
:class:`~flowjax.training.experiment.Experiment` holds).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import console
from flowjax import data as data_lib
from flowjax.evaluation.evaluator import Evaluator
from flowjax.parallel import multihost
from flowjax.training import accounting
from flowjax.training import checkpoint as ckpt_lib
from flowjax.training import optim as optim_lib
from flowjax.training import workdir as workdir_lib
from flowjax.training.experiment import Experiment, TrainSettings, pretrained_params
from flowjax.training.faults import (
    ExitOnSignal,
    NonFiniteLossError,
    NoUsableCheckpointError,
    PreemptionGuard,
    SetupError,
    describe_error,
)
from flowjax.training.state import TrainState
from flowjax.training.validate import (
    check_data_size,
    check_sampler_options,
    validate_config,
)
from flowjax.training.writers import MetricWriter

log = logging.getLogger(__name__)

# A non-finite loss this many steps or fewer after a restore blames the restored checkpoint.
SUSPECT_STEPS = 10


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


def _write_samples_image(writer, evaluator, samples, step: int, title: str) -> None:
    """The evaluation's sample figure (as ``samples.png`` would show it) to TensorBoard."""
    with tempfile.TemporaryDirectory() as tmp:
        writer.write_image(
            "samples", evaluator.plot(samples, os.path.join(tmp, "s.png"), title), step
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
    start_over: bool = False,
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
    When every checkpoint in ``workdir`` fails verification (each is moved to
    ``checkpoints.unreadable/``), the run is refused with
    :class:`~flowjax.training.faults.NoUsableCheckpointError` rather than silently trained
    again from step 0; ``start_over=True`` accepts that (the moved checkpoints and a copy of
    ``metrics.jsonl`` stay in ``checkpoints.unreadable/``). A usable checkpoint is resumed
    either way. Bad config values, a workdir that is a file or not writable, a workdir in use
    by another process, data too small for the evaluation and initial weights that do not fit
    the model raise :class:`SetupError` before any work (a workdir this call created is then
    removed again).
    """
    config = validate_config(config)
    created = not os.path.lexists(os.path.abspath(os.path.expanduser(str(workdir))))
    workdir = workdir_lib.prepare_workdir(workdir)
    lock = workdir_lib.WorkdirLock(workdir, enabled=jax.process_index() == 0)
    try:
        _agreed(lock.acquire)
        kwargs = dict(
            data=data,
            objective=objective,
            progress=progress,
            init_params=init_params,
            start_over=start_over,
        )
        try:
            return _train(config, workdir, lock, allow_config_change, retry=True, **kwargs)
        except _SuspectCheckpoint as suspect:
            log.warning("%s", suspect)
            return _train(config, workdir, lock, allow_config_change, retry=False, **kwargs)
    except SetupError:
        lock.release()
        if created and jax.process_index() == 0:
            workdir_lib.remove_if_empty(workdir)  # a refused run leaves no workdir behind
        raise
    finally:
        lock.release()


def _pretrained(config: Any) -> Any:
    """:func:`pretrained_params` of ``config.init.workdir``; a run that cannot be read there
    is a :class:`SetupError`."""
    try:
        return pretrained_params(config)
    except (ValueError, FileNotFoundError) as err:
        raise SetupError(f"config.init.workdir: {err}") from err


def _baseline(exp: Experiment, evaluator: Evaluator, init_params: Any, progress: bool) -> dict:
    """What the run started from, scored: ``{"initial": ...}`` for a fine-tune (weights given
    as ``init_params`` or read from ``config.init.workdir``: scored with every sampler, like
    ``final``), else ``{"untrained": ...}``. The untrained network (zero output layer) maps
    noise to itself under any solver, so it is scored with the cheapest sampler only."""
    if init_params is None and not exp.init.workdir:
        return {"untrained": evaluator(exp.init_state().ema_params, [evaluator.baseline_label])[0]}
    try:
        loaded = None if init_params is not None else pretrained_params(exp.config)
    except (ValueError, FileNotFoundError) as err:
        log.warning("the initial weights are not scored: %s", err)
        return {}
    start = exp.init_state(init_params, loaded=loaded).ema_params
    return {"initial": evaluator(start, progress=progress, desc="initial weights")[0]}


def _state_differences(config, data, objective, ckpt_dir: str, step: int) -> list[str] | None:
    """How the state ``config`` builds differs from the checkpoint at ``step`` (by its recorded
    shapes; no arrays read), or ``None`` where that cannot be told."""
    try:
        abstract = Experiment(config, data=data, objective=objective).abstract_state()
        reader = ckpt_lib.Checkpointer(ckpt_dir, read_only=True)
        try:
            record = reader.meta(step).get(ckpt_lib.INTEGRITY_KEY)
        finally:
            reader.close()
    except Exception:  # noqa: BLE001 - the refusal then suggests only a new workdir
        return None
    return ckpt_lib.structure_differences(record, abstract, limit=None) if record else None


def _init_state(exp: Experiment, init_params: Any, loaded: Any) -> TrainState:
    """The fresh state; initial weights (``init_params``, or those of ``config.init.workdir``)
    that do not fit the model are a one-line :class:`SetupError` before anything is written."""
    try:
        state = exp.init_state(init_params, loaded=loaded)
        diffs = ckpt_lib.shape_differences(state.params, exp.abstract_state().params)
    except Exception as err:  # noqa: BLE001 - flax / the objective's mapping name the leaf
        if init_params is None and loaded is None:
            raise
        diffs = [describe_error(err)]
    if diffs:
        source = (
            "the given init_params"
            if init_params is not None
            else f"config.init.workdir={exp.init.workdir}"
        )
        raise SetupError(
            f"{source}: its weights do not fit this config's model ({'; '.join(diffs)}); start "
            f"from a run of the same model"
        )
    return state


def _refuse_or_start_over(ckpt_dir: str, workdir: str, start_over: bool) -> None:
    """No checkpoint could be restored: if the run had some (moved to ``.unreadable``), refuse
    (:class:`NoUsableCheckpointError`), or with ``start_over`` keep a copy of its metrics next
    to them and let the run begin at step 0."""
    aside = ckpt_dir + ".unreadable"
    moved = sorted(os.listdir(aside)) if os.path.isdir(aside) else []
    moved = [m for m in moved if not m.startswith("metrics")]
    if not moved:
        return
    if not start_over:
        raise NoUsableCheckpointError(
            f"no checkpoint of the run in {workdir} can be restored: every one failed "
            f"verification and is kept in {aside} ({', '.join(moved)}); pass --start_over "
            f"(start_over=True in Python) to train again from step 0 in this workdir, or use "
            f"a new workdir"
        )
    metrics = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics):
        kept = os.path.join(aside, f"metrics-{int(time.time())}.jsonl")
        shutil.copy2(metrics, kept)
        log.warning("starting over from step 0; the old run's metrics are kept in %s", kept)


class _SuspectCheckpoint(Exception):
    """A non-finite loss right after a restore: the restored checkpoint is moved aside."""


@dataclasses.dataclass
class _Run:
    """A training job set up by :func:`_set_up`: what the loop (:func:`_loop`) and the final
    evaluation (:func:`_finish`) share.

    ``state`` is the restored or the fresh state at ``start_step`` (``restored`` says which;
    the loop takes it: the train step donates it); ``carried`` is the restored checkpoint's
    part of the current log window (:class:`_Pending`); ``dataset`` is the data's record
    (``config.json``, ``summary.json``); ``progress`` is the argument or, when that is None,
    ``train.progress``. The checkpointer and the writer are open until :func:`_finish`.
    """

    exp: Experiment
    workdir: str
    lock: workdir_lib.WorkdirLock
    checkpointer: ckpt_lib.Checkpointer
    writer: MetricWriter
    evaluator: Evaluator
    train_step: Any
    state: TrainState | None
    start_step: int
    restored: bool
    carried: dict | None
    dataset: dict
    cost: accounting.StepCost
    progress: bool
    init_params: Any

    @property
    def settings(self) -> TrainSettings:
        return self.exp.train

    def title(self, step: int) -> str:
        return _samples_title(self.dataset["name"], self.settings.ema_decay, step)

    def abandon(self, where: str, step: int) -> ExitOnSignal:
        """On SIGTERM during ``where`` (an evaluation), flush the metrics, release the lock
        and end the process with exit code 0: the checkpoint at ``step`` is already saved."""

        def cleanup():
            self.writer.flush()
            self.lock.release()

        return ExitOnSignal(
            f"SIGTERM during {where}: abandoned it; the checkpoint at step {step} is saved in "
            f"{os.path.join(self.workdir, 'checkpoints')} (re-run the command to continue)",
            cleanup=cleanup,
            enabled=jax.process_count() == 1,
        )


@dataclasses.dataclass(frozen=True)
class _LoopEnd:
    """How :func:`_loop` ended: the last state, whether a SIGTERM stopped it, and the steps
    and seconds of this session."""

    state: TrainState
    preempted: bool
    steps_run: int
    seconds: float


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
    start_over: bool,
) -> dict:
    """Set up (or resume) the job, run its steps, then score and summarise it."""
    run = _set_up(
        config,
        workdir,
        lock,
        allow_config_change,
        data=data,
        objective=objective,
        progress=progress,
        init_params=init_params,
        start_over=start_over,
    )
    return _finish(run, _loop(run, retry=retry))


def _set_up(
    config: Any,
    workdir: str,
    lock: workdir_lib.WorkdirLock,
    allow_config_change: Any,
    *,
    data: Any,
    objective: Any,
    progress: bool | None,
    init_params: Any,
    start_over: bool,
) -> _Run:
    """Everything before the first step, in order: partial checkpoints removed, a config
    change checked against the stored run, the :class:`Experiment` built, the starting weights
    of a fresh fine-tune read, the data's size checked, the newest verified checkpoint restored
    (or the fresh state made, or the start refused), ``config.json`` written, the metric
    writer opened and truncated to the restored step, the evaluator and the train step built.
    A SIGTERM meanwhile ends the process at once (nothing to save)."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    setup = ExitOnSignal(
        "SIGTERM during the setup: stopped before training (nothing to save)",
        cleanup=lock.release,
        enabled=jax.process_count() == 1,
    )
    setup.__enter__()
    try:
        _agreed(lambda: workdir_lib.remove_partial_checkpoints(ckpt_dir))

        def check_config():
            steps = workdir_lib.saved_steps(ckpt_dir)

            def state_differences():  # only to word a refusal: what can work instead
                return _state_differences(config, data, objective, ckpt_dir, steps[-1])

            changed = workdir_lib.check_config_change(
                workdir,
                config,
                steps[-1] if steps else None,
                allow=allow_config_change,
                state_differences=state_differences,
            )
            if changed:
                log.info("resuming with changed config fields: %s", ", ".join(changed))

        _agreed(check_config)
        try:
            exp = Experiment(config, data=data, objective=objective)
        except (ValueError, FileNotFoundError) as err:
            raise SetupError(f"cannot set up the job from its config: {err}") from err
        check_sampler_options(config, exp.objective)
        settings = exp.train
        # A fresh fine-tune reads its starting weights now: a missing run is refused here,
        # before anything is written.
        fresh = init_params is None and not workdir_lib.saved_steps(ckpt_dir)
        teacher = _pretrained(exp.config) if fresh else None
        check_data_size(exp.data, config)
        dataset = data_lib.describe_source(exp.data, from_config=data is None)
        cost = exp.step_cost()
        _log_setup(exp, cost)

        checkpointer = ckpt_lib.Checkpointer(
            ckpt_dir,
            max_to_keep=int(settings.keep_checkpoints),
            async_save=bool(settings.async_checkpoint),
        )
        try:
            restored = checkpointer.restore_latest(exp.abstract_state())
            if restored is None:
                _agreed(lambda: _refuse_or_start_over(ckpt_dir, workdir, start_over))
                if teacher is None and init_params is None:
                    teacher = pretrained_params(exp.config)
                state, start_step, carried = _init_state(exp, init_params, teacher), 0, None
            _write_json(
                os.path.join(workdir, "config.json"), dict(config.to_dict(), dataset=dataset)
            )
            checkpointer.prune()
            if restored is not None:
                state, restored_meta, start_step = restored
                carried = restored_meta.get("pending_metrics")
                log.info("resumed from the checkpoint at step %d", start_step)
            teacher = None  # the starting weights are not kept on the devices while training

            writer = MetricWriter(workdir, tensorboard=bool(settings.tensorboard))
            writer.truncate_after(start_step)
            writer.write_config(config, start_step)
            evaluator = Evaluator.for_experiment(config, exp, workdir)
            train_step = exp.jit_train_step()
        except BaseException:
            checkpointer.close()
            raise
    finally:
        setup.__exit__(None, None, None)
    return _Run(
        exp=exp,
        workdir=workdir,
        lock=lock,
        checkpointer=checkpointer,
        writer=writer,
        evaluator=evaluator,
        train_step=train_step,
        state=state,
        start_step=start_step,
        restored=restored is not None,
        carried=carried,
        dataset=dataset,
        cost=cost,
        progress=bool(settings.progress) if progress is None else progress,
        init_params=init_params,
    )


def _loop(run: _Run, *, retry: bool) -> _LoopEnd:
    """The steps from ``run.start_step`` to ``train.num_steps``.

    Every ``log_every`` steps (and at the last) the losses are checked (a non-finite one
    raises :class:`NonFiniteLossError`, or :class:`_SuspectCheckpoint` within
    :data:`SUSPECT_STEPS` of a restore when ``retry``) and their means, the learning rate and
    the throughput are written; a checkpoint every ``checkpoint_every`` steps, at every
    evaluation step (before the evaluation) and at the last; an evaluation of the EMA weights
    every ``eval_every`` steps; a SIGTERM (agreed by every process) saves a checkpoint and
    stops. On an error the metrics are flushed and the checkpointer closed."""
    exp, settings = run.exp, run.settings
    checkpointer, writer, evaluator = run.checkpointer, run.writer, run.evaluator
    state, run.state = run.state, None  # the train step donates it
    start_step, num_steps = run.start_step, int(settings.num_steps)
    log_every = int(settings.log_every)
    eval_every, ckpt_every = settings.eval_interval, settings.checkpoint_interval
    single = jax.process_count() == 1
    meta = {"config": exp.config.to_dict()}
    # The rate optax applied in update k (count k - 1 before it), logged as train/lr at step k.
    lr_schedule = optim_lib.make_schedule(exp.optim, num_steps)
    last_saved = start_step if run.restored else None

    def save(step: int, st: TrainState) -> None:
        nonlocal last_saved
        checkpointer.save(step, st, dict(meta, pending_metrics=pending.saved()))
        last_saved = step

    # The ETA leaves out the first step of this session: it compiles the train step.
    bar = console.progress_bar(
        num_steps,
        initial=start_step,
        enabled=run.progress,
        desc="train",
        unit="step",
        first_step_compiles=True,
    )
    pending = _Pending(run.carried)
    preempted = False
    t_start = time.perf_counter()
    steps_run = 0
    preemption = multihost.PreemptionSync(int(settings.preemption_check_every))
    peak = settings.peak_flops_per_device or accounting.peak_flops_per_device(
        jax.devices()[0].device_kind
    )
    timer: tuple[int, float] | None = None  # (step, time) at the last log, after the first
    # Token batches: each step's FLOPs from its own valid tokens (this process's rows).
    token_cost = accounting.TokenCost(exp.model, exp.data.element_shape[-1])
    window: list[accounting.StepCost] = []

    def on_local(local: dict) -> None:
        window.append(token_cost(local))

    on_local = on_local if exp.token_batches else None

    def check(pending):
        bad = pending.first_nonfinite()
        if bad is not None:
            checkpointer.wait()
            if retry and run.restored and bad[0] - start_step <= SUSPECT_STEPS:
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
            batches = exp.batches(start_step, on_local=on_local)
            step = start_step
            while step < num_steps:
                batch = next(batches)
                state, metrics = run.train_step(state, batch)
                step += 1
                steps_run += 1
                pending.append(step, metrics)
                if step % log_every == 0 or step == num_steps:
                    check(pending)
                    means = pending.means()  # waits for the step: timing is honest
                    now = time.perf_counter()
                    if timer is not None and step > timer[0]:
                        cost = _window_cost(window) if on_local else run.cost
                        rates = cost.rates(
                            (now - timer[1]) / (step - timer[0]), exp.mesh.size, peak
                        )
                        means.update({f"perf/{k}": v for k, v in rates.items()})
                    timer = (step, now)  # the first interval (compilation) is not reported
                    window.clear()
                    means["train/lr"] = float(lr_schedule(step - 1))
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
                    with run.abandon(f"the evaluation at step {step}", step):
                        metrics_eval, samples_eval = evaluator(state.ema_params)
                    writer.write(step, {f"eval/{k}": v for k, v in metrics_eval.items()})
                    if writer.tensorboard:
                        _write_samples_image(writer, evaluator, samples_eval, step, run.title(step))
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
    return _LoopEnd(state, preempted, steps_run, time.perf_counter() - t_start)


def _window_cost(window: list[accounting.StepCost]) -> accounting.StepCost:
    """The mean step of a logging window of token batches, summed over the processes (each
    counted its own rows)."""
    mean = accounting.StepCost.mean(window)
    names = ("model_flops", "tokens", "examples", "slots", "padded_flops")
    values = [getattr(mean, k) for k in names]
    known = [v is not None for v in values]
    summed = multihost.sum_over_processes(np.asarray([v or 0.0 for v in values]))
    return accounting.StepCost(
        **{k: float(v) if ok else None for k, v, ok in zip(names, summed, known)}
    )


def _finish(run: _Run, end: _LoopEnd) -> dict:
    """The summary; unless the loop was preempted, the final evaluation first: the EMA and the
    raw weights scored with every sampler, the baseline (:func:`_baseline`), the metrics
    written at the last step, ``samples.png`` and ``summary.json``. Closes the writer and the
    checkpointer."""
    num_steps, wall = int(run.settings.num_steps), end.seconds
    summary: dict[str, Any] = {
        "step": int(jax.device_get(end.state.step)),
        "num_steps": num_steps,
        "preempted": end.preempted,
        "steps_run_this_session": end.steps_run,
        "train_seconds_this_session": wall,
        "steps_per_second": end.steps_run / wall if end.steps_run and wall > 0 else None,
    }
    if not end.preempted:
        evaluator, writer, progress = run.evaluator, run.writer, run.progress
        with run.abandon("the final evaluation", num_steps):
            final_metrics, samples = evaluator(
                end.state.ema_params, progress=progress, desc="final eval (EMA)"
            )
            final_raw, _ = evaluator(end.state.params, progress=progress, desc="final eval (raw)")
            baseline = _baseline(run.exp, evaluator, run.init_params, progress)
        writer.write(
            num_steps,
            {f"eval/{k}": v for k, v in final_metrics.items()}
            | {f"eval_raw/{k}": v for k, v in final_raw.items()},
        )
        summary.update(final=final_metrics, final_raw=final_raw, **baseline)
        for name, scores in baseline.items():
            writer.write_baseline(name, scores, num_steps)
        summary["dataset"] = run.dataset
        if jax.process_index() == 0:
            png = os.path.join(run.workdir, "samples.png")
            writer.write_image(
                "samples", evaluator.plot(samples, png, run.title(num_steps)), num_steps
            )
            summary["samples_png"] = png
        _write_json(os.path.join(run.workdir, "summary.json"), summary)
    run.writer.close()
    run.checkpointer.close()
    return summary
