"""FID InceptionV3: agreement with an independent torch reference (tests/fixtures/
inception_torch.npz, made by tests/fixtures/make_inception_torch.py at 1/16 width), the
converter and its errors; FID / IS: identities, order invariance, the Gaussian closed form,
reference statistics from .npz and from a tfds split."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from flowjax.evaluation import fid as F
from flowjax.models import inception as I
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
    from flowjax.models import vae

    vae_sd = vae.read_safetensors(
        os.path.join(os.path.dirname(FIXTURE), "vae_diffusers.safetensors")
    )
    with pytest.raises(ValueError, match=r"not FID InceptionV3.*Conv2d_1a_3x3/conv/kernel"):
        I.convert_torch_state_dict(vae_sd)
    path = tmp_path / "vae.npz"
    np.savez(path, **{k.replace(".", "/"): v for k, v in vae_sd.items()})
    with pytest.raises(ValueError, match="flowjax.models.inception --weights"):
        I.InceptionV3.from_file(path)
    assert I.main([f"--weights={path}", f"--out={tmp_path / 'x.npz'}"]) == 2
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
    with pytest.raises(FileNotFoundError, match="python -m flowjax.evaluation.fid"):
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
