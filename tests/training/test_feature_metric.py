"""The evaluator reaches a data set's feature metric through the DataSource contract only: a
source that declares one is scored with it (and so is a source wrapping it, through ``base``);
the bundled digits declare theirs by registration; other sources get none."""

import numpy as np
import pytest
from ml_collections import ConfigDict

from flowjax import data as data_lib
from flowjax.data import ArrayFileSource, ArraySource, RecordedShapeSource, TfdsImageSource
from flowjax.data.feature_metrics import feature_metric_for
from flowjax.evaluation import digits_features
from flowjax.evaluation.evaluator import Evaluator


class _MeanNorm:
    """A feature metric: the norm of the samples' mean (zero for centred data)."""

    name = "meannorm"

    def __init__(self, cache_dir):
        self.cache_dir = cache_dir

    def __call__(self, samples):
        return float(np.linalg.norm(np.asarray(samples).reshape(len(samples), -1).mean(0)))


class _Points:
    """A minimal source of 2-D points that declares a feature metric."""

    kind, name, element_shape, num_classes = "points", "my_points", (2,), None

    def __init__(self):
        self.asked = []

    def eval_array(self, n):
        return np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32), None

    def feature_metric(self, cache_dir):
        self.asked.append(cache_dir)
        return _MeanNorm(cache_dir)


def _config():
    return ConfigDict(
        {"seed": 0, "eval": {"num_samples": 64, "samplers": ("euler:2",), "cfg_scale": 1.0}}
    )


def _shift(params, x, t, cond):  # v = (1, 0): euler moves every point by (1, 0) over [0, 1]
    del params, t, cond
    return x * 0 + np.array([1.0, 0.0], np.float32)


@pytest.fixture(scope="module")
def scored():
    source = _Points()
    evaluator = Evaluator(_config(), source, _shift, num_classes=None, workdir="W")
    metrics, samples = evaluator(None)
    return source, evaluator, metrics, samples


def test_evaluator_scores_with_the_metric_the_source_declares(scored):
    source, evaluator, metrics, samples = scored
    assert source.asked == ["W/eval_cache"]  # asked once, with the workdir's cache
    expected = _MeanNorm(None)(samples["euler_nfe2"])
    assert metrics["meannorm_euler_nfe2"] == pytest.approx(expected)
    assert expected == pytest.approx(
        np.linalg.norm(np.asarray(evaluator.x0).mean(0) + [1.0, 0.0]), rel=1e-5
    )
    assert "fd_euler_nfe2" not in metrics


def test_wrapping_sources_report_their_base_metric_and_stand_ins_none(tmp_path):
    base = _Points()
    wrapped = ArraySource({"x1": np.zeros((4, 2))}, base=base, batch_size=2, seed=0)
    assert isinstance(data_lib.feature_metric(wrapped, "C"), _MeanNorm)
    record = {"kind": "points", "name": "my_points", "element_shape": [2], "num_classes": None}
    stand_in = RecordedShapeSource(record, reason="its file was deleted")
    assert data_lib.feature_metric(stand_in, "C") is None
    assert data_lib.unavailable_reason(stand_in) == "its file was deleted"
    assert data_lib.unavailable_reason(base) is None
    np.savez(tmp_path / "imgs.npz", x=np.zeros((20, 8, 8, 1), np.float32))
    images = ArrayFileSource(str(tmp_path / "imgs.npz"), batch_size=4, seed=0)
    assert images.kind == "images" and data_lib.feature_metric(images, "C") is None


def test_digits_declare_their_metric_by_registration_other_tfds_sets_none(tmp_path, monkeypatch):
    built = []

    def fake_load_or_train(cache_dir=None):  # no classifier training in this test
        built.append(cache_dir)
        return _FakeExtractor()

    monkeypatch.setattr(
        digits_features.DigitsFeatureExtractor, "load_or_train", staticmethod(fake_load_or_train)
    )
    digits_dir = data_lib.prepare_digits(str(tmp_path / "tfds"))
    source = TfdsImageSource("sklearn_digits", data_dir=digits_dir, batch_size=4, seed=0)
    metric = data_lib.feature_metric(source, str(tmp_path / "cache"))
    assert isinstance(metric, digits_features.DigitsFrechetMetric) and metric.name == "fd"
    assert built == [str(tmp_path / "cache")]
    assert metric(np.ones((3, 8, 8, 1))) == 3.0
    assert feature_metric_for("sklearn_digits:1.0.0", "C") is not None
    assert feature_metric_for("mnist", "C") is None
    assert feature_metric_for("cifar10", "C") is None


class _FakeExtractor:
    def reference_statistics(self, split):
        assert split == "test"
        return ("mu", "sigma")

    def frechet_to_stats(self, samples, stats):
        assert stats == ("mu", "sigma")
        return float(len(samples))


def test_evaluation_bar_counts_the_settings_and_keeps_the_numbers(scored, capsys):
    _, evaluator, metrics, samples = scored
    again, again_samples = evaluator(None, progress=True, desc="final eval (EMA)")
    bar = capsys.readouterr().err
    assert "final eval (EMA)" in bar and "1/1" in bar
    assert again == metrics
    np.testing.assert_array_equal(again_samples["euler_nfe2"], samples["euler_nfe2"])
