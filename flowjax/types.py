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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import numpy as np

__all__ = ["ApplyFn", "Array", "Batch", "Metric", "Model", "VelocityFn"]

Array = jax.Array
VelocityFn = Callable[[Array, Array, Any], Array]
ApplyFn = Callable[..., Array]
Batch = Mapping[str, Array]


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
    from the config's ``model`` section; it may override these hooks (defaults shown):

    - ``check_input(element_shape)``: raise a ``ValueError`` that says what to change when
      the data's example shape cannot be fed to this network (called before compiling).
      Default: accept.
    - ``forward_flops(element_shape, part="full")``: model FLOPs (2 x multiply-adds) of one
      forward pass on one example, or ``None`` when unknown (no MFU is then reported).
      ``part`` names a sub-network for models that hold several (blockwise features).
    - ``num_tokens(element_shape)``: tokens one example becomes (transformers), or ``None``.
    """

    def check_input(self, element_shape: tuple[int, ...]) -> None:
        del element_shape

    def forward_flops(self, element_shape: tuple[int, ...], part: str = "full") -> float | None:
        del element_shape, part
        return None

    def num_tokens(self, element_shape: tuple[int, ...]) -> int | None:
        del element_shape
        return None
