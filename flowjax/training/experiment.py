"""``Experiment``: everything a config builds before training (data, model, objective,
optimizer, mesh and shardings), and :func:`load_run`, which rebuilds a saved run's experiment
and restores its EMA weights.

The experiment reads only the declared contracts of what it builds:
:class:`flowjax.objectives.Objective` (``average_velocity``, ``data_free``, ``frozen``,
``build_model``, ``initial_params``), :class:`flowjax.data.DataSource` (optional members through
:func:`flowjax.data.device_batch_fn`) and the registered networks' ``check_input``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from flowjax import data as data_lib
from flowjax import models, objectives, parallel
from flowjax.objectives.registry import upgrade_time_sampler
from flowjax.parallel import multihost
from flowjax.spec import Section
from flowjax.training import accounting
from flowjax.training.checkpoint import Checkpointer
from flowjax.training.optim import OptimSettings, make_optimizer
from flowjax.training.restore import run_data
from flowjax.training.state import TrainState
from flowjax.training.step import make_train_step
from flowjax.training.workdir import read_config_json
from flowjax.types import Model

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainSettings(Section):
    """The ``train`` section; the first four fields have no default.

    ``batch_size`` (global, over all processes), ``num_steps``, ``ema_decay`` (of the debiased
    EMA weights) and ``log_every`` (steps between train-loss logs); ``eval_every`` and
    ``checkpoint_every`` (steps between evaluations / checkpoints; 0: only at the end; every
    evaluation step is also a checkpoint step), ``keep_checkpoints`` (the newest kept),
    ``async_checkpoint`` (save in the background), ``tensorboard`` (event files beside
    ``metrics.jsonl``), ``progress`` (a progress bar), ``grad_accum_steps`` (micro-batches per
    step: the same gradient, 1/k of the activation memory), ``preemption_check_every``
    (multi-host: steps between agreeing on a SIGTERM) and ``peak_flops_per_device`` (for the
    MFU; None: looked up from the device kind).
    """

    section: ClassVar[str] = "train"
    batch_size: int
    num_steps: int
    ema_decay: float
    log_every: int
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    async_checkpoint: bool = True
    tensorboard: bool = True
    progress: bool = True
    grad_accum_steps: int = 1
    preemption_check_every: int = 10
    peak_flops_per_device: float | None = None

    @property
    def eval_interval(self) -> int:
        """Steps between evaluations (``num_steps``: only the final one)."""
        return int(self.eval_every) or int(self.num_steps)

    @property
    def checkpoint_interval(self) -> int:
        """Steps between checkpoints (``num_steps``: only at the end)."""
        return int(self.checkpoint_every) or int(self.num_steps)


@dataclasses.dataclass(frozen=True)
class InitSettings(Section):
    """The ``init`` section: ``workdir``, a run whose EMA weights start this one (None, or no
    section: a random initialisation)."""

    section: ClassVar[str] = "init"
    workdir: str | None = None


class Experiment:
    """Everything built from a config, before any training: usable from a notebook.

    Attributes: ``train``, ``optim``, ``init`` (the sections ``config.train``, ``config.optim``,
    ``config.init`` as :class:`TrainSettings`, :class:`~flowjax.training.optim.OptimSettings`,
    :class:`InitSettings`), ``data``, ``model``, ``apply_fn``, ``objective``, ``tx``, ``mesh``,
    ``rules`` (logical-axis rules), ``state_sharding`` (a :class:`TrainState` of
    ``NamedSharding``s, one per leaf), ``batch_sharding``, ``num_classes``,
    ``grad_accum_steps``. ``data`` and ``objective`` replace the ones the config would build;
    ``devices`` (default: all devices of all processes) are the devices the mesh is laid over.

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
        self.train = tcfg = TrainSettings.from_config(config)
        self.optim = OptimSettings.from_config(config)
        self.init = InitSettings.from_config(config)
        self.mesh = parallel.make_mesh(parallel.MeshSettings.from_config(config).axes(), devices)
        self.rules = parallel.rules_from_config(config, self.mesh)
        self.batch_sharding = parallel.batch_sharding(self.mesh, self.rules)
        self.grad_accum_steps = int(tcfg.grad_accum_steps)
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
        self.data = data_lib.check_source(
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
        if not isinstance(self.objective, objectives.Objective):
            raise TypeError(
                f"{type(self.objective).__name__} is not an objective; subclass "
                "flowjax.objectives.Objective (its hooks have the defaults Experiment reads)"
            )
        if data is None and not self.objective.data_free:
            _check_batch_keys(self.objective, self.data, config)
        if not self.objective.data_free:
            _check_token_batches(self.objective, self.data, config)
        self.average_velocity = bool(self.objective.average_velocity)

        def make(use_end_time: bool):
            return models.make_model(
                config.model, num_classes=self.num_classes, use_end_time=use_end_time
            )

        # The config's network checks the data's shape (each registered model declares
        # ``check_input``); objectives with several networks build copies of the same one.
        make(self.average_velocity).check_input((1, *self.data.element_shape))
        self.model = self.objective.build_model(make)
        if not isinstance(self.model, Model):
            raise TypeError(
                f"{type(self.objective).__name__}.build_model returned a "
                f"{type(self.model).__name__}, which does not subclass flowjax.types.Model; "
                "mix it in (class Net(nn.Module, Model)) so accounting can read its hooks"
            )
        self.apply_fn = models.make_apply_fn(self.model)
        self.frozen = tuple(self.objective.frozen)
        self.tx = _freeze(make_optimizer(self.optim, int(tcfg.num_steps)), self.frozen)
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
                params = self.objective.initial_params(nn.meta.unbox(params), loaded)
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
        if params is not None:
            objectives.check_same_structure(params, self.abstract_state().params)
        return self._jit_init(key, params, loaded)

    @functools.cached_property
    def _jit_init(self):
        # One jitted initialiser per experiment: a fresh ``jax.jit`` per call would retrace and
        # recompile it every time (the untrained baseline, benchmarks, notebooks).
        return jax.jit(self._init, out_shardings=self.state_sharding)

    def pretrained_params(self) -> Any:
        """The EMA weights of the run named by ``config.init.workdir`` (None if unset)."""
        return pretrained_params(self.config)

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
            float(self.train.ema_decay),
            grad_accum_steps=self.grad_accum_steps,
        )
        rules, abstract_mesh = self.rules, self.mesh.abstract_mesh
        device_batch = data_lib.device_batch_fn(self.data) if self.fuse_data else None
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
            self.model, tuple(self.data.element_shape), int(self.train.batch_size)
        )

    @property
    def data_free(self) -> bool:
        """The objective reads no data (FreeFlow): batches are zeros that fix the shapes."""
        return bool(self.objective.data_free)

    @property
    def fuse_data(self) -> bool:
        """Whether batches are generated inside the jitted step (sources with ``device_batch``:
        a pure function of the step, e.g. the 2-D toys), saving a dispatch and a transfer."""
        return not self.data_free and data_lib.device_batch_fn(self.data) is not None

    @property
    def token_batches(self) -> bool:
        """The data gives mixed-size token batches (``"mask"``, ``"positions"``)."""
        return not self.data_free and "mask" in data_lib.batch_keys_of(self.data)

    def batches(self, start_step: int, on_local=None):
        """Global batches ``start_step, start_step + 1, ...`` for :meth:`jit_train_step`'s step
        (``None`` placeholders when the step generates its own data; one device batch of
        zeros, reused, for data-free objectives). ``on_local(batch)`` (optional) sees each
        process-local numpy batch first (the training loop counts token batches' FLOPs)."""
        if self.fuse_data:
            while True:
                yield None
        if self.data_free:
            local = int(self.train.batch_size) // jax.process_count()
            zeros = self.global_batch(
                {"x1": np.zeros((local, *self.data.element_shape), np.float32)}
            )
            while True:
                yield zeros
        for local in self.data.iterator(start_step):
            if on_local is not None:
                on_local(local)
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


