"""Images of mixed sizes as padded patch tokens (:mod:`flowjax.data.tokens`): the round trip,
each token's patch, mask and position on its own grid, the DiT's layout for fixed-size data,
the loss over valid tokens (blind to padding, images weighed equally), FiTv2's size rules
against the published formula, and one-line errors for bad input."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.data import tokens as T
from flowjax.data.image_folder import center_crop
from flowjax.models.dit import patchify

P = 2
# (H, W): square, wide, tall, one token; the longest has 4 x 5 = 20 tokens.
SIZES = [(6, 6), (4, 10), (8, 2), (2, 2), (8, 10)]


def _images(sizes=SIZES, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(h, w, channels)).astype(np.float32) for h, w in sizes]


def _batch(**kw):
    return T.pack_images(_images(), P, **kw)


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad_to_max", [False, True])
def test_round_trip_restores_every_image_from_its_own_grid(pad_to_max):
    images = _images()
    batch = T.pack_images(images, P, max_tokens=24, pad_to_max=pad_to_max)
    assert batch.tokens.shape == (len(SIZES), 24 if pad_to_max else 20, P * P * 3)
    for unpacked in (
        T.unpack_tokens(batch.tokens, batch.sizes, P),
        T.unpack_tokens(jnp.asarray(batch.tokens), batch.sizes, P),  # a model's output
    ):
        assert [u.shape for u in unpacked] == [im.shape for im in images]
        for u, im in zip(unpacked, images):
            np.testing.assert_array_equal(np.asarray(u), im)


def test_uint8_images_round_trip_in_their_dtype():
    images = [(np.arange(h * w * 1) % 251).astype(np.uint8).reshape(h, w, 1) for h, w in SIZES]
    batch = T.pack_images(images, P)
    assert batch.tokens.dtype == np.uint8
    for u, im in zip(T.unpack_tokens(batch.tokens, batch.sizes, P), images):
        np.testing.assert_array_equal(u, im)


def test_each_token_is_its_patch_at_its_position_and_the_mask_covers_the_grid():
    images = _images()
    batch = _batch(pad_value=7.0)
    for i, (im, (h, w)) in enumerate(zip(images, SIZES)):
        gh, gw = h // P, w // P
        np.testing.assert_array_equal(batch.sizes[i], (gh, gw))
        np.testing.assert_array_equal(batch.mask[i], np.arange(batch.mask.shape[1]) < gh * gw)
        seen = set()
        for n in range(gh * gw):
            r, c = batch.positions[i, n]
            seen.add((int(r), int(c)))
            patch = im[
                r * P : (r + 1) * P, c * P : (c + 1) * P
            ]  # rows, then columns, then channels
            np.testing.assert_array_equal(batch.tokens[i, n], patch.reshape(-1))
        assert seen == {(r, c) for r in range(gh) for c in range(gw)}  # every cell once
        # Row-major order: positions sorted by (row, col).
        assert [tuple(x) for x in batch.positions[i, : gh * gw]] == sorted(seen)
        np.testing.assert_array_equal(batch.positions[i, gh * gw :], 0)
        np.testing.assert_array_equal(batch.tokens[i, gh * gw :], 7.0)


def test_a_fixed_size_batch_packs_to_the_dit_tokens_with_a_full_mask():
    x = np.random.default_rng(1).normal(size=(3, 6, 4, 2)).astype(np.float32)
    batch = T.pack_images(x, P)
    np.testing.assert_array_equal(batch.tokens, np.asarray(patchify(jnp.asarray(x), P)))
    np.testing.assert_array_equal(T.pack_images(jnp.asarray(x), P).tokens, batch.tokens)
    assert batch.mask.all() and batch.mask.shape == (3, 6)
    per_token = jnp.asarray(batch.tokens) ** 2
    assert float(T.masked_token_mean(per_token, batch.mask)) == pytest.approx(
        float(jnp.mean(per_token)), rel=1e-6
    )


def test_a_token_batch_is_a_pytree_that_passes_through_jit():
    batch = _batch()
    out = jax.jit(lambda b: b)(batch)
    assert isinstance(out, T.TokenBatch)
    np.testing.assert_array_equal(np.asarray(out.positions), batch.positions)


# ---------------------------------------------------------------------------------------------
# The loss over valid tokens
# ---------------------------------------------------------------------------------------------


_masked_loss = jax.jit(lambda tok, mask: T.masked_token_mean(tok**2, mask))


def test_padding_of_any_value_and_any_length_leaves_the_loss_unchanged():
    batch = _batch()
    tokens, mask = batch.tokens, batch.mask
    reference = float(_masked_loss(tokens, mask))
    rng = np.random.default_rng(2)
    for fill in (rng.normal(size=tokens.shape) * 1e3, np.full(tokens.shape, np.nan)):
        noisy = np.where(mask[..., None], tokens, fill).astype(np.float32)
        assert float(_masked_loss(noisy, mask)) == reference
        # Eagerly too: under jit XLA may turn a product with the mask into a selection.
        eager = T.masked_token_mean(jnp.asarray(noisy) ** 2, jnp.asarray(mask))
        assert float(eager) == float(T.masked_token_mean(jnp.asarray(tokens) ** 2, mask))
    # Eight more padding tokens, of large values, per image.
    longer = np.concatenate([tokens, np.full((len(SIZES), 8, tokens.shape[-1]), 50.0)], axis=1)
    longer_mask = np.concatenate([mask, np.zeros((len(SIZES), 8), bool)], axis=1)
    assert float(_masked_loss(longer.astype(np.float32), longer_mask)) == pytest.approx(
        reference, rel=1e-6
    )


def test_the_loss_averages_each_image_then_the_images():
    # Features are averaged per token. Image 0: one valid token (3); image 1: three valid tokens
    # (2, 4, 12: mean 6); image 2: padding only, which adds nothing.
    per_token = jnp.asarray(
        [
            [[3.0, 3.0], [9.0, 9.0], [9.0, 9.0]],
            [[0.0, 4.0], [4.0, 4.0], [12.0, 12.0]],
            [[5.0, 5.0], [5.0, 5.0], [5.0, 5.0]],
        ]
    )
    mask = jnp.asarray([[1, 0, 0], [1, 1, 1], [0, 0, 0]], jnp.int32)
    # Per image, then over the two images with tokens: (3 + 6) / 2. Pooled over the four valid
    # tokens it would be (3 + 18) / 4 = 5.25.
    assert float(T.masked_token_mean(per_token, mask)) == pytest.approx(4.5)


def test_a_mixed_size_batch_scores_the_mean_of_each_image_scored_alone():
    images = _images()
    alone = [float(_masked_loss(*_tokens_and_mask(T.pack_images([im], P)))) for im in images]
    together = float(_masked_loss(*_tokens_and_mask(T.pack_images(images, P))))
    assert together == pytest.approx(np.mean(alone), rel=1e-6)


def _tokens_and_mask(batch):
    return batch.tokens, batch.mask


def test_the_gradient_never_reaches_padding_and_spreads_over_valid_tokens():
    batch = _batch()
    grad = np.asarray(jax.grad(lambda tok: T.masked_token_mean(tok**2, batch.mask))(batch.tokens))
    np.testing.assert_array_equal(grad[~batch.mask], 0.0)
    count = batch.mask.sum(1)[:, None, None]
    expected = 2 * batch.tokens / (count * batch.tokens.shape[-1] * len(SIZES))
    np.testing.assert_allclose(grad[batch.mask], expected[batch.mask], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# FiTv2's size rules
# ---------------------------------------------------------------------------------------------


def _published_size(h, w, side, m, snap=True):
    """FiTv2's size rule as published (width-first upsampling), in float64; with ``snap``, a
    side within 1e-9 of a multiple of ``m`` counts as that multiple (exact arithmetic)."""
    if w * h >= side**2:
        new_w = math.sqrt(w / h) * side
        new_h = new_w * h / w
    elif w < m:
        new_w, new_h = m, m * h / w
    elif h < m:
        new_w, new_h = m * w / h, m
    else:
        new_w, new_h = w, h
    near = lambda v: snap and abs(v / m - round(v / m)) < 1e-9
    return tuple((round(v / m) if near(v) else int(v / m)) * m for v in (new_h, new_w))


@pytest.mark.parametrize(
    "h, w, side, m, expected",
    [
        (375, 500, 256, 16, (208, 288)),  # area 256^2: 256 sqrt(3/4) = 221.7, 256 sqrt(4/3) = 295.6
        (500, 375, 256, 16, (288, 208)),
        (256, 256, 256, 16, (256, 256)),
        (128, 512, 256, 16, (128, 512)),  # exactly area 256^2: kept
        (100, 37, 256, 16, (96, 32)),  # small enough: sides floored
        (10, 40, 256, 16, (16, 64)),  # short side 10 < 16: upsampled x1.6
        (40, 10, 256, 16, (64, 16)),
        (25, 36, 24, 4, (20, 28)),  # 24 * 5/6 = 20 exactly (19.999... in float: floored to 16)
        (8, 12, 256, 16, (16, 16)),  # both below 16: scaled by 16 / 8 (published: 10.7 -> 0 rows)
        (20, 30, 12, 2, (8, 14)),  # digits-sized: 12 sqrt(2/3) = 9.8, 12 sqrt(3/2) = 14.7
    ],
)
def test_area_size_at_hand_computed_cases(h, w, side, m, expected):
    assert T.area_size(h, w, side, m) == expected


def test_area_size_agrees_with_the_published_rule_wherever_that_gives_an_image():
    side, m = 24, 4
    float_floors_low = []
    for h in range(1, 90):
        for w in range(1, 90):
            ph, pw = _published_size(h, w, side, m)
            if ph and pw:
                assert T.area_size(h, w, side, m) == (ph, pw), (h, w)
                if _published_size(h, w, side, m, snap=False) != (ph, pw):
                    float_floors_low.append((h, w))
            elif h * w >= side**2:  # resized to the area: a side too thin to keep
                with pytest.raises(ValueError, match="empty side"):
                    T.area_size(h, w, side, m)
            else:  # the published width-first upsampling empties a side; the short side -> m
                assert min(T.area_size(h, w, side, m)) == m, (h, w)
    # Where the published floating-point route loses a step (docs/maths/any_resolution.md).
    assert float_floors_low == [(25, 36), (50, 18), (50, 72)]


def test_resize_to_area_reaches_the_size_and_keeps_a_constant_image_constant():
    for dtype, value in ((np.uint8, 200), (np.float32, -0.25)):
        image = np.full((30, 20, 3), value, dtype)
        out = T.resize_to_area(image, 16, 4)
        assert out.shape == (*T.area_size(30, 20, 16, 4), 3) and out.dtype == dtype
        np.testing.assert_allclose(out, value, atol=1e-5)
    ready = np.zeros((8, 12, 1), np.float32)
    assert T.resize_to_area(ready, 16, 4) is ready  # already at its size


def test_fit_versions_add_the_centre_crop_only_above_the_area():
    rng = np.random.default_rng(3)
    big = (rng.random((30, 20, 3)) * 255).astype(np.uint8)  # area 600 > 16^2
    resized, crop = T.fit_versions(big, 16, 4)
    np.testing.assert_array_equal(resized, T.resize_to_area(big, 16, 4))
    np.testing.assert_array_equal(crop, center_crop(big, 16))
    # Float images go through Pillow's float mode: a smooth image (no clipping at 0 or 255)
    # crops as its uint8 copy does, up to uint8 rounding.
    rows, cols = np.meshgrid(np.arange(30), np.arange(20), indexing="ij")
    smooth = 128 + 60 * np.sin(rows / 5.0)[..., None] * np.cos(cols[..., None] / 4.0 + np.arange(3))
    smooth_crop = T.fit_versions(smooth.astype(np.float32), 16, 4)[1]
    np.testing.assert_allclose(
        smooth_crop, center_crop(smooth.round().astype(np.uint8), 16), atol=1.5
    )
    assert len(T.fit_versions(big[:16, :16], 16, 4)) == 1  # area exactly 16^2


# ---------------------------------------------------------------------------------------------
# Bad input: one clear error before any work
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: T.pack_images(_images([(4, 4), (6, 5)]), P), r"image 1 is 6x5, not a multiple"),
        (
            lambda: T.pack_images(_images(), P, max_tokens=12),
            r"image 4 \(8x10\) has 20 tokens, more",
        ),
        (lambda: T.pack_images(_images(), P, pad_to_max=True), "pad_to_max=True needs"),
        (lambda: T.pack_images([], P), "non-empty list"),
        (lambda: T.pack_images([np.zeros((4, 4))], P), r"image 0 must be a non-empty \[H, W, C\]"),
        (
            lambda: T.pack_images([np.zeros((4, 4, 3)), np.zeros((4, 4, 1))], P),
            "image 1 has 1 channels but image 0 has 3",
        ),
        (lambda: T.pack_images(_images(), 0), "patch must be a positive int"),
        (
            lambda: T.masked_token_mean(jnp.zeros((5, 20, 12)), jnp.ones((5, 19), bool)),
            r"mask must have shape \[B, N\] = \(5, 20\)",
        ),
        (
            lambda: T.masked_token_mean(jnp.zeros((5, 20)), jnp.ones((5, 20), jnp.float32)),
            "mask must be bool or integer",
        ),
        (
            lambda: T.unpack_tokens(np.zeros((2, 4, 12)), np.asarray([[2, 2], [3, 2]]), P),
            "do not fit 4 tokens",
        ),
        (lambda: T.area_size(1, 5000, 16, 4), "empty side"),
        (lambda: T.fit_versions(np.zeros((30, 20, 1), np.uint8), 18, 4), "side=18 is not a"),
        (lambda: T.resize_to_area(np.zeros((8, 8, 1), np.int32), 4, 2), "uint8 or floating"),
    ],
)
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


def test_a_wrong_mask_is_refused_when_traced():
    with pytest.raises(ValueError, match="mask must have shape"):
        jax.jit(T.masked_token_mean)(jnp.zeros((2, 4)), jnp.ones((2, 3), bool))
