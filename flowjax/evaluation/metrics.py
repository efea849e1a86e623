"""The metric registry: every score the evaluator can report, by name.

A metric is a :class:`flowjax.types.Metric` subclass registered here with
:func:`register_metric`; ``config.eval.metrics`` names the ones a run scores (default: every
default metric that applies to the data kind and whose inputs are configured, in
registration order). The evaluator names none of them: it builds each from a
:class:`MetricContext` and gives it what its flags declare (pixels, labels, the held-out
data, the velocity). Adding a metric is one file: a subclass and one ``register_metric``
line (``tests/extensions/mean_distance.py`` is an example).

Registered here:

========================  ==========  ==================================================
name (keys it reports)    samples     what it needs
========================  ==========  ==================================================
``sw``                    any         held-out data (flattened), the evaluator's key
``mmd``, ``energy``       points      held-out data; the first ``eval.num_kernel_samples``
``fid`` (``fid``, ``is``) images      pixels; ``eval.inception_weights``, and
                                      ``eval.fid_stats`` or held-out data
``fd`` (the data set's)   any         a data set that declares a feature metric
                                      (:func:`flowjax.data.feature_metric`; the bundled
                                      digits' classifier Fréchet distance ``fd``)
``straightness``          any         the velocity and the noise; opt-in (not default)
========================  ==========  ==================================================
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import data as data_lib
from flowjax import solvers
from flowjax.evaluation import fid
from flowjax.evaluation.sample_metrics import energy_distance, mmd, sliced_wasserstein
from flowjax.evaluation.settings import EvalSettings
from flowjax.evaluation.straightness import straightness
from flowjax.registry import Registry
from flowjax.time import grids
from flowjax.types import Metric

__all__ = [
    "IS_SPLITS",
    "METRICS",
    "MetricContext",
    "MetricUnavailable",
    "metric_names",
    "register_metric",
    "select_metrics",
]

IS_SPLITS = 10  # Inception Score splits of the evaluator (the papers' 10)

METRICS: Registry[type[Metric]] = Registry("metric")


class MetricUnavailable(ValueError):
    """A metric's inputs are not configured for this run (the message says what to set)."""


def register_metric(name: str, factory: type[Metric]) -> type[Metric]:
    """Register ``factory`` (a :class:`~flowjax.types.Metric` subclass) as ``name``, the name
    ``config.eval.metrics`` uses; returns it. ``factory.build(context)`` makes the run's
    instance."""
    if not (isinstance(factory, type) and issubclass(factory, Metric)):
        raise TypeError(
            f"metric {name!r}: register a flowjax.types.Metric subclass, got {factory!r}"
        )
    return METRICS.register(name, factory)


def metric_names() -> list[str]:
    """The registered metric names, in registration order."""
    return METRICS.names()


@dataclasses.dataclass(frozen=True)
class MetricContext:
    """What a metric's ``build`` may read about the run it scores.

    Attributes:
      settings: the ``eval`` section (:class:`~flowjax.evaluation.EvalSettings`).
      kind: ``"points"`` or ``"images"``.
      data: the run's data source.
      reference: held-out examples ``[n, ...]`` (``eval.num_samples`` of them), or ``None``.
      reference_pixels: ``() -> pixels`` of ``reference`` (decoded, quantised; computed once).
      key: the evaluation's metric key (fixed per run, so numbers are comparable).
      cache_dir: where metrics cache what they train (a data set's feature network).
      velocity: ``velocity(params, x, t, cond)`` of the run's model (guidance bound).
      noise: the evaluator's fixed noise batch ``[n, ...]``.
      labels: its fixed class labels ``[n]``, or ``None``.
    """

    settings: EvalSettings
    kind: str
    data: Any
    reference: np.ndarray | None
    reference_pixels: Callable[[], np.ndarray]
    key: jax.Array
    cache_dir: str
    velocity: Callable[..., jax.Array]
    noise: jax.Array
    labels: jax.Array | None


def select_metrics(names: Sequence[str] | None, kind: str) -> list[str]:
    """The registered names to build for ``eval.metrics = names`` on samples of ``kind``.

    ``None``: every default metric that applies to ``kind``. Otherwise each name must be
    registered (an unknown one is an error listing the registered ones) and apply to
    ``kind``. Checks names only: call it before any work."""
    if names is None:
        return [n for n, cls in METRICS.items() if cls.default and kind in cls.kinds]
    for name in names:
        cls = METRICS[name]  # unknown metric 'x'; choose one of [...]
        if kind not in cls.kinds:
            raise ValueError(
                f"eval.metrics: {name!r} scores {' or '.join(cls.kinds)}, and this run's samples "
                f"are {kind}; remove it from config.eval.metrics"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"eval.metrics names a metric twice: {list(names)}")
    return list(names)


def build_metrics(names: Sequence[str], context: MetricContext, *, explicit: bool) -> list:
    """``[(name, metric)]`` built from ``context``; a metric whose inputs are not configured
    is left out of the default list (``explicit=False``) and an error when named."""
    built = []
    for name in names:
        try:
            built.append((name, METRICS[name].build(context)))
        except MetricUnavailable as err:
            if explicit:
                raise ValueError(f"eval.metrics names {name!r}, which {err}") from None
    return built


# ---------------------------------------------------------------------------------------------
# Distances between sample sets
# ---------------------------------------------------------------------------------------------


def _flat(x) -> jax.Array:
    return jnp.asarray(x.reshape(x.shape[0], -1))