def _check_batch_keys(objective: Any, source: Any, config: Any) -> None:
    """A clear error when the objective reads batch entries the config's data does not give
    (reflow without ``data.pairs_dir``), before anything is compiled."""
    given = data_lib.batch_keys_of(source)
    missing = [k for k in objective.batch_keys if k not in given]
    if missing:
        name = config.objective.get("name", type(objective).__name__)
        raise ValueError(
            f"objective {name!r} trains on batches with {list(objective.batch_keys)} but the "
            f"data of config.data gives {list(given)}"
            + (
                "; set config.data.pairs_dir to a pair data set written by "
                "`flowjax reflow --teacher=RUN --out=DIR`"
                if "x0" in missing
                else ""
            )
        )


def _check_token_batches(objective: Any, source: Any, config: Any) -> None:
    """Refuse, before compiling, an objective that does not declare mixed-size token batches
    (``optional_batch_keys``) for a source whose batches carry a ``"mask"``."""
    given = data_lib.batch_keys_of(source)
    if "mask" in given and "mask" not in (*objective.batch_keys, *objective.optional_batch_keys):
        name = config.objective.get("name", type(objective).__name__)
        raise ValueError(
            f"objective {name!r} does not train on mixed-size token batches (the data gives "
            f"{list(given)}); use objective.name='flow_matching', which does, or data of one "
            "fixed size"
        )


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


