"""Distances between two sets of samples: sliced Wasserstein, MMD and energy distance.

All three compare an array ``x`` of ``n`` samples with an array ``y`` of ``m`` samples of the
same dimension ``d``. Inputs may be ``[n, d]`` or ``[n, *shape]`` (e.g. images ``[n, h, w, c]``);
trailing axes are flattened to ``d = prod(shape)``. Arithmetic is done in the promoted floating
dtype of the inputs (float32 for integer or float32 inputs, float64 for float64 inputs when
``jax_enable_x64`` is on; float16/bfloat16 are promoted to float32). Each function returns a
0-d array of that dtype.

The functions are written in ``jax.numpy`` and can be called under ``jax.jit`` / ``jax.vmap`` as
long as the Python-level options (``num_projections``, ``p``, ``block_size``) are static.
Pairwise sums are computed block by block (``block_size`` rows of ``x`` at a time inside a
``lax.scan``), so memory stays bounded: the default keeps a block at about ``2**22`` pairs, and
``n = m = 10_000`` samples in 2-D work on a CPU.

Example::

    key = jax.random.key(0)
    x = jax.random.normal(key, (1000, 2))
    y = x + jnp.array([1.0, 0.0])
    sliced_wasserstein(x, y, jax.random.key(1))   # ~ |delta| / sqrt(d) = 0.707
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["sliced_wasserstein", "mmd", "energy_distance", "DEFAULT_BANDWIDTH_FACTORS"]

# Multipliers of the median pairwise distance used as RBF bandwidths by `mmd` by default.
DEFAULT_BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)

# Pairs per block of the blocked pairwise sums (about 16 MiB of float32 distances).
_PAIRS_PER_BLOCK = 2**22
# Up to this dimension, squared distances are formed from explicit differences (exact, no
# cancellation); above it from ||a||^2 + ||b||^2 - 2 <a, b> on centred data (a matmul).
_DIRECT_DIFFERENCE_MAX_DIM = 8
# Points taken from each set for the median heuristic.
_MEDIAN_SUBSAMPLE = 512


# ---------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------


def _check_pair(x, y, min_samples: int = 1):
    """Validate two sample sets; returns them (not yet reshaped) and the compute dtype."""
    x = x if isinstance(x, jax.Array) else np.asarray(x)
    y = y if isinstance(y, jax.Array) else np.asarray(y)
    for name, a in (("x", x), ("y", y)):
        if a.ndim < 2:
            raise ValueError(
                f"{name} must have shape [num_samples, ...] with at least 2 axes, got shape "
                f"{a.shape}; for one-dimensional samples pass {name}[:, None]."
            )
        if a.shape[0] < min_samples:
            raise ValueError(
                f"{name} has {a.shape[0]} sample(s); this estimator needs at least {min_samples}."
            )
    dim_x, dim_y = math.prod(x.shape[1:]), math.prod(y.shape[1:])
    if dim_x != dim_y:
        raise ValueError(
            f"x and y must have the same per-sample size after flattening, got {dim_x} and {dim_y}."
        )
    if dim_x == 0:
        raise ValueError("samples have zero features; nothing to compare.")
    dtype = jnp.promote_types(jnp.result_type(x, y), jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"samples must be real-valued, got dtype {dtype}.")
    return x, y, np.dtype(dtype)


def _flatten(a: jax.Array, dtype) -> jax.Array:
    """``[n, *shape] -> [n, prod(shape)]`` in ``dtype`` (called inside the jitted kernels)."""
    return a.reshape(a.shape[0], -1).astype(dtype)


def _check_block_size(block_size) -> None:
    if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size must be a positive int or None, got {block_size!r}.")


# ---------------------------------------------------------------------------------------------
# Blocked pairwise sums
# ---------------------------------------------------------------------------------------------


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    """Squared Euclidean distances ``[len(a), len(b)]``, clamped at 0."""
    if a.shape[1] <= _DIRECT_DIFFERENCE_MAX_DIM:
        return jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), axis=-1)
    norms = jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :]
    d2 = norms - 2.0 * jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
    # Values within the round-off of the expansion (e.g. the diagonal of x against itself) are
    # indistinguishable from 0; zeroing them keeps sqrt(d2) from turning noise into distance.
    noise_floor = 8.0 * jnp.finfo(a.dtype).eps * norms
    return jnp.where(d2 > noise_floor, d2, 0.0)


def _pairwise_sum(
    a: jax.Array, b: jax.Array, fn: Callable[[jax.Array], jax.Array], block_size: int | None
) -> jax.Array:
    """``sum_{i, j} fn(||a_i - b_j||^2)``, scanning over blocks of rows of ``a``."""
    n, d = a.shape
    m = b.shape[0]
    if block_size is None:
        per_row = m * (d if d <= _DIRECT_DIFFERENCE_MAX_DIM else 1)
        block_size = max(1, _PAIRS_PER_BLOCK // per_row)
    block_size = min(block_size, n)
    num_blocks = -(-n // block_size)
    pad = num_blocks * block_size - n
    a_blocks = jnp.pad(a, ((0, pad), (0, 0))).reshape(num_blocks, block_size, d)
    w_blocks = jnp.pad(jnp.ones((n,), a.dtype), (0, pad)).reshape(num_blocks, block_size)

    def body(total, block):
        a_blk, w_blk = block
        row_sums = jnp.sum(fn(_sq_dists(a_blk, b)), axis=1)
        return total + jnp.sum(w_blk * row_sums), None

    total, _ = jax.lax.scan(body, jnp.zeros((), a.dtype), (a_blocks, w_blocks))
    return total


def _centre(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Subtract the pooled mean (distances are unchanged; round-off of ||a||^2 - 2ab shrinks)."""
    centre = (jnp.sum(x, axis=0) + jnp.sum(y, axis=0)) / (x.shape[0] + y.shape[0])
    return x - centre, y - centre


