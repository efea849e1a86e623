"""The Laplacian pyramid of Decomposable Flow Matching: exact round trip, packing, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import pyramid


@pytest.mark.parametrize(
    "shape,stages",
    [
        ((2, 8, 8, 1), 1),
        ((2, 8, 8, 1), 2),
        ((3, 8, 16, 4), 3),
        ((1, 32, 32, 4), 2),
        ((2, 4, 12, 3), 3),
    ],
)
def test_round_trip_is_exact_and_stage_shapes_halve(shape, stages):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    parts = pyramid.decompose(x, stages)
    b, h, w, c = shape
    assert [p.shape for p in parts] == [
        (b, h >> (stages - s), w >> (stages - s), c) for s in range(1, stages + 1)
    ]
    np.testing.assert_allclose(pyramid.recompose(parts), x, rtol=0, atol=1e-6)
    packed = pyramid.pack(parts)
    assert packed.shape == (b, *pyramid.packed_shape(shape[1:], stages))
    for p, q in zip(parts, pyramid.unpack(packed)):
        np.testing.assert_array_equal(p, q)
    # The padding of each slot is zero, and the slot mask marks exactly the stored values.
    slot_mask = pyramid.stage_mask_packed(packed.shape[1:])
    np.testing.assert_array_equal(packed * (1 - slot_mask), 0.0)
    assert float(slot_mask.sum()) == sum(np.prod(p.shape[1:]) for p in parts)


def test_down2_is_the_2x2_block_mean_and_constants_have_no_detail():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    block_mean = x.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(pyramid.down2(x), block_mean, atol=1e-6)
    const = jnp.full((1, 8, 8, 1), 0.7)
    coarse, detail = pyramid.decompose(const, 2)
    np.testing.assert_allclose(coarse, 0.7, atol=1e-6)
    np.testing.assert_allclose(detail, 0.0, atol=1e-6)


def test_bilinear_up2_matches_half_pixel_interpolation():
    # align_corners=False: output pixel i samples input position (i + 0.5) / 2 - 0.5, edges
    # clamped; along one axis [a, b] -> [a, 0.75 a + 0.25 b, 0.25 a + 0.75 b, b].
    row = jnp.array([1.0, 5.0]).reshape(1, 1, 2, 1)
    up = pyramid.up2(jnp.broadcast_to(row, (1, 2, 2, 1)))
    np.testing.assert_allclose(up[0, 0, :, 0], [1.0, 2.0, 4.0, 5.0], atol=1e-6)


def test_sizes_that_cannot_be_halved_are_refused():
    with pytest.raises(ValueError, match=r"cannot be halved 2 time\(s\).*divisible by 4"):
        pyramid.decompose(jnp.zeros((1, 6, 8, 1)), 3)
    with pytest.raises(ValueError, match="cannot be halved"):
        pyramid.packed_shape((8, 10, 1), 3)
    with pytest.raises(ValueError, match="images"):
        pyramid.stage_shapes((16,), 2)
    with pytest.raises(ValueError, match="num_stages >= 1"):
        pyramid.stage_shapes((8, 8, 1), 0)