def load_run(
    workdir: str,
    *,
    num_samples: int | None = None,
    model_fields: dict[str, Any] | None = None,
    eval_fields: dict[str, Any] | None = None,
):
    """``(config, experiment, ema_params, step)`` of the newest verified checkpoint in
    ``workdir`` (read only: a checkpoint that fails is skipped with a warning, never moved).

    The experiment's data is :func:`run_data`: where the run's data cannot be rebuilt it is a
    stand-in without examples (``exp.data.reason`` says why), enough to sample the model.
    ``model_fields`` / ``eval_fields`` replace fields of the stored ``model`` / ``eval``
    sections for this load only (sampling a trained network with another rotary rule,
    ``{"rope": "visionyarn"}``, or guiding other channels); a model field the run's network
    does not have is refused, naming it. The weights are the trained ones either way.
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise ValueError(f"{workdir} has no config.json; train there first with flowjax.main")
    stored = read_config_json(path)
    if isinstance(stored.get("objective", None), dict):  # a run trained with the retired form
        stored["objective"] = upgrade_time_sampler(stored["objective"])
    config = ml_collections.ConfigDict(stored)
    for key in model_fields or {}:
        name = config.model.get("name")
        if key not in models.model_class(name).__dataclass_fields__:
            raise ValueError(
                f"the network of this run (model {name!r}) has no field {key!r}; "
                + (
                    "a rotary spec is for any-resolution transformers (fitv2, nextdit)"
                    if key == "rope"
                    else "drop the override"
                )
            )
    # Whole sections replaced: a stored field of another type (a list given as text) is no
    # obstacle to the override.
    if model_fields:
        config.model = ml_collections.ConfigDict({**config.model.to_dict(), **model_fields})
    if eval_fields:
        config.eval = ml_collections.ConfigDict({**config.eval.to_dict(), **eval_fields})
    if num_samples is not None:
        if int(num_samples) < 1:
            raise ValueError(f"num_samples={num_samples}: must be >= 1")
        config.eval.num_samples = int(num_samples)
    exp = Experiment(config, data=run_data(config))
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise ValueError(f"no checkpoints in {workdir}; train there first with flowjax.main")
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    try:
        restored = ckpt.restore_latest(exp.abstract_state(), move_aside=False)
    finally:
        ckpt.close()
    if restored is None:
        raise ValueError(f"no readable checkpoint in {workdir}/checkpoints")
    state, _, step = restored
    return config, exp, state.ema_params, int(step)


def pretrained_params(config: Any) -> Any:
    """The EMA weights of the run named by ``config.init.workdir`` (None if unset)."""
    workdir = InitSettings.from_config(config).workdir
    if not workdir:
        return None
    _, _, params, step = load_run(os.path.expanduser(workdir))
    log.info("initialising from %s (step %d)", workdir, step)
    return params
