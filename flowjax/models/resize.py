"""Bilinear image resize, as torch's ``F.interpolate(mode="bilinear", align_corners=False)``.

Shared by the networks that read images at a fixed size (the FID Inception network,
:mod:`flowjax.models.inception`) and by the LPIPS distance (:mod:`flowjax.evaluation.lpips`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from flowjax.types import Array

__all__ = ["resize_bilinear", "size_pair"]


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``i0, i1`` and weight ``w1`` of each output sample along one axis.

    Half-pixel centres: output ``j`` reads source position ``s = (j + 1/2) n_in / n_out - 1/2``
    clamped below at 0; ``out_j = (1 - w1) in[i0] + w1 in[i1]`` with ``i0 = floor(s)``,
    ``i1 = min(i0 + 1, n_in - 1)``, ``w1 = s - i0`` (torch's ``align_corners=False`` rule,
    without antialiasing).
    """
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int32), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _resize_axis(x: Array, axis: int, n_out: int) -> Array:
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    i0, i1, w1 = _bilinear_taps(n_in, n_out)
    shape = [1] * x.ndim
    shape[axis] = n_out
    w1 = jnp.asarray(w1.reshape(shape), x.dtype)
    return jnp.take(x, i0, axis=axis) * (1 - w1) + jnp.take(x, i1, axis=axis) * w1


def size_pair(size) -> tuple[int, int]:
    """``size`` (an int ``h = w`` or an ``(h, w)`` pair of positive ints) as ``(h, w)``."""
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in pair):
        raise ValueError(f"size must be a positive int or an (height, width) pair, got {size!r}.")
    return int(pair[0]), int(pair[1])


def resize_bilinear(x_bhwc: Array, size: int | tuple[int, int]) -> Array:
    """Bilinear resize of ``[B, H, W, C]`` to ``[B, h, w, C]``, ``size = (h, w)`` (or ``h = w``).

    Matches ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` (no
    antialiasing, also when shrinking), separably: rows, then columns. Exact gathers and
    ``lerp``s, so the result does not depend on the backend's matmul precision.
    """
    h, w = size_pair(size)
    x_bhwc = jnp.asarray(x_bhwc)
    if x_bhwc.ndim != 4:
        raise ValueError(f"expected images [B, H, W, C], got shape {x_bhwc.shape}.")
    return _resize_axis(_resize_axis(x_bhwc, 1, h), 2, w)
