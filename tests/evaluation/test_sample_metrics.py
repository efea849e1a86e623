"""Sliced Wasserstein, MMD and energy distance: identities, closed forms and exact references."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from flowjax.evaluation import energy_distance, mmd, sliced_wasserstein

KEY = jax.random.key(0)


# ------------------------------------------------------------------ sliced Wasserstein


def test_sw_zero_for_identical_sets_and_permutation_invariant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = rng.normal(size=(150, 3)).astype(np.float32) + 0.3
    assert float(sliced_wasserstein(x, x, KEY)) == 0.0
    base = float(sliced_wasserstein(x, y, KEY))
    permuted = float(sliced_wasserstein(x[rng.permutation(200)], y[rng.permutation(150)], KEY))
    assert permuted == pytest.approx(base, rel=1e-6)
    assert base > 0.1


@pytest.mark.parametrize("m", [2000, 1500])
def test_sw2_of_shifted_gaussians_matches_closed_form(m):
    # For y = x + delta, W_2 of the projections is |<delta, theta>| and
    # SW_2 = sqrt(E <delta, theta>^2) = |delta| / sqrt(d). Finite samples add ~0.2% here, the
    # 1500 directions a Monte-Carlo error of ~0.9% (std) in 2-D.
    d = 2
    rng = np.random.default_rng(1)
    delta = np.array([3.0, 0.0])
    x = rng.normal(size=(2000, d))
    y = rng.normal(size=(m, d)) + delta
    value = float(sliced_wasserstein(x, y, KEY, num_projections=1500))
    assert value == pytest.approx(np.linalg.norm(delta) / math.sqrt(d), rel=0.03)


def test_sw_of_one_dimensional_sets_is_exact_wasserstein_for_unequal_sizes():
    # In 1-D every direction is +-1, so SW_p = W_p between the empirical laws.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(37, 1))
    y = rng.normal(size=(23, 1)) * 2.0 + 0.5
    w1 = float(sliced_wasserstein(x, y, KEY, num_projections=3, p=1))
    assert w1 == pytest.approx(scipy.stats.wasserstein_distance(x[:, 0], y[:, 0]), rel=1e-5)
    # W_2 by replicating both sets to the same size lcm(n, m) (same empirical laws).
    x, y = x[:6], y[:4]
    xs = np.sort(np.repeat(x[:, 0], 2))
    ys = np.sort(np.repeat(y[:, 0], 3))
    w2 = float(sliced_wasserstein(x, y, KEY, num_projections=3, p=2))
    assert w2 == pytest.approx(np.sqrt(np.mean((xs - ys) ** 2)), rel=1e-5)


def test_sw_decreases_as_sets_converge():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 2))
    y0 = rng.normal(size=(300, 2)) * 0.5 + 2.0
    values = [float(sliced_wasserstein(x, (1 - a) * y0 + a * x, KEY)) for a in (0, 0.5, 0.9, 1)]
    assert all(b < a for a, b in zip(values[:-1], values[1:], strict=True))
    assert values[-1] == 0.0


def test_sw_flattens_images_and_jits():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 4, 4, 1)).astype(np.float32)
    y = rng.normal(size=(20, 4, 4, 1)).astype(np.float32)
    flat = float(sliced_wasserstein(x.reshape(20, -1), y.reshape(20, -1), KEY, num_projections=8))
    assert float(sliced_wasserstein(x, y, KEY, num_projections=8)) == pytest.approx(flat)
    jitted = jax.jit(functools.partial(sliced_wasserstein, num_projections=8))
    assert float(jitted(x, y, KEY)) == pytest.approx(flat, rel=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_integer_key_sort_equals_numpy_sort_with_signed_zeros_and_infinities(dtype):
    from flowjax.evaluation.sample_metrics import _sort_columns

    a = np.random.default_rng(3).standard_normal((501, 6)).astype(dtype)
    a[:4, 0] = [-0.0, 0.0, -0.0, 5e-45 if dtype == np.float32 else 5e-324]  # zeros, subnormal
    a[:3, 1] = [np.inf, -np.inf, np.finfo(dtype).max]
    a[:, 2] = -np.abs(a[:, 2])  # all negative
    with jax.enable_x64(dtype == np.float64):
        out = np.asarray(_sort_columns(jnp.asarray(a)))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.sort(a, axis=0))
    # Signed zeros keep their order (-0 before +0), which np.sort leaves unspecified.
    zeros = out[out[:, 0] == 0, 0]
    assert np.signbit(zeros).tolist() == [True, True, False]


def test_sw_validation():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="same per-sample size"):
        sliced_wasserstein(x, np.zeros((5, 3)), KEY)
    with pytest.raises(ValueError, match=r"x\[:, None\]"):
        sliced_wasserstein(np.zeros(5), x, KEY)
    with pytest.raises(ValueError, match="p must be"):
        sliced_wasserstein(x, x, KEY, p=0.5)
    with pytest.raises(ValueError, match="num_projections"):
        sliced_wasserstein(x, x, KEY, num_projections=0)


# ------------------------------------------------------------------ MMD


def _numpy_mmd_unbiased(x, y, sigmas):
    def gram(a, b):
        d2 = np.sum((a[:, None] - b[None]) ** 2, axis=-1)
        return sum(np.exp(-d2 / (2 * s**2)) for s in sigmas)

    n, m = len(x), len(y)
    kxx, kyy = gram(x, x), gram(y, y)
    return (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * gram(x, y).mean()
    )


@pytest.mark.parametrize("dim", [2, 12])  # direct differences, and the matmul expansion
def test_mmd_matches_float64_reference_with_blocking(dim):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(31, dim))
    y = rng.normal(size=(19, dim)) * 1.3
    expected = _numpy_mmd_unbiased(x, y, [1.0, 3.0])
    with jax.enable_x64(True):
        value = mmd(x, y, [1.0, 3.0], block_size=7)  # 31 and 19 rows: padded last blocks
        assert value.dtype == jnp.float64
        assert float(value) == pytest.approx(expected, rel=1e-10)
    assert float(mmd(x.astype(np.float32), y.astype(np.float32), [1.0, 3.0])) == pytest.approx(
        expected, rel=1e-4
    )


def test_mmd_unbiased_near_zero_for_same_law_and_positive_for_different():
    def draws(key, shift):
        kx, ky = jax.random.split(key)
        x = jax.random.normal(kx, (100, 2))
        y = jax.random.normal(ky, (100, 2)) + jnp.array([shift, 0.0])
        return mmd(x, y)

    keys = jax.random.split(jax.random.key(6), 16)
    same = np.asarray(jax.vmap(lambda k: draws(k, 0.0))(keys))
    diff = np.asarray(jax.vmap(lambda k: draws(k, 0.75))(keys))
    stderr = same.std(ddof=1) / np.sqrt(len(same))
    assert abs(same.mean()) < 3 * stderr
    assert np.any(same < 0)  # the unbiased estimator fluctuates around 0
    assert np.all(diff > 0) and diff.mean() > 10 * stderr


def test_mmd_validation():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="at least 2"):
        mmd(np.zeros((1, 2)), x)
    with pytest.raises(ValueError, match="positive"):
        mmd(x, x, [1.0, -1.0])
    with pytest.raises(ValueError, match="block_size"):
        mmd(x, x, block_size=0)


# ------------------------------------------------------------------ energy distance


def test_energy_distance_of_point_masses_is_twice_the_gap():
    a = np.array([1.0, -2.0, 0.5])
    b = np.array([0.0, 2.0, 3.5])
    x = np.tile(a, (5, 1))
    y = np.tile(b, (7, 1))
    assert float(energy_distance(x, y)) == pytest.approx(2 * np.linalg.norm(a - b), rel=1e-6)


@pytest.mark.parametrize("dim", [2, 12])
def test_energy_distance_matches_float64_reference_and_is_nonnegative(dim):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(23, dim))
    y = rng.normal(size=(17, dim)) + 0.2

    def mean_dist(a, b):
        return np.mean(np.sqrt(np.sum((a[:, None] - b[None]) ** 2, axis=-1)))

    expected = 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)
    with jax.enable_x64(True):
        assert float(energy_distance(x, y, block_size=4)) == pytest.approx(expected, rel=1e-10)
    assert float(energy_distance(x, y)) == pytest.approx(expected, rel=1e-4)
    assert abs(float(energy_distance(x, x))) < 1e-6
    for seed in range(3):  # same shapes as above: no new compilation
        x2 = np.random.default_rng(seed).normal(size=(23, dim))
        assert float(energy_distance(x2, x2[:17])) >= 0.0