# ---------------------------------------------------------------------------------------------
# Sliced Wasserstein
# ---------------------------------------------------------------------------------------------


def _sort_columns(a: jax.Array) -> jax.Array:
    """``jnp.sort(a, axis=0)`` for a float ``[n, k]`` array, through integer keys.

    XLA's CPU sort is several times faster on integers than on floats (whose comparator handles
    NaN and signed zeros), so the values are sorted as their order-preserving integer images:
    the IEEE bit pattern, with all bits but the sign flipped for negative numbers (an
    involution, so the same map converts back). Rows are made contiguous first (sorting along
    the last axis). Not differentiable; the metrics here are evaluation-only.
    """
    int_type = {jnp.dtype(jnp.float32): jnp.int32, jnp.dtype(jnp.float64): jnp.int64}.get(a.dtype)
    if int_type is None:
        return jnp.sort(a, axis=0)
    low_bits = jnp.array(jnp.iinfo(int_type).max, int_type)  # every bit but the sign

    def flip(bits):
        return jnp.where(bits < 0, bits ^ low_bits, bits)

    keys = flip(jax.lax.bitcast_convert_type(a.T, int_type))
    return jax.lax.bitcast_convert_type(flip(jnp.sort(keys, axis=-1)), a.dtype).T


def _wasserstein_1d_pth_power(xs: jax.Array, ys: jax.Array, p: float) -> jax.Array:
    """``W_p^p`` between the empirical laws of the columns of sorted ``xs [n, k]``, ``ys [m, k]``.

    Uses ``W_p^p = int_0^1 |F^{-1}(u) - G^{-1}(u)|^p du`` with the empirical quantile functions,
    which are piecewise constant with jumps at ``u = i/n`` and ``u = j/m``. On the merged grid of
    those levels both are constant, so the integral is an exact finite sum. Returns ``[k]``.
    """
    n, m = xs.shape[0], ys.shape[0]
    if n == m:
        return jnp.mean(jnp.abs(xs - ys) ** p, axis=0)
    dtype = xs.dtype
    levels = jnp.concatenate(
        [jnp.arange(1, n + 1, dtype=dtype) / n, jnp.arange(1, m + 1, dtype=dtype) / m]
    )
    from_x = jnp.concatenate([jnp.ones((n,), jnp.int32), jnp.zeros((m,), jnp.int32)])
    order = jnp.argsort(levels, stable=True)
    levels, from_x = levels[order], from_x[order]
    widths = jnp.diff(levels, prepend=jnp.zeros((1,), dtype))
    # On the interval ending at a level, the quantile index is the number of levels of that
    # sample set strictly before it.
    idx_x = jnp.minimum(jnp.cumsum(from_x) - from_x, n - 1)
    from_y = 1 - from_x
    idx_y = jnp.minimum(jnp.cumsum(from_y) - from_y, m - 1)
    return jnp.sum(widths[:, None] * jnp.abs(xs[idx_x] - ys[idx_y]) ** p, axis=0)


