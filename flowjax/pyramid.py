"""The Laplacian pyramid of Decomposable Flow Matching (docs/maths/decomposable.md).

An image ``X [B, H, W, C]`` is split into ``S`` stages, stage 1 the coarsest::

    X^(S) = X;   for s = S, ..., 2:   L = down2(X^(s)),  P_s = X^(s) - up2(L),  X^(s-1) = L
    P_1 = X^(1)
    recompose:   Y = P_1;   for s = 2, ..., S:   Y = up2(Y) + P_s

Stage ``s`` has shape ``[B, H / 2^(S-s), W / 2^(S-s), C]``. ``down2`` / ``up2`` are bilinear
resampling by 0.5 / 2 with half-pixel centres (``align_corners=False``) and no antialiasing,
computed with ``jax.image.resize(..., method="linear", antialias=False)``: ``down2`` is then
exactly the mean of each 2x2 block, and ``up2`` the usual bilinear upsampling with edge
clamping. Whatever the resampling, ``recompose(decompose(X)) = X`` up to float round-off,
since each step adds back the very ``up2(L)`` it subtracted.

The stages have different shapes; :func:`pack` stores them in one array ``[B, S, H, W, C]``
(stage ``s`` in slot ``s - 1``, top-left corner, the rest of the slot zero) so a sampler can
carry them as one state and draw their noise as one array; :func:`unpack` crops them back.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from flowjax.types import Array


def check_stages(element_shape: Sequence[int], num_stages: int) -> None:
    """Raise a clear ``ValueError`` unless an image ``[H, W, C]`` can be halved
    ``num_stages - 1`` times (``H`` and ``W`` divisible by ``2^(num_stages - 1)``)."""
    if int(num_stages) != num_stages or num_stages < 1:
        raise ValueError(f"the pyramid needs num_stages >= 1 (an integer); got {num_stages}")
    if len(element_shape) != 3:
        raise ValueError(
            f"the Laplacian pyramid takes images [H, W, C]; got element shape "
            f"{tuple(element_shape)}"
        )
    h, w, _ = element_shape
    factor = 2 ** (int(num_stages) - 1)
    if h % factor or w % factor:
        raise ValueError(
            f"an image of size {h}x{w} cannot be halved {num_stages - 1} time(s) for a "
            f"{num_stages}-stage pyramid (needs height and width divisible by {factor}); "
            f"use fewer stages or resize the images"
        )


def stage_shapes(element_shape: Sequence[int], num_stages: int) -> list[tuple[int, int, int]]:
    """``[(H_1, W_1, C), ..., (H, W, C)]``: the shape of each stage, coarsest first."""
    check_stages(element_shape, num_stages)
    h, w, c = (int(v) for v in element_shape)
    return [(h >> (num_stages - s), w >> (num_stages - s), c) for s in range(1, num_stages + 1)]


def down2(x: Array) -> Array:
    """Bilinear x0.5 (half-pixel centres, no antialias): ``[B, H, W, C] -> [B, H/2, W/2, C]``."""
    b, h, w, c = x.shape
    return jax.image.resize(x, (b, h // 2, w // 2, c), method="linear", antialias=False)


def up2(x: Array) -> Array:
    """Bilinear x2 (half-pixel centres): ``[B, H, W, C] -> [B, 2H, 2W, C]``."""
    b, h, w, c = x.shape
    return jax.image.resize(x, (b, 2 * h, 2 * w, c), method="linear", antialias=False)


def decompose(x: Array, num_stages: int) -> tuple[Array, ...]:
    """The ``num_stages`` stages ``(P_1, ..., P_S)`` of images ``x [B, H, W, C]``."""
    if x.ndim != 4:
        raise ValueError(f"decompose takes images [B, H, W, C]; got shape {x.shape}")
    check_stages(x.shape[1:], num_stages)
    details = []
    for _ in range(num_stages - 1):
        low = down2(x)
        details.append(x - up2(low))
        x = low
    return (x, *reversed(details))


def recompose(stages: Sequence[Array]) -> Array:
    """Images ``[B, H, W, C]`` from the stages ``(P_1, ..., P_S)`` (coarsest first)."""
    y = stages[0]
    for detail in stages[1:]:
        y = up2(y) + detail
    return y


def packed_shape(element_shape: Sequence[int], num_stages: int) -> tuple[int, int, int, int]:
    """The shape ``(S, H, W, C)`` one example's stages are packed into."""
    check_stages(element_shape, num_stages)
    return (int(num_stages), *(int(v) for v in element_shape))


def pack(stages: Sequence[Array]) -> Array:
    """Stages ``(P_1 [B, H_1, W_1, C], ..., P_S [B, H, W, C])`` -> ``[B, S, H, W, C]``, stage
    ``s`` in the top-left corner of slot ``s - 1``, zeros elsewhere."""
    full = stages[-1].shape
    slots = []
    for p in stages:
        pad = ((0, 0), (0, full[1] - p.shape[1]), (0, full[2] - p.shape[2]), (0, 0))
        slots.append(jnp.pad(p, pad))
    return jnp.stack(slots, axis=1)


def unpack(packed: Array) -> tuple[Array, ...]:
    """Inverse of :func:`pack`: ``[B, S, H, W, C]`` -> ``(P_1, ..., P_S)``."""
    if packed.ndim != 5:
        raise ValueError(f"packed stages have shape [B, S, H, W, C]; got {packed.shape}")
    num_stages = packed.shape[1]
    shapes = stage_shapes(packed.shape[2:], num_stages)
    return tuple(packed[:, i, :h, :w] for i, (h, w, _) in enumerate(shapes))


def stage_mask_packed(packed_shape_: Sequence[int], dtype=jnp.float32) -> Array:
    """``[S, H, W, C]`` ones where :func:`pack` stores a stage's values, zeros in the padding."""
    s, h, w, c = packed_shape_
    shapes = stage_shapes((h, w, c), s)
    return pack([jnp.ones((1, *shape), dtype) for shape in shapes])[0]
