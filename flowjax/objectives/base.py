"""The objective contract: :class:`Objective`, the base every training objective subclasses.

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
- ``build_model(make) -> nn.Module``: ``make(use_end_time)`` builds the config's network; an
  objective with several networks wraps them in one module (default:
  ``make(self.average_velocity)``).
- ``initial_params(fresh, loaded) -> params``: how a run started from another run's weights
  (``config.init.workdir``) maps them into this objective's parameter tree (default: the
  loaded tree as it is, which must match the fresh tree's structure).
- ``noise_shape(element_shape) -> shape``: the shape of the noise one sample starts from
  (default: the data's element shape; a multi-stage flow may start from several noises packed
  into one array).
- ``make_sampler(velocity, solver, nfe, grid_spec) -> run | None``: the sampler of a flow that is
  not one network over ``[0, 1]`` (blockwise, multi-stage), ``run(params, x0 [B, *noise_shape],
  cond) -> samples [B, *element_shape]``; ``None`` (default) means the standard
  ``solvers.make_sampler(solver, velocity, grid_from_spec(grid_spec, ...))``. ``velocity(params,
  x, t, cond, **extra)`` is the network with the evaluation's classifier-free guidance; keyword
  ``extra`` arguments are passed to the network (array values per row, duplicated for the two
  CFG halves; ``method=...`` calls another module method, unguided) and ``velocity.guidance``
  is ``(scale, null_label)`` or ``None``. ``run.network_calls`` (evaluations per sample by kind,
  e.g. ``{"full": nfe}``) prices the sampler's inference FLOPs.
- ``sampler_options`` (empty): the ``@`` options of sampler strings this objective's
  ``make_sampler`` takes, ``name -> flowjax.solvers.spec.SamplerOption(keyword, value, help)``:
  a flag sets ``keyword=value`` (``"euler:8@frn"`` -> ``frn=True``), a value option passes its
  numbers (``"euler:40@tau=0.7"`` -> ``thresholds=(0.7,)``). Any other option is refused with
  a one-line error listing these (:meth:`sampler_keywords`), before anything is sampled.
- ``segmented_sampler`` (False): ``make_sampler`` also takes ``solver``, ``nfe`` and
  ``grid_spec`` as tuples, one per segment (``"euler:2|heun:4"`` sampler strings).

Adding an objective is one file (a subclass of :class:`Objective`) and one line in
:data:`flowjax.objectives.registry.OBJECTIVES` (or a call to
:func:`flowjax.objectives.register_objective`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax

from flowjax.solvers import spec as sampler_spec

Array = jax.Array
ApplyFn = Callable[..., Array]
Metrics = dict[str, Array]


@dataclasses.dataclass(frozen=True)
class Objective:
    """Base of every training objective; see the module docstring for the contract."""

    average_velocity: ClassVar[bool] = False
    data_free: ClassVar[bool] = False
    frozen: ClassVar[tuple[str, ...]] = ()
    batch_keys: ClassVar[tuple[str, ...]] = ("x1",)
    sampler_options: ClassVar[Mapping[str, sampler_spec.SamplerOption]] = MappingProxyType({})
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

    def sampler_keywords(
        self, pieces: list[sampler_spec.Piece], options: sampler_spec.Options
    ) -> dict[str, Any]:
        """The keywords of :meth:`make_sampler` for a parsed sampler string's options
        (:func:`flowjax.solvers.spec.parse_eval_spec`), checked against
        :attr:`sampler_options` and :attr:`segmented_sampler` (a one-line error otherwise)."""
        return sampler_spec.sampler_keywords(
            pieces,
            options,
            self.sampler_options,
            segmented=self.segmented_sampler,
            owner=f"objective {type(self).__name__}",
        )


def check_same_structure(given: Any, expected: Any) -> None:
    """A clear error unless the parameter trees ``given`` and ``expected`` match."""
    if jax.tree.structure(given) != jax.tree.structure(expected):
        raise ValueError(
            "the initial parameters do not match the parameters of the config's model; "
            "start from a run trained with the same model config"
        )