@dataclasses.dataclass(frozen=True)
class SlicedWassersteinMetric(Metric):
    """``sw``: sliced 2-Wasserstein distance to the held-out data (256 projections drawn from
    the evaluation's key), on flattened samples of any kind."""

    key: jax.Array = None

    @classmethod
    def build(cls, context: MetricContext) -> SlicedWassersteinMetric:
        return cls(key=context.key)

    def score(self, samples, reference, **kw) -> dict:
        return {"sw": float(sliced_wasserstein(_flat(samples), _flat(reference), self.key))}


@dataclasses.dataclass(frozen=True)
class _KernelMetric(Metric):
    """A two-sample distance that costs O(n^2): on the first ``num_kernel_samples`` points."""

    kinds = ("points",)
    num_kernel_samples: int = 5000

    @classmethod
    def build(cls, context: MetricContext) -> _KernelMetric:
        return cls(num_kernel_samples=context.settings.num_kernel_samples)

    def first(self, x) -> jax.Array:
        return _flat(x)[: self.num_kernel_samples]


@dataclasses.dataclass(frozen=True)
class MMDMetric(_KernelMetric):
    """``mmd``: unbiased squared MMD, Gaussian kernels at multiples of the median distance."""

    def score(self, samples, reference, **kw) -> dict:
        return {"mmd": float(mmd(self.first(samples), self.first(reference)))}


@dataclasses.dataclass(frozen=True)
class EnergyMetric(_KernelMetric):
    """``energy``: the energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|``."""

    def score(self, samples, reference, **kw) -> dict:
        return {"energy": float(energy_distance(self.first(samples), self.first(reference)))}


# ---------------------------------------------------------------------------------------------
# Image metrics
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InceptionMetric(Metric):
    """``fid`` and ``is``: Inception FID against ``eval.fid_stats`` (or the held-out pixels'
    statistics) and the Inception Score over 10 splits (fewer below 10 samples), from one pass
    of the network on the quantised pixels (:func:`flowjax.evaluation.fid.score_images`)."""

    kinds = ("images",)
    needs_pixels = True
    needs_reference = False  # its statistics are made once, at build

    net: Any = None
    mu: np.ndarray = None
    sigma: np.ndarray = None

    @classmethod
    def build(cls, context: MetricContext) -> InceptionMetric:
        settings = context.settings
        if not settings.inception_weights:
            raise MetricUnavailable("needs eval.inception_weights (the FID Inception .npz)")
        if not settings.fid_stats and context.reference is None:
            raise MetricUnavailable("needs eval.fid_stats: the run has no held-out data")
        from flowjax.models.inception import InceptionV3

        net = InceptionV3.from_file(os.path.expanduser(settings.inception_weights))
        if settings.fid_stats:
            mu, sigma = fid.load_stats(os.path.expanduser(settings.fid_stats), net.feature_dim)
        else:
            feats, _ = fid.inception_features(net, context.reference_pixels())
            mu, sigma = fid.feature_statistics(feats)
        return cls(net=net, mu=mu, sigma=sigma)

    def score(self, samples, reference, **kw) -> dict:
        splits = min(IS_SPLITS, len(samples) * jax.process_count())
        scores = fid.score_images(self.net, samples, self.mu, self.sigma, splits=splits)
        return {"fid": scores["fid"], "is": scores["is"]}


@dataclasses.dataclass(frozen=True)
class FeatureMetric(Metric):
    """The distance on learned features the data set declares
    (:func:`flowjax.data.feature_metric`), reported under its own name: ``fd``, the digits
    classifier's Fréchet distance to the test split, for the bundled ``sklearn_digits``."""

    needs_reference = False  # the feature metric holds its own reference statistics

    metric: Any = None

    @classmethod
    def build(cls, context: MetricContext) -> FeatureMetric:
        metric = data_lib.feature_metric(context.data, context.cache_dir)
        if metric is None:
            raise MetricUnavailable("needs a data set that declares a feature metric")
        return cls(metric=metric)

    def score(self, samples, reference, **kw) -> dict:
        return {self.metric.name: float(self.metric(samples))}


# ---------------------------------------------------------------------------------------------
# Metrics of the flow
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StraightnessMetric(Metric):
    """``straightness``: :func:`flowjax.evaluation.straightness` of the model's Euler
    trajectories from the evaluator's noise (``eval.straightness_steps`` uniform steps; 0 for
    straight, constant-speed paths). Opt-in: it costs that many extra network evaluations."""

    needs_reference = False
    needs_velocity = True
    default = False

    run: Callable = None
    grid: np.ndarray = None
    noise: jax.Array = None
    labels: jax.Array | None = None

    @classmethod
    def build(cls, context: MetricContext) -> StraightnessMetric:
        grid = grids.uniform_grid(int(context.settings.straightness_steps))
        try:
            run = solvers.make_sampler(
                solvers.Euler(), context.velocity, grid, return_trajectory=True
            )
        except ValueError as err:  # e.g. an average-velocity (flow map) model
            raise MetricUnavailable(f"cannot integrate this model's velocity ({err})") from None
        return cls(run=run, grid=grid, noise=context.noise, labels=context.labels)

    def score(self, samples, reference, *, params=None, **kw) -> dict:
        _, trajectory = self.run(params, self.noise, self.labels)
        return {"straightness": float(straightness(trajectory, self.grid))}


register_metric("sw", SlicedWassersteinMetric)
register_metric("mmd", MMDMetric)
register_metric("energy", EnergyMetric)
register_metric("fid", InceptionMetric)
register_metric("fd", FeatureMetric)
register_metric("straightness", StraightnessMetric)
