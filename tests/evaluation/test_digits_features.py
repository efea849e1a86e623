"""Digits classifier FD: accuracy, the parameter cache, and that the FD separates real images
from corrupted ones. The classifier is trained once per session (see conftest.py)."""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np
import pytest
import scipy.ndimage

from flowjax.data.digits_arrays import load_digits_numpy
from flowjax.evaluation import DigitsFeatureExtractor
from flowjax.models import digits_classifier as dc
from tests.tolerance import assert_equal_up_to_rounding


def _copy_cache(src_dir: str, dst_dir) -> str:
    src = DigitsFeatureExtractor.cache_path(src_dir)
    dst = DigitsFeatureExtractor.cache_path(dst_dir)
    shutil.copyfile(src, dst)
    return dst


def _same_params(a, b) -> bool:
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.array_equal(np.asarray(u), np.asarray(v))
        for u, v in zip(leaves_a, leaves_b, strict=True)
    )


def test_test_accuracy_at_least_95_percent(digits_extractor):
    extractor, _ = digits_extractor
    images, labels = load_digits_numpy("test")
    accuracy = extractor.accuracy(images, labels)
    assert accuracy >= 0.95
    assert accuracy == pytest.approx(extractor.test_accuracy)


def test_cache_round_trip_does_not_retrain(digits_extractor, tmp_path, monkeypatch):
    extractor, cache_dir = digits_extractor
    path = _copy_cache(cache_dir, tmp_path)
    mtime = os.stat(path).st_mtime_ns

    def must_not_train(*args, **kwargs):
        raise AssertionError("a valid cache file must not trigger training")

    monkeypatch.setattr(dc, "_train_params", must_not_train)
    loaded = DigitsFeatureExtractor.load_or_train(tmp_path)
    assert loaded.from_cache
    assert os.stat(path).st_mtime_ns == mtime
    assert _same_params(loaded.params, extractor.params)
    assert loaded.test_accuracy == pytest.approx(extractor.test_accuracy)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_key"])
def test_unusable_cache_retrains_with_warning(digits_extractor, tmp_path, monkeypatch, damage):
    extractor, cache_dir = digits_extractor
    path = _copy_cache(cache_dir, tmp_path)
    if damage == "wrong_key":  # valid msgpack, but saved under other settings
        with monkeypatch.context() as m:
            m.setattr(dc, "cache_key", lambda: "an-older-version")
            dc.save_weights(path, extractor.params, 0.9)
    else:
        data = open(path, "rb").read()
        data = data[:1000] if damage == "truncated" else b"\x00not msgpack\xff" * 10
        with open(path, "wb") as f:
            f.write(data)

    calls = []

    def fake_train(*args, **kwargs):
        calls.append(1)
        return extractor.params, 0.5

    monkeypatch.setattr(dc, "_train_params", fake_train)
    with pytest.warns(UserWarning, match="unusable"):
        retrained = DigitsFeatureExtractor.load_or_train(tmp_path)
    assert not retrained.from_cache and calls == [1]
    # The rewritten file is valid: the next load reads it without training again.
    again = DigitsFeatureExtractor.load_or_train(tmp_path)
    assert again.from_cache and calls == [1] and again.test_accuracy == 0.5
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_cache_key_follows_the_settings(monkeypatch, tmp_path):
    before = DigitsFeatureExtractor.cache_path(tmp_path)
    monkeypatch.setitem(dc.TRAIN_SETTINGS, "epochs", dc.TRAIN_SETTINGS["epochs"] + 1)
    assert DigitsFeatureExtractor.cache_path(tmp_path) != before
    monkeypatch.undo()
    monkeypatch.setenv("FLOWJAX_CACHE", str(tmp_path / "elsewhere"))
    assert dc.default_cache_dir() == str(tmp_path / "elsewhere")
    assert DigitsFeatureExtractor.cache_path().startswith(str(tmp_path / "elsewhere"))


def test_fd_separates_real_images_from_noise_blur_and_shuffles(digits_extractor):
    extractor, _ = digits_extractor
    train, _ = load_digits_numpy("train")
    test, _ = load_digits_numpy("test")
    n = len(test)  # compare everything at the test split's size (FD has an O(1/N) bias)
    rng = np.random.default_rng(0)
    real = test.astype(np.float32) / 127.5 - 1.0
    noise = np.clip(rng.normal(size=real.shape), -1.0, 1.0).astype(np.float32)
    blurred = scipy.ndimage.gaussian_filter(real, sigma=(0, 1, 1, 0), mode="constant", cval=-1.0)
    shuffled = real.reshape(n, -1)[:, rng.permutation(64)].reshape(real.shape)

    fd_real = extractor.frechet(train[:n], "test")
    fd_noise = extractor.frechet(noise, "test")
    fd_blur = extractor.frechet(blurred, "test")
    fd_shuffled = extractor.frechet(shuffled, "test")
    assert extractor.frechet(test, "test") < 1e-6
    assert fd_real < 0.2 * fd_noise
    assert fd_real < 0.2 * fd_blur
    assert fd_real < 0.2 * fd_shuffled
    # Reference given as images or as statistics gives the same number.
    stats = extractor.reference_statistics("test")
    assert extractor.frechet(noise, test) == pytest.approx(fd_noise, rel=1e-6)
    assert extractor.frechet_to_stats(noise, stats) == pytest.approx(fd_noise, rel=1e-6)


def test_features_do_not_depend_on_batching_or_input_encoding(digits_extractor):
    extractor, _ = digits_extractor
    images, _ = load_digits_numpy("test")
    feats = extractor.features(images)  # uint8, scaled internally
    assert feats.shape == (len(images), extractor.feature_dim)
    assert_equal_up_to_rounding(extractor.features(images[:7]), feats[:7])  # another batch
    scaled = images.astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(extractor.features(scaled.reshape(-1, 64)), feats, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[N, 8, 8, 1\]"):
        extractor.features(np.zeros((3, 7, 7, 1), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        extractor.features(np.full((2, 8, 8, 1), np.nan, np.float32))
    with pytest.raises(ValueError, match="labels"):
        extractor.accuracy(images, np.zeros(3))
