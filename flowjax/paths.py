"""Interpolant paths and exact conversions between prediction types.

Time convention (everywhere in flowjax): noise ``x0 ~ N(0, I)`` lives at ``t = 0`` and data
``x1`` at ``t = 1``. A path is the pair of coefficients ``(alpha_t, sigma_t)`` in

    x_t = alpha_t * x1 + sigma_t * x0,        v_cond = alpha'_t * x1 + sigma'_t * x0

so ``alpha_0 = 0, sigma_0 = 1`` and ``alpha_1 = 1, sigma_1 = 0``. The linear path
(rectified flow) has ``alpha_t = t, sigma_t = 1 - t``.

A velocity prediction ``v`` at ``(x, t)`` determines the data prediction ``x1_hat``, the noise
prediction ``x0_hat`` and the score exactly (two linear equations in two unknowns):

    det    = alpha * sigma' - alpha' * sigma              (-1 for the linear path)
    x1_hat = (sigma' * x - sigma * v) / det
    x0_hat = (alpha * v - alpha' * x) / det
    score  = -x0_hat / sigma

For the linear path these are ``x1_hat = x + (1 - t) v``, ``x0_hat = x - t v`` and
``score = (t v - x) / (1 - t)`` (docs/maths/convention.md). Every conversion is available in
both directions through :func:`convert`.

Example::

    path = LinearPath()
    x1_hat = path.convert(v, x, t, src="velocity", dst="x1")

``t`` may be a scalar or an array of shape ``[B]``; it is broadcast against the trailing axes of
``x`` (``[B, ...]``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from flowjax.registry import Registry, registrar
from flowjax.types import Array

PREDICTION_TYPES = ("velocity", "x1", "x0", "score")


def bcast(t: Array | float, x: Array) -> Array:
    """Broadcast a scalar or ``[B]`` time against ``x`` of shape ``[B, ...]``."""
    t = jnp.asarray(t, dtype=x.dtype)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"time must be a scalar or have shape [B] = [{x.shape[0]}] matching x of shape "
            f"{x.shape}; got shape {t.shape}"
        )
    return t.reshape(t.shape + (1,) * (x.ndim - 1))


class Path:
    """An interpolant ``x_t = alpha(t) x1 + sigma(t) x0`` (noise at t=0, data at t=1).

    Subclasses define ``alpha``, ``sigma`` and their time derivatives ``d_alpha``,
    ``d_sigma``; everything else (sampling ``x_t``, the conditional target and the exact
    conversions between prediction types) is derived here.
    """

    name: str = "path"

    # -- coefficients (override) ------------------------------------------------------------
    def alpha(self, t: Array) -> Array:
        raise NotImplementedError

    def sigma(self, t: Array) -> Array:
        raise NotImplementedError

    def d_alpha(self, t: Array) -> Array:
        return _elementwise_grad(self.alpha)(t)

    def d_sigma(self, t: Array) -> Array:
        return _elementwise_grad(self.sigma)(t)

    def log_snr(self, t: Array) -> Array:
        """``lambda(t) = log(alpha_t / sigma_t)``: -inf at noise, +inf at data."""
        return jnp.log(self.alpha(t)) - jnp.log(self.sigma(t))

    # -- training ---------------------------------------------------------------------------
    def interpolate(self, x0: Array, x1: Array, t: Array) -> Array:
        """``x_t = alpha_t x1 + sigma_t x0``."""
        tb = bcast(t, x1)
        return self.alpha(tb) * x1 + self.sigma(tb) * x0

    def target_velocity(self, x0: Array, x1: Array, t: Array) -> Array:
        """Conditional velocity ``d x_t / dt = alpha'_t x1 + sigma'_t x0``."""
        tb = bcast(t, x1)
        return self.d_alpha(tb) * x1 + self.d_sigma(tb) * x0

    # -- conversions --------------------------------------------------------------------------
    def _coeffs(self, x: Array, t: Array):
        tb = bcast(t, x)
        a, s = self.alpha(tb), self.sigma(tb)
        da, ds = self.d_alpha(tb), self.d_sigma(tb)
        return a, s, da, ds, a * ds - da * s

    def velocity_to_x1(self, v: Array, x: Array, t: Array) -> Array:
        _, s, _, ds, det = self._coeffs(x, t)
        return (ds * x - s * v) / det

    def velocity_to_x0(self, v: Array, x: Array, t: Array) -> Array:
        a, _, da, _, det = self._coeffs(x, t)
        return (a * v - da * x) / det

    def x1_to_velocity(self, x1: Array, x: Array, t: Array) -> Array:
        # From x = a x1 + s x0:  x0 = (x - a x1)/s;  v = a' x1 + s' x0.
        a, s, da, ds, _ = self._coeffs(x, t)
        return da * x1 + ds * (x - a * x1) / s

    def x0_to_velocity(self, x0: Array, x: Array, t: Array) -> Array:
        a, s, da, ds, _ = self._coeffs(x, t)
        return da * (x - s * x0) / a + ds * x0

    def convert(self, pred: Array, x: Array, t: Array, *, src: str, dst: str) -> Array:
        """Convert a prediction of type ``src`` at ``(x, t)`` into type ``dst``.

        Types: ``"velocity"``, ``"x1"`` (data), ``"x0"`` (noise), ``"score"``
        (``grad_x log p_t(x) = -x0 / sigma_t``). Conversions are exact algebra; those that
        divide by ``sigma_t`` (score) or ``alpha_t`` (from x0) are singular at the ends.
        """
        for name, value in (("src", src), ("dst", dst)):
            if value not in PREDICTION_TYPES:
                raise ValueError(f"{name}={value!r}; expected one of {PREDICTION_TYPES}")
        bcast(t, x)  # validates the time shape
        if src == dst:
            return pred
        v = self._to_velocity(pred, x, t, src)
        if dst == "velocity":
            return v
        if dst == "x1":
            return self.velocity_to_x1(v, x, t)
        x0 = self.velocity_to_x0(v, x, t)
        if dst == "x0":
            return x0
        return -x0 / self.sigma(bcast(t, x))

    def _to_velocity(self, pred, x, t, src):
        if src == "velocity":
            return pred
        if src == "x1":
            return self.x1_to_velocity(pred, x, t)
        if src == "x0":
            return self.x0_to_velocity(pred, x, t)
        x0 = -pred * self.sigma(bcast(t, x))
        return self.x0_to_velocity(x0, x, t)


@dataclasses.dataclass(frozen=True)
class LinearPath(Path):
    """Rectified-flow / conditional-flow-matching path: ``alpha_t = t``, ``sigma_t = 1 - t``.

    Conversions use the closed forms (no division except for the score).
    """

    name: str = "linear"

    def alpha(self, t):
        return t

    def sigma(self, t):
        return 1.0 - t

    def d_alpha(self, t):
        return jnp.ones_like(t)

    def d_sigma(self, t):
        return -jnp.ones_like(t)

    def log_snr(self, t):
        return jnp.log(t) - jnp.log1p(-t)

    def target_velocity(self, x0, x1, t):
        bcast(t, x1)  # validates the time shape
        return x1 - x0

    def velocity_to_x1(self, v, x, t):
        return x + (1.0 - bcast(t, x)) * v

    def velocity_to_x0(self, v, x, t):
        return x - bcast(t, x) * v

    def x1_to_velocity(self, x1, x, t):
        return (x1 - x) / (1.0 - bcast(t, x))

    def x0_to_velocity(self, x0, x, t):
        return (x - x0) / bcast(t, x)


@dataclasses.dataclass(frozen=True)
class CosinePath(Path):
    """Variance-preserving cosine path: ``alpha_t = sin(pi t / 2)``, ``sigma_t = cos(pi t / 2)``."""

    name: str = "cosine"

    def alpha(self, t):
        return jnp.sin(0.5 * math.pi * t)

    def sigma(self, t):
        return jnp.cos(0.5 * math.pi * t)

    def d_alpha(self, t):
        return 0.5 * math.pi * jnp.cos(0.5 * math.pi * t)

    def d_sigma(self, t):
        return -0.5 * math.pi * jnp.sin(0.5 * math.pi * t)


@dataclasses.dataclass(frozen=True)
class VPPath(Path):
    """Variance-preserving path of the linear-beta SDE (DDPM / score SDE), in our time.

    With ``tau = 1 - t`` and ``B(tau) = beta_min tau + (beta_max - beta_min) tau^2 / 2``:
    ``alpha_t = exp(-B / 2)``, ``sigma_t = sqrt(1 - exp(-B))`` (docs/maths/sde_search.md).
    ``alpha_0`` is ``exp(-(beta_min + beta_max)/4) ~ 6.6e-3``, not exactly 0.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    name: str = "vp"

    def _big_b(self, t):
        tau = 1.0 - t
        return self.beta_min * tau + 0.5 * (self.beta_max - self.beta_min) * tau**2

    def _beta(self, t):  # dB/dtau
        return self.beta_min + (self.beta_max - self.beta_min) * (1.0 - t)

    def alpha(self, t):
        return jnp.exp(-0.5 * self._big_b(t))

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(-self._big_b(t)))

    def d_alpha(self, t):
        # d/dt = -d/dtau;  d alpha/dtau = -beta/2 * alpha
        return 0.5 * self._beta(t) * self.alpha(t)

    def d_sigma(self, t):
        # d sigma/dtau = beta e^{-B} / (2 sigma)
        return -0.5 * self._beta(t) * jnp.exp(-self._big_b(t)) / self.sigma(t)


