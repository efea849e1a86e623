"""Metrics on learned features, registered per tfds data set (plugins of the evaluator).

A data set with a metric of its own (a classifier's Fréchet distance on its images, e.g. the
bundled ``sklearn_digits``'s in :mod:`flowjax.evaluation.digits_features`) registers a factory
here; :class:`flowjax.data.TfdsImageSource`'s ``feature_metric`` builds it. The tfds pipeline
and the evaluator name no data set.
"""

from __future__ import annotations

from collections.abc import Callable

from flowjax.data.base import FeatureMetric
from flowjax.data.tfds_pipeline import base_name

__all__ = ["feature_metric_for", "register_feature_metric"]

_FEATURE_METRICS: dict[str, Callable[[str], FeatureMetric]] = {}


def register_feature_metric(name: str, factory: Callable[[str], FeatureMetric]) -> None:
    """Score samples of tfds data set ``name`` with ``factory(cache_dir)`` (a
    :class:`~flowjax.data.base.FeatureMetric`, e.g. a classifier's Fréchet distance) besides
    the pixel metrics; :class:`TfdsImageSource`'s ``feature_metric`` returns it."""
    _FEATURE_METRICS[base_name(name)] = factory


def feature_metric_for(name: str, cache_dir: str) -> FeatureMetric | None:
    """The feature metric registered for tfds data set ``name``, built, or ``None``."""
    factory = _FEATURE_METRICS.get(base_name(name))
    return None if factory is None else factory(cache_dir)
