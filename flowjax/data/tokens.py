"""Images of mixed sizes as one batch of patch tokens, and a loss over the valid tokens.

Layout (:class:`TokenBatch`, made by :func:`pack_images`)
--------------------------------------------------------
An image ``[H_i, W_i, C]`` with ``H_i`` and ``W_i`` multiples of the patch ``p`` becomes
``h_i w_i = (H_i / p)(W_i / p)`` tokens of ``p^2 C`` features, in row-major order over its own
``h_i x w_i`` grid, each token's features in (row, column, channel) order inside its patch: the
order of :func:`flowjax.models.dit.patchify`, so a fixed-size batch packs to exactly the
tokens the DiT sees. The batch holds

- ``tokens [B, N, p^2 C]``: image ``i``'s tokens in rows ``0 .. h_i w_i - 1``, the rest padding
  (``pad_value``), with ``N`` the batch's longest sequence (or ``max_tokens`` with
  ``pad_to_max=True``, one shape for every batch, so a jitted step compiles once);
- ``mask [B, N]`` (bool): True at valid tokens;
- ``positions [B, N, 2]`` (int32): each token's ``(row, col)`` on its image's grid, zeros in
  the padding;
- ``sizes [B, 2]`` (int32): each image's grid ``(h_i, w_i)``, from which
  :func:`unpack_tokens` rebuilds every image from its own grid.

FiTv2's released records hold the same information with other conventions: token features in
(channel, row, column) order and the grid as ``(col, row)``; a loader of its files converts.

Preprocessing (FiTv2's rules, docs/maths/any_resolution.md)
-----------------------------------------------------------
:func:`area_size` is the size rule for a target side ``S`` (a token budget of ``(S/m)^2``)
and a multiple ``m`` (the patch in pixels; 16 for an SD-VAE latent with patch 2):
an image with ``H W >= S^2`` is resized keeping its aspect ratio to area ``S^2``; an image
with a side below ``m`` is upsampled keeping its aspect ratio until its short side is ``m``;
then each side is floored to a multiple of ``m``. :func:`resize_to_area` applies it (bicubic,
Pillow) and :func:`fit_versions` adds the ``S x S`` centre crop that FiTv2 also stores for an
image with ``H W > S^2`` (the loader picks one of the two at random).

Loss (:func:`masked_token_mean`)
--------------------------------
A per-token loss is averaged over each image's valid tokens (and features), then over the
images: every image weighs the same whatever its size, as in FiTv2's training loss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import einops
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from flowjax.data.image_folder import center_crop
from flowjax.types import Array

__all__ = [
    "TokenBatch",
    "area_size",
    "fit_versions",
    "masked_token_mean",
    "pack_images",
    "per_image_token_mean",
    "resize_bicubic",
    "resize_to_area",
    "unpack_tokens",
]


# ---------------------------------------------------------------------------------------------
# The size rules
# ---------------------------------------------------------------------------------------------


def _check_positive_int(value, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def area_size(height: int, width: int, side: int, multiple: int) -> tuple[int, int]:
    """FiTv2's target ``(height, width)`` for an image, both multiples of ``multiple``.

    With ``S = side`` and ``m = multiple``:

    - ``H W >= S^2``: keep the aspect ratio at area ``S^2``, i.e. ``W' = S sqrt(W / H)`` and
      ``H' = S sqrt(H / W)``;
    - else, a side below ``m``: scale by ``m / min(H, W)`` (the short side becomes ``m``);
    - else: ``(H, W)``;

    then floor each side to a multiple of ``m``. The arithmetic is exact in integers
    (``floor(S sqrt(W / H) / m) = isqrt(W S^2 // (H m^2))``), so a side that is mathematically
    a multiple of ``m`` is never floored one step down by rounding.

    Raises a ``ValueError`` when a side would be 0 (an aspect ratio beyond ``(S / m)^2 : 1``);
    crop such an image first.
    """
    h, w = _check_positive_int(height, "height"), _check_positive_int(width, "width")
    s, m = _check_positive_int(side, "side"), _check_positive_int(multiple, "multiple")
    if h * w >= s * s:
        kh, kw = math.isqrt(h * s * s // (w * m * m)), math.isqrt(w * s * s // (h * m * m))
    elif min(h, w) < m:  # the short side becomes m: the other is m * long / short
        kh, kw = (1, w // h) if h <= w else (h // w, 1)
    else:
        kh, kw = h // m, w // m
    if kh == 0 or kw == 0:
        raise ValueError(
            f"a {h}x{w} image at side {s} with multiple {m} would have an empty side (aspect "
            f"ratio beyond {(s // m) ** 2}:1); crop it to a less elongated shape first"
        )
    return kh * m, kw * m


def _per_channel(fn, image: np.ndarray) -> np.ndarray:
    """Apply ``fn`` (a ``[H, W, 1] -> [H', W', 1]`` map on Pillow-ready arrays) per channel."""
    if image.dtype == np.uint8:
        arr = image
    elif np.issubdtype(image.dtype, np.floating):
        arr = image.astype(np.float32)  # Pillow's float mode "F"
    else:
        raise ValueError(f"images must be uint8 or floating point, got dtype {image.dtype}")
    out = np.concatenate([fn(arr[..., c : c + 1]) for c in range(arr.shape[-1])], axis=-1)
    return out.astype(image.dtype)


def _check_image(image, where: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or min(image.shape) < 1:
        raise ValueError(f"{where} must be a non-empty [H, W, C] array, got shape {image.shape}")
    return image


def resize_to_area(image, side: int, multiple: int) -> np.ndarray:
    """``image [H, W, C]`` (uint8 or float) resized bicubically to :func:`area_size`.

    An image already at its target size is returned unchanged.
    """
    image = _check_image(image)
    return resize_bicubic(image, *area_size(image.shape[0], image.shape[1], side, multiple))


def resize_bicubic(image, height: int, width: int) -> np.ndarray:
    """``image [H, W, C]`` (uint8 or float) resized to ``[height, width, C]`` with Pillow's
    bicubic filter, channel by channel, in the image's dtype (uint8 results are clipped to
    0..255 by Pillow). An image already at that size is returned unchanged."""
    image = _check_image(image)
    h, w = _check_positive_int(height, "height"), _check_positive_int(width, "width")
    if (h, w) == image.shape[:2]:
        return image

    def resize(channel):
        pil = Image.fromarray(channel[..., 0]).resize((w, h), resample=Image.BICUBIC)
        return np.asarray(pil)[..., None]

    return _per_channel(resize, image)


def fit_versions(image, side: int, multiple: int) -> tuple[np.ndarray, ...]:
    """The versions FiTv2 stores of one image: the :func:`resize_to_area` one, then, when
    ``H W > side^2``, the ``side x side`` centre crop (ADM's, :func:`center_crop`).

    A training pipeline picks one of them at random per example.
    """
    image = _check_image(image)
    cropped = image.shape[0] * image.shape[1] > side * side
    if cropped and side % multiple:
        raise ValueError(
            f"side={side} is not a multiple of multiple={multiple}, so its {side}x{side} crop "
            "cannot be patchified; choose a side that is a multiple"
        )
    resized = resize_to_area(image, side, multiple)
    if not cropped:
        return (resized,)
    return resized, _per_channel(lambda c: center_crop(c, side), image)


# ---------------------------------------------------------------------------------------------
# Packing and unpacking
# ---------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TokenBatch:
    """Images of mixed sizes as padded patch tokens (see the module docstring).

    A pytree of four arrays, so it passes through ``jax.jit`` and ``jax.device_put``.
    """

    tokens: Array  # [B, N, p^2 C]
    mask: Array  # [B, N] bool, True at valid tokens
    positions: Array  # [B, N, 2] int32, (row, col) on the image's grid
    sizes: Array  # [B, 2] int32, the grid (h, w) of each image


def _patchify_one(image: np.ndarray, p: int) -> np.ndarray:
    return einops.rearrange(image, "(gh ph) (gw pw) c -> (gh gw) (ph pw c)", ph=p, pw=p)


def pack_images(
    images: Sequence,
    patch: int,
    *,
    max_tokens: int | None = None,
    pad_to_max: bool = False,
    pad_value: float = 0.0,
) -> TokenBatch:
    """Images ``[H_i, W_i, C]`` (sides multiples of ``patch``) -> a :class:`TokenBatch`.

    The sequences are padded to the longest one, or to ``max_tokens`` when ``pad_to_max``;
    an image with more than ``max_tokens`` tokens is refused. Every image is checked before
    any is packed. Arrays come back as numpy (the tokens in the images' common dtype).
    """
    p = _check_positive_int(patch, "patch")
    if max_tokens is not None:
        max_tokens = _check_positive_int(max_tokens, "max_tokens")
    if pad_to_max and max_tokens is None:
        raise ValueError("pad_to_max=True needs max_tokens; pass the length to pad to")
    if getattr(images, "ndim", None) == 4:
        images = list(np.asarray(images))  # a fixed-size batch [B, H, W, C], numpy or jax
    if not isinstance(images, Sequence) or len(images) == 0:
        raise ValueError("images must be a non-empty list of [H, W, C] arrays")
    images = [_check_image(im, f"image {i}") for i, im in enumerate(images)]
    channels = images[0].shape[-1]
    grids = []
    for i, im in enumerate(images):
        (h, w, c), tokens = im.shape, (im.shape[0] // p) * (im.shape[1] // p)
        if c != channels:
            raise ValueError(
                f"image {i} has {c} channels but image 0 has {channels}; one batch holds one "
                "channel count"
            )
        if h % p or w % p:
            raise ValueError(
                f"image {i} is {h}x{w}, not a multiple of the patch {p} per side; resize it "
                "with flowjax.data.tokens.resize_to_area (multiple = patch) or crop it first"
            )
        if max_tokens is not None and tokens > max_tokens:
            raise ValueError(
                f"image {i} ({h}x{w}) has {tokens} tokens, more than max_tokens={max_tokens}; "
                "resize it to a smaller area or raise max_tokens"
            )
        grids.append((h // p, w // p))
    n = max_tokens if pad_to_max else max(gh * gw for gh, gw in grids)
    dtype = np.result_type(*images)
    tokens = np.full((len(images), n, p * p * channels), pad_value, dtype)
    mask = np.zeros((len(images), n), bool)
    positions = np.zeros((len(images), n, 2), np.int32)
    for i, (im, (gh, gw)) in enumerate(zip(images, grids)):
        tokens[i, : gh * gw] = _patchify_one(im, p)
        mask[i, : gh * gw] = True
        rows, cols = np.divmod(np.arange(gh * gw, dtype=np.int32), gw)
        positions[i, : gh * gw] = np.stack([rows, cols], axis=-1)
    return TokenBatch(tokens, mask, positions, np.asarray(grids, np.int32).reshape(-1, 2))


def unpack_tokens(tokens, sizes, patch: int) -> list:
    """``tokens [B, N, p^2 C]`` and the grids ``sizes [B, 2]`` -> images ``[h_i p, w_i p, C]``.

    The inverse of :func:`pack_images` (padding dropped); ``tokens`` may be numpy or jax
    (``sizes`` is read on the host). A model's output in the packed layout unpacks the same way.
    """
    p = _check_positive_int(patch, "patch")
    sizes = np.asarray(sizes)
    if tokens.ndim != 3 or sizes.shape != (tokens.shape[0], 2):
        raise ValueError(
            f"tokens must be [B, N, F] and sizes [B, 2]; got {tuple(tokens.shape)} and "
            f"{sizes.shape}"
        )
    if tokens.shape[-1] % (p * p):
        raise ValueError(f"{tokens.shape[-1]} features per token is not p^2 C for patch {p}")
    if np.any(sizes < 1) or np.any(sizes[:, 0] * sizes[:, 1] > tokens.shape[1]):
        raise ValueError(f"sizes {sizes.tolist()} do not fit {tokens.shape[1]} tokens per image")
    return [
        einops.rearrange(
            tokens[i, : gh * gw], "(gh gw) (ph pw c) -> (gh ph) (gw pw) c", gh=gh, ph=p, pw=p
        )
        for i, (gh, gw) in enumerate(sizes.tolist())
    ]


# ---------------------------------------------------------------------------------------------
# The loss over valid tokens
# ---------------------------------------------------------------------------------------------


def masked_token_mean(per_token: Array, mask: Array) -> Array:
    """The mean of ``per_token [B, N, ...]`` over each image's valid tokens, then over images.

    ``loss = (1 / B') sum_i [ sum_{n valid} mean_f per_token[i, n, f] / #valid_i ]``, with the
    trailing dimensions averaged per token and ``B'`` the images with at least one valid token
    (an all-padding row adds nothing). Padding values never enter the value (they are
    selected away, not multiplied by 0, so even non-finite padding leaves it unchanged), and
    the gradient at finite padding is exactly 0.
    Shapes are checked when traced: ``mask`` must be ``[B, N]`` (bool or integer, nonzero =
    valid) matching ``per_token``'s first two dimensions.
    """
    if per_token.ndim < 2 or mask.shape != per_token.shape[:2]:
        raise ValueError(
            f"mask must have shape [B, N] = {tuple(per_token.shape[:2])} (the per-token loss is "
            f"{tuple(per_token.shape)}), got {tuple(mask.shape)}"
        )
    if not (jnp.issubdtype(mask.dtype, jnp.bool_) or jnp.issubdtype(mask.dtype, jnp.integer)):
        raise ValueError(f"mask must be bool or integer (nonzero = valid), got {mask.dtype}")
    per_image, count = per_image_token_mean(per_token, mask)
    has_tokens = count > 0
    return jnp.where(has_tokens, per_image, 0.0).sum() / jnp.maximum(has_tokens.sum(), 1)


def per_image_token_mean(per_token: Array, mask: Array) -> tuple[Array, Array]:
    """``(per_image [B], count [B])``: each image's mean of ``per_token [B, N, ...]`` over its
    valid tokens (0 for an image without any) and its number of valid tokens; padding is
    selected away (:func:`masked_token_mean` averages the images that have tokens)."""
    valid = mask.astype(bool)
    per_token = per_token.reshape(per_token.shape[:2] + (-1,)).mean(-1)
    count = valid.sum(axis=1)
    per_image = jnp.where(valid, per_token, 0.0).sum(axis=1) / jnp.maximum(count, 1)
    return per_image, count