@dataclasses.dataclass(frozen=True)
class AlphaSigmaPath(Path):
    """A path from user functions ``alpha(t)``, ``sigma(t)``; derivatives by autodiff.

    The functions must be written with ``jax.numpy`` and act elementwise.
    """

    alpha_fn: Callable[[Array], Array] = None  # type: ignore[assignment]
    sigma_fn: Callable[[Array], Array] = None  # type: ignore[assignment]
    name: str = "alpha_sigma"

    def __post_init__(self):
        if not callable(self.alpha_fn) or not callable(self.sigma_fn):
            raise ValueError("AlphaSigmaPath needs callables alpha_fn(t) and sigma_fn(t)")

    def alpha(self, t):
        return self.alpha_fn(t)

    def sigma(self, t):
        return self.sigma_fn(t)


def _elementwise_grad(f):
    def df(t):
        t = jnp.asarray(t)
        _, tangent = jax.jvp(f, (t,), (jnp.ones_like(t),))
        return tangent

    return df


#: Probability paths by name (``make_path``).
PATHS: Registry[type] = Registry("path", {"linear": LinearPath, "cosine": CosinePath, "vp": VPPath})
register_path = registrar(PATHS, "register_path", "a class, ``cls(**kwargs) -> Path``")


def make_path(name: str = "linear", **kwargs) -> Path:
    """Build a path by name: ``"linear"``, ``"cosine"`` or ``"vp"``."""
    return PATHS[name](**kwargs)
