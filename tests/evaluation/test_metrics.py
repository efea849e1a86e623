"""The metric registry and the evaluator's side of the Metric contract: which metrics a run
gets by default, what each receives (pixels, labels, held-out data, the velocity), and the
one-line errors for a metric a run cannot score, raised before any work."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from flowjax.evaluation import (
    METRICS,
    EvalSettings,
    Evaluator,
    eval_settings,
    metric_names,
    register_metric,
)
from flowjax.evaluation.fid import quantize_images
from flowjax.evaluation.metrics import select_metrics
from flowjax.evaluation.sample_metrics import energy_distance, mmd, sliced_wasserstein
from flowjax.types import Metric

LABEL = "euler_nfe2"


class _Source:
    """A minimal data source: ``kind`` samples of ``shape``, held-out rows drawn at random."""

    name, num_classes = "fake", None

    def __init__(self, kind, shape, *, has_eval_data=True, work_allowed=True):
        self.kind, self.element_shape = kind, shape
        self.has_eval_data, self.work_allowed = has_eval_data, work_allowed

    def eval_array(self, n):
        assert self.work_allowed, "the evaluator read data before checking its metrics"
        rng = np.random.default_rng(1)
        return rng.uniform(-1, 1, size=(n, *self.element_shape)).astype(np.float32), None


def _config(**eval_):
    section = {"num_samples": 16, "samplers": ("euler:2",)}
    section.update(eval_)
    return ConfigDict({"seed": 0, "eval": section})


def _drift(params, x, t, cond):  # v = 0.3: every path is a straight line
    del params, t, cond
    return x * 0 + 0.3


def _grow(params, x, t, cond):  # v = x: x_t = x_0 e^t, a curved (accelerating) path
    del params, t, cond
    return x


@dataclasses.dataclass(frozen=True)
class _Recorder(Metric):
    """Records what the evaluator passes it."""

    default = False
    seen: list = dataclasses.field(default_factory=list)

    def score(self, samples, reference, **kw):
        self.seen.append((samples, reference, kw))
        return {"recorded": 0.0}


@dataclasses.dataclass(frozen=True)
class _PixelRecorder(_Recorder):
    kinds = ("images",)
    needs_pixels = True
    needs_labels = True


@dataclasses.dataclass(frozen=True)
class _OwnReferenceRecorder(_Recorder):
    needs_reference = False


register_metric("test_pixels", _PixelRecorder)
register_metric("test_own_reference", _OwnReferenceRecorder)


def _built(evaluator, name):
    return dict(evaluator.metrics)[name]


def test_builtin_metrics_are_registered_with_their_needs():
    assert metric_names()[:6] == ["sw", "mmd", "energy", "fid", "fd", "straightness"]
    assert all(issubclass(METRICS[n], Metric) for n in metric_names())
    assert METRICS["mmd"].kinds == METRICS["energy"].kinds == ("points",)
    assert METRICS["fid"].kinds == ("images",) and METRICS["fid"].needs_pixels
    assert not METRICS["sw"].needs_pixels and METRICS["sw"].needs_reference
    assert METRICS["straightness"].needs_velocity and not METRICS["straightness"].default
    # The default lists: today's metric set, test metrics (not default) left out.
    assert select_metrics(None, "points") == ["sw", "mmd", "energy", "fd"]
    assert select_metrics(None, "images") == ["sw", "fid", "fd"]
    with pytest.raises(TypeError, match="Metric subclass"):
        register_metric("not_a_metric", lambda context: None)


def test_eval_settings_state_defaults_once_and_refuse_unknown_keys():
    settings = eval_settings(_config())
    assert settings == EvalSettings(num_samples=16, samplers=("euler:2",))
    assert settings.num_kernel_samples == 5000 and settings.metrics is None
    assert eval_settings(_config(metrics="sw")).metrics == ("sw",)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['bogus'\] in config.eval"):
        eval_settings(_config(bogus=1))
    with pytest.raises(ValueError, match="num_samples is not set"):
        eval_settings(ConfigDict({"eval": {"samplers": ("euler:2",)}}))


def test_default_point_metrics_use_the_first_kernel_samples():
    evaluator = Evaluator(
        _config(num_kernel_samples=8),
        _Source("points", (2,)),
        _drift,
        num_classes=None,
        workdir="W",
    )
    metrics, samples = evaluator(None)
    assert list(metrics) == [f"sw_{LABEL}", f"mmd_{LABEL}", f"energy_{LABEL}"]
    x, y = jnp.asarray(samples[LABEL]), jnp.asarray(evaluator.reference)
    # The same functions on the same arrays: equal numbers (the kernel ones on 8 of 16 rows).
    assert metrics[f"sw_{LABEL}"] == float(sliced_wasserstein(x, y, evaluator._k_metric))
    assert metrics[f"mmd_{LABEL}"] == float(mmd(x[:8], y[:8]))
    assert metrics[f"energy_{LABEL}"] == float(energy_distance(x[:8], y[:8]))
    assert metrics[f"mmd_{LABEL}"] != float(mmd(x, y))


def test_points_metrics_are_skipped_for_images_and_refused_when_named():
    source = _Source("images", (4, 4, 1))
    metrics, _ = Evaluator(_config(), source, _drift, num_classes=None, workdir="W")(None)
    assert list(metrics) == [f"sw_{LABEL}"]  # no mmd / energy; no Inception weights, no fd
    with pytest.raises(ValueError, match="'mmd' scores points, and this run's samples are images"):
        Evaluator(_config(metrics=("sw", "mmd")), source, _drift, num_classes=None, workdir="W")


def test_unknown_or_unconfigured_metric_is_one_line_before_any_work():
    source = _Source("points", (2,), work_allowed=False)
    with pytest.raises(ValueError) as err:
        Evaluator(_config(metrics=("sw", "nope")), source, _drift, num_classes=None, workdir="W")
    message = str(err.value)
    assert message.startswith("unknown metric 'nope'; choose one of [") and "\n" not in message
    assert all(repr(name) in message for name in ["sw", "mmd", "fid", "straightness"])
    images = _Source("images", (4, 4, 1))
    with pytest.raises(ValueError, match=r"names 'fid', which needs eval.inception_weights"):
        Evaluator(_config(metrics=("fid",)), images, _drift, num_classes=None, workdir="W")


def test_pixel_metrics_receive_quantised_decoded_pixels_and_labels(monkeypatch):
    source = _Source("images", (4, 4, 1))
    evaluator = Evaluator(
        _config(metrics=("test_pixels",)), source, _drift, num_classes=3, workdir="W"
    )
    metrics, samples = evaluator(None)
    assert list(metrics) == [f"recorded_{LABEL}"]
    x, reference, kw = _built(evaluator, "test_pixels").seen[-1]
    assert not np.array_equal(samples[LABEL], quantize_images(samples[LABEL]))  # off the levels
    np.testing.assert_array_equal(x, quantize_images(samples[LABEL]))
    np.testing.assert_array_equal(reference, quantize_images(evaluator.reference))
    np.testing.assert_array_equal(kw["labels"], evaluator.labels)

    class Decoder:  # a stand-in VAE: "decodes" by doubling
        def decode(self, z):
            return 2 * np.asarray(z)

    from flowjax.models.vae import AutoencoderKL

    monkeypatch.setattr(AutoencoderKL, "from_file", staticmethod(lambda path: Decoder()))
    latent = Evaluator(
        _config(metrics=("test_pixels",), vae_weights="vae.npz"),
        source,
        _drift,
        num_classes=3,
        workdir="W",
    )
    _, latent_samples = latent(None)
    x, reference, _ = _built(latent, "test_pixels").seen[-1]
    np.testing.assert_array_equal(x, quantize_images(2 * latent_samples[LABEL]))
    np.testing.assert_array_equal(reference, quantize_images(2 * latent.reference))


def test_metrics_needing_held_out_data_are_skipped_without_it():
    source = _Source("points", (2,), has_eval_data=False)
    names = ("sw", "test_own_reference")
    evaluator = Evaluator(_config(metrics=names), source, _drift, num_classes=None, workdir="W")
    metrics, samples = evaluator(None)
    assert list(metrics) == [f"recorded_{LABEL}"]
    x, reference, _ = _built(evaluator, "test_own_reference").seen[-1]
    assert reference is None
    np.testing.assert_array_equal(x, samples[LABEL])  # points: the samples as they are


def _euler_straightness(x0, steps):
    """Closed form for v = x on a uniform Euler grid: Z_k = (1 + h)^k Z_0, so the step
    velocities are (1 + h)^k Z_0 and the chord velocity ((1 + h)^N - 1) Z_0."""
    growth = (1 + 1 / steps) ** np.arange(steps)
    chord = (1 + 1 / steps) ** steps - 1
    return float(np.mean((growth - chord) ** 2) * np.mean(np.asarray(x0, np.float64) ** 2))


def test_straightness_scores_the_flow_once_from_the_velocity_and_noise():
    source = _Source("points", (2,))
    cfg = _config(metrics=("sw", "straightness"), straightness_steps=16)
    curved = Evaluator(cfg, source, _grow, num_classes=None, workdir="W")
    metrics, _ = curved(None)
    assert set(metrics) == {f"sw_{LABEL}", "straightness"}  # once, not per sampler setting
    expected = _euler_straightness(curved.x0, 16)
    assert expected > 0.1 and metrics["straightness"] == pytest.approx(expected, rel=1e-4)
    straight, _ = Evaluator(cfg, source, _drift, num_classes=None, workdir="W")(None)
    assert abs(straight["straightness"]) < 1e-9
    assert (
        "straightness"
        not in Evaluator(_config(), source, _grow, num_classes=None, workdir="W")(None)[0]
    )
