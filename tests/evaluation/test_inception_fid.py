"""FID InceptionV3: agreement with an independent torch reference (tests/fixtures/
inception_torch.npz, made by tests/fixtures/make_inception_torch.py at 1/16 width), the
converter and its errors; FID / IS: identities, order invariance, the Gaussian closed form,
reference statistics from .npz and from a tfds split."""

from __future__ import annotations

import os
import types

import numpy as np
import pytest
import scipy.special
import tensorflow_datasets as tfds

from flowjax import weight_files
from flowjax.evaluation import fid as F
from flowjax.evaluation.evaluator import to_pixels
from flowjax.models import inception as I
from flowjax.workflows.convert import convert_inception
from tests.tolerance import assert_equal_up_to_rounding

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "inception_torch.npz")


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def state_dict(reference):
    return {k[6:]: v for k, v in reference.items() if k.startswith("state/")}


@pytest.fixture(scope="module")
def weights(state_dict):
    return I.convert_torch_state_dict(state_dict)


@pytest.fixture(scope="module")
def small_net(weights):
    return I.InceptionV3.from_weights(weights, resize_to=None)


def test_pool3_and_logits_match_torch(reference, weights, small_net):
    net = I.InceptionV3.from_weights(weights)
    assert (net.width_div, net.num_classes, net.feature_dim) == (16, 63, 128)
    pool3, logits = net(reference["x"])  # resized to 299x299 first
    for got, want in ((pool3, reference["pool3"]), (logits, reference["logits"])):
        got, want = np.asarray(got, np.float64), want
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
    grey, _ = small_net(reference["x_grey"])  # no resize; grey repeated to RGB
    want = reference["pool3_grey"]
    assert np.max(np.abs(np.asarray(grey, np.float64) - want)) <= 1e-5 * np.max(np.abs(want))


def test_converter_layout_and_wrong_network(state_dict, weights, tmp_path):
    assert not any("num_batches_tracked" in k for k in weights)
    w = state_dict["Mixed_6b.branch7x7_2.conv.weight"]  # a (1, 7) conv
    assert weights["Mixed_6b_branch7x7_2/conv/kernel"].shape == (1, 7, *w.shape[1::-1])
    assert weights["Mixed_6b_branch7x7_2/conv/kernel"][0, 5, 2, 1] == w[1, 2, 0, 5]
    np.testing.assert_array_equal(weights["fc/kernel"], state_dict["fc.weight"].T)
    np.testing.assert_array_equal(
        weights["Mixed_7c_branch_pool/var"], state_dict["Mixed_7c.branch_pool.bn.running_var"]
    )
    vae_sd = weight_files.read_safetensors(
        os.path.join(os.path.dirname(FIXTURE), "vae_diffusers.safetensors")
    )
    with pytest.raises(ValueError, match=r"not FID InceptionV3.*Conv2d_1a_3x3/conv/kernel"):
        I.convert_torch_state_dict(vae_sd)
    path = tmp_path / "vae.npz"
    np.savez(path, **{k.replace(".", "/"): v for k, v in vae_sd.items()})
    with pytest.raises(ValueError, match="flowjax convert-inception --weights"):
        I.InceptionV3.from_file(path)
    with pytest.raises(ValueError, match="not FID InceptionV3"):
        convert_inception(str(path), str(tmp_path / "x.npz"))
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(ValueError, match="NHWC"):
        I.InceptionV3.from_weights(weights)(np.zeros((2, 32, 32, 4), np.float32))


def test_fid_identity_order_and_batching(small_net):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (24, 80, 80, 3)).astype(np.float32)
    y = np.clip(x[::-1] + 0.3 * rng.standard_normal(x.shape), -1, 1).astype(np.float32)
    pool3, logits = F.inception_features(small_net, x, batch_size=10)  # 10 + 10 + 4 (padded)
    whole, _ = F.inception_features(small_net, x, batch_size=24)
    assert_equal_up_to_rounding(pool3, whole)  # batches of 10 vs 24: other float32 programs
    mu, sigma = F.feature_statistics(pool3)
    assert F.fid_to_stats(small_net, x, mu, sigma, batch_size=10) < 1e-6 * np.trace(sigma)
    perm = rng.permutation(24)
    mu_y, sigma_y = F.feature_statistics(F.inception_features(small_net, y, batch_size=24)[0])
    d = F.fid_to_stats(small_net, x, mu_y, sigma_y, batch_size=24)
    assert d > 1e-3 * np.trace(sigma)
    assert F.fid_to_stats(small_net, x[perm], mu_y, sigma_y, batch_size=24) == pytest.approx(
        d, rel=1e-6
    )
    with pytest.raises(ValueError, match="decode latents"):
        F.fid_to_stats(small_net, x[:, :, :, :2], mu, sigma)


