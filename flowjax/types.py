"""The names every part of flowjax shares: array aliases and the declared contracts.

Aliases:

- ``Array``: a JAX array (``jax.Array``).
- ``VelocityFn``: ``v(x, t, cond) -> array like x``, ``t`` of shape ``[B]`` (noise at t = 0,
  data at t = 1); solvers and search integrate it and never see parameters.
- ``ApplyFn``: ``apply_fn(params, x, t, cond, *, train, rng, **extra)``, a network adapted by
  :func:`flowjax.models.make_apply_fn`.
- ``Batch``: a training batch, a dict of arrays (``"x1"``, optional ``"label"``, ``"x0"`` for
  pair data sets).

Contracts (each a small base class whose hooks have typed defaults; a new piece subclasses
it and is registered by name with the ``register_*`` function of its table):

- :class:`Metric`: scores samples against a reference set (:mod:`flowjax.evaluation`).
- :class:`Model`: what the library reads from a registered network besides calling it
  (:mod:`flowjax.models`).
- :class:`Objective`: a training objective, ``loss_fn(params, apply_fn, batch, key) ->
  (loss, metrics)`` (:mod:`flowjax.objectives`).
- :class:`Solver`: one step of an ODE solver; :func:`flowjax.solvers.sample` drives any solver
  over a time grid in one ``lax.scan`` (:mod:`flowjax.solvers`).
- :class:`DataSource`: what training, the evaluator and the run record read from a data set
  (:mod:`flowjax.data`).

Each contract has one definition, here; the packages re-export it under their public name
(``flowjax.objectives.Objective is flowjax.types.Objective``).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import jax
import numpy as np

if TYPE_CHECKING:
    import flax.linen as nn

__all__ = [
    "ApplyFn",
    "Array",
    "Batch",
    "DataSource",
    "Metric",
    "Metrics",
    "Model",
    "Objective",
    "ScalarTimeVelocity",
    "Solver",
    "VelocityFn",
    "check_same_structure",
]

Array = jax.Array
VelocityFn = Callable[[Array, Array, Any], Array]
ApplyFn = Callable[..., Array]
Batch = Mapping[str, Array]


@dataclasses.dataclass(frozen=True)
class SamplerOption:
    """An ``@`` option an objective's own sampler takes (``make_sampler(..., keyword=...)``).

    Attributes:
      keyword: the keyword argument of the objective's ``make_sampler`` the option sets.
      value: a flag's value (``@frn`` -> ``frn=True``); ``None`` for a value option, which
        passes its numbers as a tuple of floats (``@tau=0.7/0.9`` -> ``thresholds=(0.7, 0.9)``).
      help: one line saying what it does (shown in errors and docs).
    """

    keyword: str
    value: Any = None
    help: str = ""

    @property
    def takes_numbers(self) -> bool:
        return self.value is None

    def usage(self, name: str) -> str:
        """How it is written: ``@frn`` or ``@tau=V[/V...]``."""
        return f"@{name}=V[/V...]" if self.takes_numbers else f"@{name}"


@dataclasses.dataclass(frozen=True)
class Metric:
    """A score of generated samples against a reference set.

    A metric is registered by name (:func:`flowjax.evaluation.register_metric`), named in
    ``config.eval.metrics``, and built once per evaluator by its classmethod
    ``build(context)`` (:class:`flowjax.evaluation.MetricContext`: the eval settings, the data
    source and its held-out examples, the run's velocity, noise and labels, a key). ``build``
    raises :class:`flowjax.evaluation.MetricUnavailable` when the metric's inputs are not
    configured (no Inception weights, a data set without a feature metric); the default list
    then leaves it out, and naming it in ``eval.metrics`` is an error that says what to set.

    It declares what it needs, and the evaluator gives it only that:

    - ``kinds``: the sample kinds it applies to (``"points"``: vectors, ``"images"``: arrays
      ``[N, H, W, C]`` in ``[-1, 1]``); it is skipped for the others.
    - ``needs_pixels``: it scores images as an image file holds them: latents decoded by the
      run's VAE (the decoder), clipped to ``[-1, 1]`` and quantised to 256 levels; the
      reference it receives is the held-out data made into pixels the same way.
    - ``needs_labels``: it also receives the samples' class labels (``labels=`` keyword).
    - ``needs_reference``: it compares with the held-out data; without held-out data (a run
      whose data cannot be rebuilt) it is skipped. ``False`` for metrics that bring their own
      reference (statistics from a file, a data set's test split).
    - ``needs_velocity``: it scores the model's flow rather than one sampler setting's
      samples: built with the run's velocity function, noise and labels (from the context),
      it is scored once per evaluation with ``samples=None`` and ``params=`` the evaluated
      parameters, under its own names (no sampler label).
    - ``default``: whether it is in the default list (every registered metric that applies
      and whose inputs are configured); ``False`` for metrics that cost extra network
      evaluations or are opt-in.

    ``score(samples, reference, **needs) -> {name: value}``: the keys are the metric's own
    names (``"fid"``, ``"is"``); the evaluator appends the sampler's label (``fid_euler_nfe4``).
    """

    kinds: ClassVar[tuple[str, ...]] = ("points", "images")
    needs_pixels: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = True
    needs_velocity: ClassVar[bool] = False
    default: ClassVar[bool] = True

    @classmethod
    def build(cls, context: Any) -> Metric:
        """The metric for one run (``context``: a :class:`flowjax.evaluation.MetricContext`)."""
        del context
        return cls()

    def applies_to(self, kind: str) -> bool:
        return kind in self.kinds

    def score(self, samples: np.ndarray, reference: np.ndarray | None, **kw: Any) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must define score(samples, reference)")


class Model:
    """What the library reads from a registered network besides calling it.

    A network registered with :func:`flowjax.models.register_model` is a flax module built
    from the config's ``model`` section that also subclasses this class (``class
    Net(nn.Module, Model)``); the module an objective builds (``Objective.build_model``) is one
    too. It may override these hooks (defaults shown); throughput accounting
    (:mod:`flowjax.training.accounting`) reads only them:

    - ``check_input(shape)``: raise a ``ValueError`` that says what to change when a batch
      ``x`` of ``shape [B, *element_shape]`` cannot be fed to this network (called on the
      config's network before compiling, and by the networks on their input). Default: accept.
    - ``forward_flops(element_shape, part="full")``: model FLOPs (2 x multiply-adds) of one
      forward pass on one example, or ``None`` when unknown (no MFU is then reported).
      ``part`` names a sub-network for models that hold several (blockwise features).
    - ``num_tokens(element_shape)``: tokens one example becomes (transformers), or ``None``.

    Optional: ``variant_fields(variant) -> dict`` (a static method) makes config
    ``model.variant="XL/2"`` fill the fields of a published size (absent: no variants).
    """

    def check_input(self, shape: tuple[int, ...]) -> None:
        del shape

    def forward_flops(self, element_shape: tuple[int, ...], part: str = "full") -> float | None:
        del element_shape, part
        return None

    def num_tokens(self, element_shape: tuple[int, ...]) -> int | None:
        del element_shape
        return None


Metrics = dict[str, Array]
ScalarTimeVelocity = Callable[[Array, Array], Array]


@dataclasses.dataclass(frozen=True)
class Objective:
    """Base of every training objective.

    An objective is a small immutable value (a frozen dataclass) whose hyperparameters are its
    fields. It exposes one pure function, ready for ``jax.value_and_grad(..., has_aux=True)``::

        loss_fn(params, apply_fn, batch, key) -> (loss, metrics)

    - ``params``: the model parameters (a pytree).
    - ``apply_fn(params, x, t, cond, *, train=False, rng=None, **extra) -> output``: the network,
      with ``x [B, ...]``, ``t [B]`` in flowjax time (noise 0, data 1) and ``cond`` the labels
      ``[B]`` or ``None``. Average-velocity networks also take ``t_end=[B]`` in ``extra``.
    - ``batch``: a dict with the keys :attr:`Objective.batch_keys` (the data ``"x1" [B, ...]``,
      the paired noise ``"x0"`` for reflow, ...) and, for conditional models, ``"label" [B]``
      (int). Objectives draw their own noise and times from ``key``.
    - ``metrics``: a dict of scalar arrays (averaged over the batch), logged as they are.

    The hooks :class:`flowjax.training.Experiment` reads, each with a typed default on the base
    (a subclass overrides the class attribute or the method):

    - ``average_velocity`` (False): the network models ``u(x, s, cond, t_end)`` (MeanFlow); the
      config's network is built with ``use_end_time`` and sampled with ``flowmap``.
    - ``data_free`` (False): the batch only fixes the batch size and shapes; no data are read.
    - ``frozen`` (()): top-level parameter groups that are never updated (no optimizer state).
    - ``batch_keys`` (``("x1",)``): the batch entries ``loss_fn`` reads besides ``"label"``.
    - ``optional_batch_keys`` (``()``): entries ``loss_fn`` also reads when a batch has them;
      ``("mask", "positions", "context", "context_mask")`` declares that it trains on mixed-size
      token batches (:class:`flowjax.data.tokens.TokenBatch`). A source that gives ``"mask"``
      is refused before compiling for an objective that does not declare it.
    - ``build_model(make) -> nn.Module``: ``make(use_end_time)`` builds the config's network; an
      objective with several networks wraps them in one module (default:
      ``make(self.average_velocity)``).
    - ``initial_params(fresh, loaded) -> params``: how a run started from another run's weights
      (``config.init.workdir``) maps them into this objective's parameter tree (default: the
      loaded tree as it is, which must match the fresh tree's structure).
    - ``noise_shape(element_shape) -> shape``: the shape of the noise one sample starts from
      (default: the data's element shape; a multi-stage flow may start from several noises packed
      into one array).
    - ``make_sampler(velocity, solver, nfe, grid_spec) -> run | None``: the sampler of a flow that
      is not one network over ``[0, 1]`` (blockwise, multi-stage), ``run(params, x0 [B,
      *noise_shape], cond) -> samples [B, *element_shape]``; ``None`` (default) means the standard
      ``solvers.make_sampler(solver, velocity, grid_from_spec(grid_spec, ...))``. ``velocity(params,
      x, t, cond, **extra)`` is the network with the evaluation's classifier-free guidance; keyword
      ``extra`` arguments are passed to the network (array values per row, duplicated for the two
      CFG halves; ``method=...`` calls another module method, unguided) and ``velocity.guidance`` is
      ``(scale, null_label)`` or ``None``. ``run.network_calls`` (evaluations per sample by
      kind, e.g. ``{"full": nfe}``) prices the sampler's inference FLOPs.
    - ``sampler_options`` (empty): the ``@`` options of sampler strings this objective's
      ``make_sampler`` takes, ``name -> SamplerOption(keyword, value, help)``: a flag sets
      ``keyword=value`` (``"euler:8@frn"`` -> ``frn=True``), a value option passes its numbers
      (``"euler:40@tau=0.7"`` -> ``thresholds=(0.7,)``). Any other option is refused with a
      one-line error listing these (:func:`flowjax.solvers.spec.objective_keywords`), before
      anything is sampled.
    - ``segmented_sampler`` (False): ``make_sampler`` also takes ``solver``, ``nfe`` and
      ``grid_spec`` as tuples, one per segment (``"euler:2|heun:4"`` sampler strings).

    Adding an objective is one file (a subclass) and one call to
    :func:`flowjax.objectives.register_objective`.
    """

    average_velocity: ClassVar[bool] = False
    data_free: ClassVar[bool] = False
    frozen: ClassVar[tuple[str, ...]] = ()
    batch_keys: ClassVar[tuple[str, ...]] = ("x1",)
    optional_batch_keys: ClassVar[tuple[str, ...]] = ()
    sampler_options: ClassVar[Mapping[str, SamplerOption]] = MappingProxyType({})
    segmented_sampler: ClassVar[bool] = False

    def loss_fn(
        self, params: Any, apply_fn: ApplyFn, batch: dict[str, Array], key: Array
    ) -> tuple[Array, Metrics]:
        raise NotImplementedError(f"{type(self).__name__} must define loss_fn")

    def build_model(self, make: Callable[[bool], nn.Module]) -> nn.Module:
        """The trained module; ``make(use_end_time)`` builds the config's network."""
        return make(self.average_velocity)

    def initial_params(self, fresh: Any, loaded: Any) -> Any:
        """This objective's parameters from another run's weights ``loaded`` (``fresh``: a
        random initialisation of the module :meth:`build_model` returns); by default the
        loaded tree as it is, which must have ``fresh``'s structure."""
        check_same_structure(loaded, fresh)
        return loaded

    def noise_shape(self, element_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the noise one sample starts from (default: ``element_shape``)."""
        return tuple(element_shape)

    def make_sampler(
        self, velocity: Callable[..., Array], solver: Any, nfe: int, grid_spec: str
    ) -> Callable[..., Array] | None:
        """This objective's own sampler ``run(params, x0, cond) -> samples`` for ``solver``
        (a :class:`flowjax.solvers.Solver`) at ``nfe`` evaluations and the grid ``grid_spec``, or
        ``None`` for the standard single-flow sampler (the default)."""
        del velocity, solver, nfe, grid_spec
        return None


def check_same_structure(given: Any, expected: Any) -> None:
    """A clear error unless the parameter trees ``given`` and ``expected`` match."""
    if jax.tree.structure(given) != jax.tree.structure(expected):
        raise ValueError(
            "the initial parameters do not match the parameters of the config's model; "
            "start from a run trained with the same model config"
        )


class Solver(abc.ABC):
    """Base class of one-step and multistep ODE solvers.

    A solver is a small immutable value. It declares its ``order`` and how many velocity
    evaluations one step costs (``nfe_per_step``), and implements::

        init(x)                                          -> state  (a pytree; default ())
        step(f, x, t, t_next, state, index, num_steps)   -> (x_next, state)

    where ``f(x, t)`` is the velocity with a *scalar* time already broadcast over the batch
    and the condition already bound (``f(x, t, t_end)`` for solvers with ``needs_end_time``,
    which integrate average-velocity models). ``index`` is the step number (a traced int) and
    ``num_steps`` the static number of steps, for multistep methods with warm-up and
    lower-order final steps. :func:`flowjax.solvers.sample` drives it over a time grid;
    :func:`flowjax.solvers.register_solver` names it.
    """

    name: str = "solver"
    order: int = 1
    nfe_per_step: int = 1
    min_steps: int = 1
    # Appended to the "needs at least min_steps" errors: why the minimum exists.
    min_steps_note: str = ""
    # True for solvers of average-velocity models u(x, t, cond, t_end) (flow maps).
    needs_end_time: bool = False

    def init(self, x: Array) -> Any:
        del x
        return ()

    @abc.abstractmethod
    def step(
        self,
        f: ScalarTimeVelocity,
        x: Array,
        t: Array,
        t_next: Array,
        state: Any,
        index: Array,
        num_steps: int,
    ) -> tuple[Array, Any]:
        """Advance ``x`` from time ``t`` to ``t_next``."""

    def num_steps_for_nfe(self, nfe: int) -> int:
        """Number of steps that spend exactly ``nfe`` velocity evaluations.

        Raises a ValueError if ``nfe`` is below this solver's minimum or not a multiple of
        its cost per step: NFE counts in flowjax are always honest.
        """
        nfe = int(nfe)
        minimum = self.nfe_per_step * self.min_steps
        if nfe < minimum:
            raise ValueError(
                f"{self.name} needs at least {minimum} function evaluations "
                f"({self.min_steps} step(s) x {self.nfe_per_step} NFE); got nfe={nfe}"
                f"{self.min_steps_note}"
            )
        if nfe % self.nfe_per_step:
            lower = nfe - nfe % self.nfe_per_step
            raise ValueError(
                f"{self.name} costs {self.nfe_per_step} NFE per step, so nfe must be a "
                f"multiple of {self.nfe_per_step}; got nfe={nfe}. Use nfe={lower} or "
                f"{lower + self.nfe_per_step}."
            )
        return nfe // self.nfe_per_step

    def nfe(self, num_steps: int) -> int:
        return self.nfe_per_step * int(num_steps)


@runtime_checkable
class DataSource(Protocol):
    """What :class:`flowjax.training.Experiment`, the evaluator and the run record read.

    Required:

    - ``kind``: ``"points"`` or ``"images"``; ``name``: the data set's name.
    - ``element_shape``: one example's shape; ``num_classes``: ``None`` if unlabelled.
    - ``iterator(start_step)``: this process's rows of global batch ``start_step, ...`` as
      dicts ``{"x1": [b, ...], "label": [b]}`` (``label`` only for labelled data; pair
      sources add ``"x0"``), ``b`` from the source's :class:`flowjax.data.BatchLayout`.
    - ``eval_array(n)``: held-out data ``(x [n, ...], labels [n] or None)``.

    Optional, each with a default (read through :mod:`flowjax.data.base`'s ``device_batch_fn``,
    ``fingerprint_of``, ``has_eval_data``, ``unavailable_reason``, ``feature_metric`` and
    ``batch_keys_of``, the only places that look for them):

    - ``device_batch(step) -> dict`` (none): the whole global batch as a pure, traceable
      function of ``step`` (fused into the jitted step).
    - ``fingerprint() -> str`` (none): a content hash recorded with the run.
    - ``has_eval_data`` (True): False for stand-ins that only carry shapes.
    - ``reason`` (None): why a stand-in has no examples (reported instead of the metrics).
    - ``feature_metric(cache_dir) -> FeatureMetric | None`` (None): a distance on learned
      features that suits this data (e.g. the digits classifier's Fréchet distance); the
      evaluator scores samples with it besides the pixel metrics.
    - ``base`` (None): the real data set a wrapping source imitates (reflow pairs, generated
      tuples); its feature metric is the one the wrapper reports.
    - ``batch_keys`` (``("x1",)``): the entries of each batch besides ``label`` (pair sources:
      ``("x0", "x1")``; mixed-size token sources: ``("x1", "mask", "positions")``, ``x1``
      then tokens ``[b, N, p^2 C]`` while ``element_shape`` stays the image shape the run is
      evaluated at), checked against the objective's ``batch_keys`` and
      ``optional_batch_keys`` before training.
    """

    kind: str
    name: str
    element_shape: tuple[int, ...]
    num_classes: int | None

    def iterator(self, start_step: int = 0) -> Iterator[dict]: ...

    def eval_array(self, n: int) -> tuple[np.ndarray, np.ndarray | None]: ...
