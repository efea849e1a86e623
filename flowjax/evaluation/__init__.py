"""Evaluation: the evaluator, the metric registry, and the distances it is made of.

- :class:`Evaluator`: samples a run under several sampler settings and scores the samples with
  the metrics of ``config.eval.metrics`` (:class:`EvalSettings`, the ``eval`` section).
- :data:`METRICS`, :func:`register_metric`: the registered :class:`flowjax.types.Metric`
  classes by name (``sw``, ``mmd``, ``energy``, ``fid``, ``fd``, ``straightness``; see
  :mod:`flowjax.evaluation.metrics`); a new metric is one subclass and one registration.
- :func:`sliced_wasserstein`, :func:`mmd`, :func:`energy_distance`: two-sample distances for
  low-dimensional data (jax.numpy, jit-friendly, blocked pairwise sums).
- :func:`feature_statistics`, :func:`frechet_distance`: the FID formula on any features.
- :class:`DigitsFeatureExtractor`: a classifier-feature FID for the 8x8 digits data set (the
  classifier is :mod:`flowjax.models.digits_classifier`);
  :class:`DigitsFrechetMetric`, its score, is the feature metric registered for
  ``sklearn_digits`` (importing this package registers it).
- :func:`straightness`: the rectified-flow straightness of sampled trajectories.
- :class:`LPIPS`: the VGG16 LPIPS perceptual distance, with weights read from a file
  (:func:`convert_torch_weights` and :mod:`flowjax.evaluation.lpips` make the file).
"""

from flowjax.evaluation.digits_features import DigitsFeatureExtractor, DigitsFrechetMetric
from flowjax.evaluation.evaluator import Evaluator
from flowjax.evaluation.frechet import feature_statistics, frechet_distance, trace_sqrt_product
from flowjax.evaluation.metrics import (
    METRICS,
    MetricContext,
    MetricUnavailable,
    metric_names,
    register_metric,
)
from flowjax.evaluation.sample_metrics import energy_distance, mmd, sliced_wasserstein
from flowjax.evaluation.settings import EvalSettings, eval_settings
from flowjax.evaluation.straightness import straightness

_LAZY = {"LPIPS", "convert_torch_weights"}  # imported on first use: keeps
# `python -m flowjax.evaluation.lpips` (the weight converter) free of a double import


def __getattr__(name):
    if name in _LAZY:
        from flowjax.evaluation import lpips

        return getattr(lpips, name)
    raise AttributeError(f"module 'flowjax.evaluation' has no attribute {name!r}")


__all__ = [
    "METRICS",
    "EvalSettings",
    "Evaluator",
    "MetricContext",
    "MetricUnavailable",
    "eval_settings",
    "metric_names",
    "register_metric",
    "DigitsFeatureExtractor",
    "DigitsFrechetMetric",
    "LPIPS",
    "convert_torch_weights",
    "energy_distance",
    "feature_statistics",
    "frechet_distance",
    "mmd",
    "sliced_wasserstein",
    "straightness",
    "trace_sqrt_product",
]