def test_images_are_clipped_and_quantised_to_uint8_before_inception(small_net):
    # As pytorch-fid and ADM score image files: a float sample is clipped to [-1, 1] and rounded
    # to the nearest of 256 levels, u = clip(floor((x + 1) 127.5 + 1/2), 0, 255), and the
    # network sees u / 127.5 - 1.
    rng = np.random.default_rng(3)
    u = rng.integers(0, 256, (4, 80, 80, 3)).astype(np.uint8)
    u[0, :20], u[1, :20] = 255, 0
    levels = u.astype(np.float32) / np.float32(127.5) - 1
    x = levels.copy()
    x[0, :20] = rng.uniform(1.0, 1.08, x[0, :20].shape)  # above the range
    x[1, :20] = rng.uniform(-1.3, -1.0, x[1, :20].shape)  # below it
    x[2:] += rng.choice([-0.45, 0.45], x[2:].shape) / 127.5  # between two levels
    np.testing.assert_array_equal(F.to_uint8(x), u)
    np.testing.assert_array_equal(F.quantize_images(x), levels)
    got = F.inception_features(small_net, x, batch_size=4)
    for same in (levels, u):  # the same compiled program on the same input: bit for bit
        want = F.inception_features(small_net, same, batch_size=4)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    raw = np.asarray(small_net(x)[0], np.float64)  # the data do exercise the rounding
    assert np.max(np.abs(raw - got[0])) > 1e-3 * np.max(np.abs(got[0]))
    # The evaluator's pixels (pixel-space and decoded samples) go through the same function.
    np.testing.assert_array_equal(to_pixels(x), levels)
    halve = types.SimpleNamespace(decode=lambda z: 2.0 * np.asarray(z))
    np.testing.assert_array_equal(to_pixels(x / 2, halve, batch_size=3), levels)
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    assert np.isnan(F.quantize_images(nan)[0, 0, 0, 0])  # a NaN sample scores NaN, not grey
    with pytest.raises(ValueError, match="NaN"):
        F.to_uint8(nan)


def test_fid_equals_the_gaussian_closed_form():
    # Features with sample mean m1 and sample covariance A A^T exactly; against N(m2, s^2 I):
    # FID = |m1 - m2|^2 + tr(A A^T) + F s^2 - 2 s tr((A A^T)^{1/2}).
    rng = np.random.default_rng(1)
    n, f = 400, 6
    z = rng.standard_normal((n, f))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / (n - 1))).T  # sample cov exactly I
    q, _ = np.linalg.qr(rng.standard_normal((f, f)))
    lam = rng.uniform(0.5, 3.0, f)
    a = q * np.sqrt(lam)  # A A^T = Q diag(lam) Q^T
    m1, m2, s = rng.standard_normal(f), rng.standard_normal(f), 1.7
    features = m1 + z @ a.T
    want = np.sum((m1 - m2) ** 2) + lam.sum() + f * s**2 - 2 * s * np.sqrt(lam).sum()
    got = F.fid_from_features(features, m2, s**2 * np.eye(f))
    assert got == pytest.approx(want, rel=1e-9)
    assert F.fid_from_features(features[::-1], m2, s**2 * np.eye(f)) == pytest.approx(want, 1e-9)


def _published_is(logits, splits):
    """The original IS code's protocol, written out independently: softmax, then for chunk k of
    rows [k N // splits, (k + 1) N // splits) the chunk's own marginal and exp(mean KL)."""
    p = scipy.special.softmax(np.asarray(logits, np.float64), axis=1)
    n, scores = len(p), []
    for k in range(splits):
        part = p[k * n // splits : (k + 1) * n // splits]
        kl = np.sum(part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True))), axis=1)
        scores.append(np.exp(kl.mean()))
    return np.mean(scores), np.std(scores)