def sliced_wasserstein(x, y, key: jax.Array, num_projections: int = 256, p: float = 2) -> jax.Array:
    """Monte-Carlo sliced Wasserstein-p distance between two sample sets.

        SW_p(x, y) = ( (1/L) sum_{l=1..L} W_p^p(<theta_l, x>, <theta_l, y>) )^(1/p),
        theta_l ~ Uniform(unit sphere S^{d-1}),

    the ``p``-th root of the mean over ``L = num_projections`` random unit directions of the
    1-D ``W_p^p`` between the projected empirical distributions (each sample has weight ``1/n``
    resp. ``1/m``). The 1-D term is exact: ``W_p^p = int_0^1 |F_x^{-1}(u) - F_y^{-1}(u)|^p du``
    with the empirical quantile functions. For ``n == m`` this is the mean of
    ``|sort(x.theta) - sort(y.theta)|^p``; for ``n != m`` both quantile functions are evaluated
    on the merged grid of levels ``{i/n} U {j/m}`` (quantile matching, no resampling or
    interpolation error).

    For ``y = x + delta`` and ``p = 2``: ``W_2(theta.x, theta.y) = |<delta, theta>|`` and
    ``SW_2 -> sqrt(E<delta, theta>^2) = |delta| / sqrt(d)`` as ``L`` grows.

    Args:
      x: ``[n, ...]`` samples (trailing axes flattened to ``d``).
      y: ``[m, ...]`` samples with the same per-sample size ``d``.
      key: a JAX PRNG key for the directions; the same key gives the same directions.
      num_projections: ``L``, a positive Python int (static under ``jit``).
      p: the order, a Python number ``>= 1`` (static under ``jit``).

    Returns:
      A non-negative 0-d array in the promoted floating dtype. Memory is ``O((n + m) L)``.
    """
    x, y, dtype = _check_pair(x, y)
    if not isinstance(num_projections, int) or num_projections < 1:
        raise ValueError(f"num_projections must be a positive int, got {num_projections!r}.")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 1:
        raise ValueError(f"p must be a Python number >= 1, got {p!r}.")
    return _sliced_wasserstein(x, y, key, num_projections, float(p), dtype)


@functools.partial(jax.jit, static_argnames=("num_projections", "p", "dtype"))
def _sliced_wasserstein(x, y, key, num_projections: int, p: float, dtype) -> jax.Array:
    x, y = _flatten(x, dtype), _flatten(y, dtype)
    d = x.shape[1]
    directions = jax.random.normal(key, (d, num_projections), dtype=x.dtype)
    directions = directions / jnp.linalg.norm(directions, axis=0, keepdims=True)
    hp = jax.lax.Precision.HIGHEST
    xs = _sort_columns(jnp.matmul(x, directions, precision=hp))
    ys = _sort_columns(jnp.matmul(y, directions, precision=hp))
    w_pp = _wasserstein_1d_pth_power(xs, ys, p)
    return jnp.mean(w_pp) ** (1.0 / p)


# ---------------------------------------------------------------------------------------------
# MMD
# ---------------------------------------------------------------------------------------------


def _median_heuristic(x: jax.Array, y: jax.Array) -> jax.Array:
    """Median pairwise Euclidean distance of a deterministic subsample of the pooled sets."""
    parts = []
    for a in (x, y):
        k = min(a.shape[0], _MEDIAN_SUBSAMPLE)
        parts.append(a[np.round(np.linspace(0, a.shape[0] - 1, k)).astype(np.int64)])
    z = jnp.concatenate(parts)
    iu, ju = np.triu_indices(z.shape[0], k=1)
    dist = jnp.sqrt(_sq_dists(z, z)[iu, ju])
    med = jnp.median(dist)
    mean = jnp.mean(dist)
    # Degenerate sets (mostly repeated points): fall back to the mean distance, then to 1.
    return jnp.where(med > 0, med, jnp.where(mean > 0, mean, jnp.ones_like(mean)))


def mmd(
    x, y, bandwidths: Sequence[float] | jax.Array | None = None, *, block_size: int | None = None
) -> jax.Array:
    """Unbiased estimate of the squared maximum mean discrepancy with a sum of RBF kernels.

    Kernel ``k(a, b) = sum_s exp(-||a - b||^2 / (2 sigma_s^2))`` over the bandwidths
    ``sigma_s``. The unbiased U-statistic (Gretton et al. 2012, eq. 3) is

        MMD_u^2 = 1/(n(n-1)) sum_{i != j} k(x_i, x_j)
                + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
                - 2/(n m)    sum_{i, j}   k(x_i, y_j).

    Its expectation is exactly ``MMD^2`` (0 when the two laws are equal), so single estimates
    fluctuate around 0 and **can be slightly negative** for equal distributions; do not take
    its square root. Differences in the laws give a positive value of order ``MMD^2``.

    Default bandwidths (median heuristic): ``sigma_s = f_s * med`` for the factors
    ``DEFAULT_BANDWIDTH_FACTORS = (0.25, 0.5, 1, 2, 4)``, where ``med`` is the median pairwise
    Euclidean distance among up to 512 evenly strided points of each set, pooled. Pass explicit
    ``bandwidths`` to compare numbers across runs (the default is data-dependent).

    Args:
      x: ``[n, ...]`` samples, ``n >= 2`` (trailing axes flattened to ``d``).
      y: ``[m, ...]`` samples, ``m >= 2``, same ``d``.
      bandwidths: positive ``sigma_s`` values, a sequence or a 1-D array; ``None`` for the
        median heuristic.
      block_size: rows of each left-hand set per block of the pairwise sums (memory is about
        ``block_size * max(n, m) * 4`` bytes per kernel term); ``None`` picks ``~2**22`` pairs.

    Returns:
      A 0-d array in the promoted floating dtype.
    """
    x, y, dtype = _check_pair(x, y, min_samples=2)
    _check_block_size(block_size)
    if bandwidths is not None:
        if not isinstance(bandwidths, jax.Array):
            bandwidths = np.asarray(bandwidths, dtype=np.float64)
        if bandwidths.ndim != 1 or bandwidths.shape[0] < 1:
            raise ValueError(
                f"bandwidths must be a non-empty 1-D sequence of positive floats, got shape "
                f"{bandwidths.shape}."
            )
        if not isinstance(bandwidths, jax.core.Tracer) and not np.all(np.asarray(bandwidths) > 0):
            raise ValueError(f"bandwidths must all be positive, got {np.asarray(bandwidths)}.")
    return _mmd(x, y, bandwidths, block_size, dtype)


