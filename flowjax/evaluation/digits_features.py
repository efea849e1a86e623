"""A Fréchet distance on features of a small classifier of the 8x8 digits (a "digits FID").

Inception features mean nothing on 8x8 grey digits, so sample quality of models trained on
:mod:`flowjax.data.digits_arrays` is measured on the penultimate features of the classifier
of :mod:`flowjax.models.digits_classifier`: :class:`DigitsFeatureExtractor` embeds images and
:func:`~flowjax.evaluation.frechet.frechet_distance` compares the Gaussian fits of the two
embedded sets,

    FD(samples, reference) = ||mu_s - mu_r||^2 + tr(S_s + S_r - 2 (S_s S_r)^{1/2}).

What makes the number meaningful:

- The features separate the ten classes, so their distribution collapses if samples lose
  class structure, mix classes or lose diversity (mode dropping shrinks ``S_s``).
- The default reference is the ``test`` split, which the classifier never trained on; features
  of the ``train`` split are slightly over-confident. Compare a model trained on ``train``
  with the ``test`` statistics.
- FD has a positive finite-sample bias of order ``tr(S) F / N``: compare numbers only at the
  same number of samples (e.g. always 360, the size of the test split).
- The classifier is trained deterministically and cached under a hash of its settings
  (:mod:`flowjax.models.digits_classifier`), so numbers are comparable across runs.

The bundled digits data set declares :class:`DigitsFrechetMetric` as its feature metric
(registered below), which the evaluator's ``fd`` metric reports.
"""

from __future__ import annotations

import os

import numpy as np

from flowjax.data import register_feature_metric
from flowjax.data.digits import DIGITS_NAME
from flowjax.data.digits_arrays import load_digits_numpy
from flowjax.evaluation.frechet import feature_statistics, frechet_distance
from flowjax.models.digits_classifier import TrainedDigitsClassifier

__all__ = ["DigitsFeatureExtractor", "DigitsFrechetMetric"]


class DigitsFeatureExtractor(TrainedDigitsClassifier):
    """The trained digits classifier with the feature statistics and Fréchet distances.

    Build it with :meth:`load_or_train` (see
    :class:`~flowjax.models.digits_classifier.TrainedDigitsClassifier`).

    Example::

        extractor = DigitsFeatureExtractor.load_or_train()
        fd = extractor.frechet(samples_bhwc)   # samples in [-1, 1], vs. the test split
    """

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self._reference: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def statistics(self, x) -> tuple[np.ndarray, np.ndarray]:
        """``(mu [64], sigma [64, 64])`` float64 of the features of ``x`` (``N >= 2``)."""
        return feature_statistics(self.features(x))

    def reference_statistics(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """Feature statistics of a real split (``"test"``: 360 images; ``"train"``: 1437)."""
        if split not in self._reference:
            images, _ = load_digits_numpy(split)
            self._reference[split] = self.statistics(images)
        return self._reference[split]

    def frechet(self, samples, reference="test") -> float:
        """Classifier-feature Fréchet distance between ``samples`` and a reference.

        Args:
          samples: images ``[N, 8, 8, 1]``, ``N >= 2`` (floats in ``[-1, 1]`` or uint8).
          reference: a split name (``"test"``, ``"train"``), an image array, or a
            ``(mu, sigma)`` pair from :meth:`statistics` / :meth:`reference_statistics`.

        Returns:
          The FD as a float; compare values at equal ``N`` (see the module docstring).
        """
        mu_s, sigma_s = self.statistics(samples)
        if isinstance(reference, str):
            mu_r, sigma_r = self.reference_statistics(reference)
        elif isinstance(reference, tuple) and len(reference) == 2:
            mu_r, sigma_r = reference
        else:
            mu_r, sigma_r = self.statistics(reference)
        return frechet_distance(mu_s, sigma_s, mu_r, sigma_r)

    def frechet_to_stats(self, samples, stats: tuple[np.ndarray, np.ndarray]) -> float:
        """:meth:`frechet` against precomputed ``(mu, sigma)`` reference statistics."""
        if not (isinstance(stats, (tuple, list)) and len(stats) == 2):
            raise ValueError("stats must be a (mu, sigma) pair, e.g. from reference_statistics().")
        return self.frechet(samples, tuple(stats))


class DigitsFrechetMetric:
    """The digits data set's :class:`~flowjax.data.FeatureMetric`: ``fd``, the classifier-feature
    Fréchet distance of samples ``[n, 8, 8, 1]`` in ``[-1, 1]`` to the ``test`` split.

    Registered for the tfds data set ``sklearn_digits`` (below), so the evaluator's ``fd``
    metric scores any run on it, through the data source, with no knowledge of the data set.
    """

    name = "fd"

    def __init__(self, extractor: DigitsFeatureExtractor):
        self.extractor = extractor
        self.reference = extractor.reference_statistics("test")

    @classmethod
    def load(cls, cache_dir: str | os.PathLike | None = None) -> DigitsFrechetMetric:
        """The metric with the cached (or freshly trained) classifier under ``cache_dir``."""
        return cls(DigitsFeatureExtractor.load_or_train(cache_dir=cache_dir))

    def __call__(self, samples) -> float:
        return float(self.extractor.frechet_to_stats(samples, self.reference))


register_feature_metric(DIGITS_NAME, DigitsFrechetMetric.load)