def _drifting_logits(n, k=40, seed=0):
    """Confident rows whose class drifts with the row index (so the splits differ), noise on
    top (so each row, and the place of each split boundary, counts)."""
    rng = np.random.default_rng(seed)
    centre = (np.arange(n) * k) // n + rng.integers(-2, 3, n)
    return 6.0 * np.eye(k)[np.clip(centre, 0, k - 1)] + rng.standard_normal((n, k))


def test_inception_score_marginal_is_per_split():
    # Split j of 3 is confident on its own 4 classes, 5 rows each: p(y) of the split is uniform
    # on 4 classes and IS = 4 in every split (a marginal over all samples would give 12).
    k, splits = 12, 3
    rows = np.repeat(np.arange(k), 5)  # 0,0,0,0,0,1,... : split j holds classes 4j..4j+3
    mean, std = F.inception_score(60.0 * np.eye(k)[rows], splits=splits)
    assert mean == pytest.approx(4.0, rel=1e-9) and std < 1e-9
    assert F.inception_score(60.0 * np.eye(k)[rows], splits=1)[0] == pytest.approx(12, 1e-9)


def test_inception_score_matches_the_published_split_protocol():
    # N = 1005 is not a multiple of 10: the chunks are 100 or 101 rows at k N // 10.
    logits = _drifting_logits(1005)
    mean, std = F.inception_score(logits, splits=10)
    want_mean, want_std = _published_is(logits, 10)
    assert mean == pytest.approx(want_mean, rel=1e-10)
    assert std == pytest.approx(want_std, rel=1e-8)
    # The data tell the protocols apart: np.array_split's chunks (101 x 5 then 100 x 5) and a
    # marginal over all samples give other values.
    p = scipy.special.softmax(logits, axis=1)
    marg = p.mean(axis=0)
    pooled = np.mean(
        [np.exp(np.mean(np.sum(c * np.log(c / marg), 1))) for c in np.array_split(p, 10)]
    )
    assert abs(pooled - want_mean) > 0.5 * want_mean
    sizes = [len(c) for c in np.array_split(logits, 10)]
    shifted = np.mean(
        [
            _published_is(c, 1)[0]
            for c in np.split(logits, np.cumsum(sizes)[:-1])  # array_split's boundaries
        ]
    )
    assert abs(shifted - want_mean) > 1e-4 * want_mean


def test_inception_score_bounds():
    k = 7
    assert F.inception_score(np.zeros((20, k)), splits=2) == pytest.approx((1.0, 0.0))
    sharp = 50.0 * np.eye(k)[np.arange(70) % k]  # confident and evenly spread: IS = K
    mean, std = F.inception_score(sharp, splits=10)
    assert mean == pytest.approx(k, rel=1e-6) and std < 1e-6
    with pytest.raises(ValueError, match="splits"):
        F.inception_score(np.zeros((5, k)), splits=10)


def test_stats_files_and_tfds_reference(small_net, tmp_path):
    path = F.save_stats(tmp_path / "ref", np.zeros(3), np.eye(3))
    mu, sigma = F.load_stats(path, feature_dim=3)
    assert mu.shape == (3,) and sigma.shape == (3, 3)
    with pytest.raises(ValueError, match="128-d features"):
        F.load_stats(path, feature_dim=128)
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3))
    with pytest.raises(ValueError, match="'mu'"):
        F.load_stats(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="flowjax fid-stats"):
        F.load_stats(tmp_path / "missing.npz")
    net = I.InceptionV3.from_weights(I.random_weights(0, 16, 63))  # resizes 32 -> 299
    with tfds.testing.mock_data(num_examples=12):
        mu, sigma = F.reference_stats_from_tfds(
            net, "cifar10", split="test", data_dir=str(tmp_path), batch_size=6
        )
        src = tfds.data_source("cifar10", split="test", data_dir=str(tmp_path))
        x = np.stack([src[i]["image"] for i in range(12)]).astype(np.float32) / 127.5 - 1
    want = F.feature_statistics(F.inception_features(net, x, batch_size=6)[0])
    np.testing.assert_allclose(mu, want[0], rtol=1e-6)
    np.testing.assert_allclose(sigma, want[1], rtol=1e-5, atol=1e-9)