@functools.partial(jax.jit, static_argnames=("block_size", "dtype"))
def _mmd(x, y, bandwidths, block_size: int | None, dtype) -> jax.Array:
    x, y = _centre(_flatten(x, dtype), _flatten(y, dtype))
    if bandwidths is None:
        sigmas = _median_heuristic(x, y) * jnp.asarray(DEFAULT_BANDWIDTH_FACTORS, dtype)
    else:
        sigmas = jnp.asarray(bandwidths, dtype)
    gammas = 1.0 / (2.0 * jnp.square(sigmas))
    num_kernels = sigmas.shape[0]

    def kernel(d2):
        total = jnp.zeros_like(d2)
        for s in range(num_kernels):
            total = total + jnp.exp(-gammas[s] * d2)
        return total

    n, m = x.shape[0], y.shape[0]
    # sum_{i != j} = sum_{i, j} - diagonal, and k(a, a) = num_kernels exactly.
    k_xx = (_pairwise_sum(x, x, kernel, block_size) - n * num_kernels) / (n * (n - 1))
    k_yy = (_pairwise_sum(y, y, kernel, block_size) - m * num_kernels) / (m * (m - 1))
    k_xy = _pairwise_sum(x, y, kernel, block_size) / (n * m)
    return k_xx + k_yy - 2.0 * k_xy


# ---------------------------------------------------------------------------------------------
# Energy distance
# ---------------------------------------------------------------------------------------------


def energy_distance(x, y, *, block_size: int | None = None) -> jax.Array:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between the two empirical laws.

    With Euclidean norms and the plug-in (V-statistic) estimates

        E = 2/(n m) sum_{i,j} ||x_i - y_j|| - 1/n^2 sum_{i,j} ||x_i - x_j||
                                            - 1/m^2 sum_{i,j} ||y_i - y_j||,

    i.e. the exact energy distance between the empirical distributions (Szekely & Rizzo 2013),
    which is ``>= 0`` and is 0 iff the two sets hold the same points with the same weights.
    Round-off below 0 is clamped to 0. It is the squared energy metric (units of distance, not
    squared distance): for two point masses at ``a`` and ``b`` it equals ``2 |a - b|``. Its
    expectation over finite samples of equal laws is ``O(1/n + 1/m)``, not 0.

    Args:
      x: ``[n, ...]`` samples (trailing axes flattened to ``d``).
      y: ``[m, ...]`` samples, same ``d``.
      block_size: rows per block of the pairwise sums; ``None`` picks ``~2**22`` pairs.

    Returns:
      A non-negative 0-d array in the promoted floating dtype.
    """
    x, y, dtype = _check_pair(x, y)
    _check_block_size(block_size)
    return _energy_distance(x, y, block_size, dtype)


@functools.partial(jax.jit, static_argnames=("block_size", "dtype"))
def _energy_distance(x, y, block_size: int | None, dtype) -> jax.Array:
    x, y = _centre(_flatten(x, dtype), _flatten(y, dtype))
    n, m = x.shape[0], y.shape[0]

    def dist(d2):
        # sqrt with a finite gradient at 0 (the diagonal), so the value can be differentiated.
        positive = d2 > 0
        return jnp.where(positive, jnp.sqrt(jnp.where(positive, d2, 1.0)), 0.0)

    e_xy = _pairwise_sum(x, y, dist, block_size) / (n * m)
    e_xx = _pairwise_sum(x, x, dist, block_size) / (n * n)
    e_yy = _pairwise_sum(y, y, dist, block_size) / (m * m)
    return jnp.maximum(2.0 * e_xy - e_xx - e_yy, 0.0)
