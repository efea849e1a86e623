"""The 2-D toy samplers: support, mode frequencies, determinism, and the error for bad names."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from flowjax.data import TOY_DISTRIBUTIONS, eight_gaussians_centres, sample_toy
from flowjax.data.toy2d import EIGHT_GAUSSIANS_STD

N = 8000


@pytest.mark.parametrize("name", [*TOY_DISTRIBUTIONS, "spirals"])
def test_shape_dtype_determinism_and_scale(name):
    x = sample_toy(name, jax.random.key(0), N)
    assert x.shape == (N, 2) and x.dtype == np.float32
    np.testing.assert_array_equal(x, sample_toy(name, jax.random.key(0), N))
    assert not np.array_equal(x, sample_toy(name, jax.random.key(1), N))
    assert np.all(np.isfinite(x))
    std = np.asarray(x).std(0)
    assert np.all((std > 0.8) & (std < 2.0)), std


def test_checkerboard_lies_on_the_black_squares():
    x = np.asarray(sample_toy("checkerboard", jax.random.key(1), N))
    assert np.all((x >= -2) & (x < 2))
    cells = np.floor(x).astype(int)
    assert np.all((cells.sum(1) % 2) == 0)
    # All 8 black cells are used, about equally.
    _, counts = np.unique(cells, axis=0, return_counts=True)
    assert len(counts) == 8
    np.testing.assert_allclose(counts / N, 1 / 8, atol=0.02)


def test_eight_gaussians_modes():
    x = np.asarray(sample_toy("8gaussians", jax.random.key(2), N))
    centres = np.asarray(eight_gaussians_centres())
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 2.0, rtol=1e-6)
    dist = np.linalg.norm(x[:, None, :] - centres[None], axis=-1)  # [N, 8]
    nearest = dist.argmin(1)
    assert np.all(dist.min(1) < 6 * EIGHT_GAUSSIANS_STD)
    freq = np.bincount(nearest, minlength=8) / N
    np.testing.assert_allclose(freq, 1 / 8, atol=0.02)
    # Within a mode the spread matches the documented std.
    offsets = x - centres[nearest]
    np.testing.assert_allclose(offsets.std(0), EIGHT_GAUSSIANS_STD, rtol=0.1)


def test_jit_with_static_n():
    sample = jax.jit(sample_toy, static_argnums=(0, 2))
    np.testing.assert_allclose(
        sample("rings", jax.random.key(3), 64),
        sample_toy("rings", jax.random.key(3), 64),
        rtol=1e-6,
        atol=1e-6,
    )


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="checkerboard") as info:
        sample_toy("swirl", jax.random.key(0), 4)
    assert "8gaussians" in str(info.value)
    with pytest.raises(ValueError, match="non-negative"):
        sample_toy("moons", jax.random.key(0), -1)
