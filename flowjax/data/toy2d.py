"""2-D toy distributions for flow matching, sampled in pure JAX.

``sample_toy(name, key, n)`` returns ``float32 [n, 2]`` data points (the t=1 end of the path;
noise is at t=0). Every sampler is a pure function of ``(key, n)`` built from ``jax.random``
and ``jax.numpy`` only, so it can be jitted with ``n`` (and ``name``) static::

    sample = jax.jit(sample_toy, static_argnums=(0, 2))
    x1 = sample("checkerboard", jax.random.key(0), 4096)   # float32 [4096, 2]

The distributions (each scaled so a coordinate's standard deviation is about 1 to 2):

``checkerboard``
    Uniform on the 8 "black" cells of a 4x4 board of unit squares covering ``[-2, 2]^2``:
    the cells ``[i, i+1) x [j, j+1)`` with ``i + j`` even (``i, j`` in ``-2..1``), the
    board used in FFJORD's experiments. Coordinate std ~1.15.
``8gaussians``
    An equal mixture of 8 isotropic Gaussians with std ``EIGHT_GAUSSIANS_STD = 0.1`` centred
    at ``2 (cos(k pi/4), sin(k pi/4))``, ``k = 0..7``. Coordinate std ~1.42.
``moons``
    Two interleaving half circles of radius 1 (upper ``(cos a, sin a)``, lower
    ``(1 - cos a, 1/2 - sin a)``, ``a ~ U(0, pi)``, each with probability 1/2), centred at the
    origin, scaled by 2, plus Gaussian noise of std 0.1. Coordinate stds ~1.75 and ~1.0.
``2spirals`` (alias ``spirals``)
    Two interleaved arms ``+-(-a cos a, a sin a) / 3`` with ``a = 3 pi sqrt(u)``, ``u ~ U(0, 1)``
    (density ~ a, about uniform along the arm's length), plus Gaussian noise of std 0.1.
    Coordinate std ~1.6.
``rings``
    Four concentric circles of radii 0.5, 1, 1.5, 2 (probability 1/4 each, uniform angle),
    plus radial Gaussian noise of std 0.05. Coordinate std ~1.0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from flowjax.registry import Registry

EIGHT_GAUSSIANS_RADIUS = 2.0
EIGHT_GAUSSIANS_STD = 0.1
RING_RADII = (0.5, 1.0, 1.5, 2.0)


def eight_gaussians_centres() -> jax.Array:
    """The 8 mode centres of ``8gaussians``: float32 [8, 2], mode ``k`` at angle ``k pi/4``."""
    angles = jnp.arange(8, dtype=jnp.float32) * (math.pi / 4)
    return EIGHT_GAUSSIANS_RADIUS * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def _checkerboard(key: jax.Array, n: int) -> jax.Array:
    k_col, k_row, k_uv = jax.random.split(key, 3)
    col = jax.random.randint(k_col, (n,), -2, 2)  # i in -2..1
    # The two rows j in -2..1 with i + j even: {-2, 0} for even i, {-1, 1} for odd i.
    row = 2 * jax.random.randint(k_row, (n,), 0, 2) - 2 + jnp.mod(col, 2)
    corner = jnp.stack([col, row], axis=-1).astype(jnp.float32)
    return corner + jax.random.uniform(k_uv, (n, 2), jnp.float32)


def _eight_gaussians(key: jax.Array, n: int) -> jax.Array:
    k_mode, k_noise = jax.random.split(key)
    mode = jax.random.randint(k_mode, (n,), 0, 8)
    noise = EIGHT_GAUSSIANS_STD * jax.random.normal(k_noise, (n, 2), jnp.float32)
    return eight_gaussians_centres()[mode] + noise


def _moons(key: jax.Array, n: int) -> jax.Array:
    k_angle, k_moon, k_noise = jax.random.split(key, 3)
    a = jax.random.uniform(k_angle, (n,), jnp.float32, 0.0, math.pi)
    upper = jnp.stack([jnp.cos(a), jnp.sin(a)], axis=-1)
    lower = jnp.stack([1.0 - jnp.cos(a), 0.5 - jnp.sin(a)], axis=-1)
    is_upper = jax.random.bernoulli(k_moon, 0.5, (n, 1))
    x = jnp.where(is_upper, upper, lower) - jnp.array([0.5, 0.25], jnp.float32)
    return 2.0 * x + 0.1 * jax.random.normal(k_noise, (n, 2), jnp.float32)


def _two_spirals(key: jax.Array, n: int) -> jax.Array:
    k_u, k_arm, k_noise = jax.random.split(key, 3)
    a = 3.0 * math.pi * jnp.sqrt(jax.random.uniform(k_u, (n,), jnp.float32))
    arm = jnp.stack([-a * jnp.cos(a), a * jnp.sin(a)], axis=-1) / 3.0
    sign = jnp.where(jax.random.bernoulli(k_arm, 0.5, (n, 1)), 1.0, -1.0)
    return sign * arm + 0.1 * jax.random.normal(k_noise, (n, 2), jnp.float32)


def _rings(key: jax.Array, n: int) -> jax.Array:
    k_ring, k_angle, k_noise = jax.random.split(key, 3)
    radii = jnp.asarray(RING_RADII, jnp.float32)
    r = radii[jax.random.randint(k_ring, (n,), 0, len(RING_RADII))]
    r = r + 0.05 * jax.random.normal(k_noise, (n,), jnp.float32)
    angle = jax.random.uniform(k_angle, (n,), jnp.float32, 0.0, 2.0 * math.pi)
    return r[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)


#: The toy distributions by name (``sample_toy``; config ``data.name`` with ``kind="toy2d"``).
_SAMPLERS: Registry[Callable[[jax.Array, int], jax.Array]] = Registry(
    "toy distribution",
    {
        "checkerboard": _checkerboard,
        "8gaussians": _eight_gaussians,
        "moons": _moons,
        "2spirals": _two_spirals,
        "rings": _rings,
    },
)
_ALIASES = {"spirals": "2spirals"}
TOY_DISTRIBUTIONS = tuple(_SAMPLERS)


def sample_toy(name: str, key: jax.Array, n: int) -> jax.Array:
    """``n`` samples of the 2-D toy distribution ``name`` (see the module docstring).

    Args:
      name: one of ``TOY_DISTRIBUTIONS`` (``"checkerboard"``, ``"8gaussians"``, ``"moons"``,
        ``"2spirals"``, ``"rings"``) or the alias ``"spirals"``.
      key: a JAX PRNG key (``jax.random.key`` or ``jax.random.PRNGKey``).
      n: number of samples, a non-negative Python int (static under ``jax.jit``).

    Returns:
      float32 ``[n, 2]``; the same key always gives the same samples.

    Raises:
      ValueError: unknown ``name`` or invalid ``n``.
    """
    sampler = _SAMPLERS.get(_ALIASES.get(name, name))
    if sampler is None:
        raise ValueError(
            f"Unknown toy distribution {name!r}; choose one of {TOY_DISTRIBUTIONS} "
            f"(aliases: {sorted(_ALIASES)})."
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r}; pass a non-negative Python int (static under jax.jit).")
    return sampler(key, n).astype(jnp.float32)
