"""Training-time samplers ``p(t)``, the resolution shift, and inference time grids.

Time convention (everywhere in flowjax): noise ``x0`` at ``t = 0``, data ``x1`` at ``t = 1``,
``x_t = t * x1 + (1 - t) * x0``; generation integrates forward from 0 to 1 and the log-SNR of
the linear path is ``lambda(t) = logit(t)``. SD3, diffusers and Flux parametrise time by the
*noise level* ``tau = 1 - t``; every formula below has been converted to our ``t``
(docs/maths/convention.md), with the conversion noted where it matters.

Training-time samplers
----------------------
A sampler is a small frozen (hashable) dataclass with the contract

    sample(key, shape, dtype=float32) -> array of ``shape`` with values in [0, 1]
    density(t)                        -> pdf of the law over OUR t (0 outside the support)
    name                              -> registry name

Available: :class:`Uniform`, :class:`LogitNormal`, :class:`ModeSampler`, :class:`CosMap`,
:class:`UShaped`, :class:`Discrete` (few-step distillation times) and :class:`Shifted` (the
resolution shift applied on top of any sampler).
:func:`make_time_sampler` builds one by name. :func:`sample_pair` draws ``(s, e)`` pairs with
``s <= e`` for average-velocity models (MeanFlow).

Example::

    sampler = make_time_sampler("logit_normal", loc=0.4, scale=1.0, shift=3.0)
    t = sampler.sample(jax.random.key(0), (256,))

Inference grids
---------------
A grid is a strictly increasing 1-D **numpy float64** array ``t_0 < t_1 < ... < t_N`` in
``[0, 1]``; ``num_steps`` is always the number of solver steps, so a grid has ``num_steps + 1``
points and normally ends at ``t_N = 1``. Grids are static configuration (their length fixes the
shape of the compiled sampling loop), hence numpy rather than ``jax.Array``; the solvers convert
them to the working dtype. :func:`make_grid` builds one by name; :func:`validate_grid` checks a
custom one.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Shape = int | Sequence[int]

# Largest valid SD3 "mode" parameter: beyond it t(u) stops being monotone.
MODE_A_MAX = 2.0 / (math.pi - 2.0)
MODE_A_MIN = -1.0


class TimeSampler(Protocol):
    """What the objectives expect of a training-time sampler."""

    name: str

    def sample(self, key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array: ...

    def density(self, t: Array) -> Array: ...


# ---------------------------------------------------------------------------------------------
# The resolution / timestep shift
# ---------------------------------------------------------------------------------------------


def _check_alpha(alpha: Any, what: str = "alpha") -> None:
    if isinstance(alpha, (int, float, np.number)) and not (
        math.isfinite(float(alpha)) and float(alpha) > 0.0
    ):
        raise ValueError(f"shift {what} must be a finite number > 0; got {alpha!r}")


def shift_time(t: Any, alpha: float) -> Any:
    """Resolution shift over our ``t``: ``t' = t / (t + alpha * (1 - t))``.

    Equivalently ``logit(t') = logit(t) - log(alpha)``: ``alpha > 1`` moves time toward the
    noise end (more of the budget at high noise, as wanted at high resolution), ``alpha = 1`` is
    the identity, and ``shift(alpha) o shift(beta) = shift(alpha * beta)``. The map is
    increasing and fixes 0 and 1 exactly.

    SD3 / diffusers write it over the noise level ``tau = 1 - t`` as
    ``tau' = alpha tau / (1 + (alpha - 1) tau)``; substituting ``tau = 1 - t`` gives the form
    above, with the same ``alpha`` (diffusers ``shift`` / ``flow_shift``).

    Works elementwise on Python floats, numpy arrays and jax arrays (returns the same kind).
    """
    _check_alpha(alpha)
    if isinstance(alpha, (int, np.number)):
        alpha = float(alpha)  # keep the dtype of t (numpy scalars are not weakly typed in jax)
    return t / (t + alpha * (1.0 - t))


def sd3_resolution_shift(num_pixels: float, base_pixels: float = 256**2) -> float:
    """SD3 resolution-dependent shift ``alpha = sqrt(m / n)``.

    ``m = num_pixels`` (target resolution) and ``n = base_pixels`` (the resolution the
    schedule was tuned at, 256^2 in SD3). Gives 4.0 at 1024^2; note that the released SD3
    sampling configs use the rounder ``alpha = 3.0`` at 1024^2.
    """
    if not (num_pixels > 0 and base_pixels > 0):
        raise ValueError(
            f"num_pixels and base_pixels must be > 0; got {num_pixels!r}, {base_pixels!r}"
        )
    return math.sqrt(num_pixels / base_pixels)


def flux_shift(
    num_tokens: float,
    base_tokens: float = 256,
    max_tokens: float = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """Flux "dynamic shifting": ``alpha = exp(mu)`` with ``mu`` linear in the token count.

    ``mu = base_shift + (max_shift - base_shift) * (L - base_tokens) / (max_tokens - base_tokens)``
    with ``L = num_tokens`` (image tokens after patching; 4096 at 1024^2 for Flux), i.e.
    ``mu = 0.5`` at 256 tokens and ``1.15`` at 4096, extrapolated linearly outside. Use the
    returned ``alpha`` with :func:`shift_time` / :func:`shifted_grid`.
    """
    if num_tokens <= 0 or max_tokens == base_tokens:
        raise ValueError(
            f"need num_tokens > 0 and max_tokens != base_tokens; got num_tokens={num_tokens!r}, "
            f"base_tokens={base_tokens!r}, max_tokens={max_tokens!r}"
        )
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    mu = base_shift + slope * (num_tokens - base_tokens)
    return math.exp(mu)


# ---------------------------------------------------------------------------------------------
# Training-time samplers
# ---------------------------------------------------------------------------------------------


def _shape(shape: Shape) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)


def _inside(t: Array, lo: float = 0.0, hi: float = 1.0) -> Array:
    return (t >= lo) & (t <= hi)


@dataclasses.dataclass(frozen=True)
class Uniform:
    """``t ~ U(t_min, t_max)``; density ``1 / (t_max - t_min)`` on ``[t_min, t_max]``.

    The RF official code uses ``U(1e-3, 1)`` (our convention already).
    """

    t_min: float = 0.0
    t_max: float = 1.0
    name: ClassVar[str] = "uniform"

    def __post_init__(self):
        if not (0.0 <= self.t_min < self.t_max <= 1.0):
            raise ValueError(
                f"Uniform needs 0 <= t_min < t_max <= 1; got t_min={self.t_min!r}, "
                f"t_max={self.t_max!r}"
            )

    def sample(self, key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
        return jax.random.uniform(key, _shape(shape), dtype, self.t_min, self.t_max)

    def density(self, t: Array) -> Array:
        t = jnp.asarray(t)
        return jnp.where(_inside(t, self.t_min, self.t_max), 1.0 / (self.t_max - self.t_min), 0.0)


@dataclasses.dataclass(frozen=True)
class LogitNormal:
    """Logit-normal: ``t = sigmoid(loc + scale * n)``, ``n ~ N(0, 1)``.

    Density over our t::

        p(t) = 1 / (scale sqrt(2 pi)) * 1 / (t (1 - t)) * exp(-(logit(t) - loc)^2 / (2 scale^2))

    SD3 puts its location on the noise level ``tau = 1 - t``; since
    ``logit(1 - t) = -logit(t)``, ``loc = -m_SD3`` (SD3's best ``(m, s) = (0, 1)`` is
    unchanged; MeanFlow's ``lognorm(-0.4, 1.0)`` becomes ``LogitNormal(0.4, 1.0)``).
    """

    loc: float = 0.0
    scale: float = 1.0
    name: ClassVar[str] = "logit_normal"

    def __post_init__(self):
        if not (math.isfinite(self.loc) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(
                f"LogitNormal needs a finite loc and scale > 0; got loc={self.loc!r}, "
                f"scale={self.scale!r}"
            )

    def sample(self, key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
        n = jax.random.normal(key, _shape(shape), dtype)
        return jax.nn.sigmoid(self.loc + self.scale * n)

    def density(self, t: Array) -> Array:
        t = jnp.asarray(t)
        inner = (t > 0) & (t < 1)
        ts = jnp.where(inner, t, 0.5)
        z = (jnp.log(ts) - jnp.log1p(-ts) - self.loc) / self.scale
        pdf = jnp.exp(-0.5 * z**2) / (self.scale * math.sqrt(2 * math.pi) * ts * (1 - ts))
        return jnp.where(inner, pdf, 0.0)


@dataclasses.dataclass(frozen=True)
class ModeSampler:
    """SD3 "mode sampling with heavy tails", converted to our t.

    SD3 (noise level): ``u ~ U(0,1)``, ``tau = 1 - u - a (cos^2(pi u / 2) - 1 + u)``. Ours:

        t = g(u) = u + a (cos^2(pi u / 2) - 1 + u),       g'(u) = 1 + a - (a pi / 2) sin(pi u)

    ``g`` is increasing from 0 to 1 iff ``a`` is in ``[-1, 2 / (pi - 2)]`` (validated). The law
    is symmetric about 1/2, so the flip ``t = 1 - tau`` does not change it. ``a = 0`` is
    ``U(0,1)``; ``a > 0`` concentrates mass around 1/2, ``a < 0`` toward the ends; diffusers'
    default is ``a = 1.29``. Density ``p(t) = 1 / g'(g^{-1}(t))``, with ``g^{-1}`` computed by
    bisection (no closed form).
    """

    a: float = 1.29
    name: ClassVar[str] = "mode"

    def __post_init__(self):
        if not (MODE_A_MIN <= self.a <= MODE_A_MAX):
            raise ValueError(
                f"ModeSampler needs a in [-1, 2/(pi-2)] = [-1, {MODE_A_MAX:.6f}] so that t(u) "
                f"is monotone; got a={self.a!r}"
            )

    def _g(self, u):
        return u + self.a * (jnp.cos(0.5 * math.pi * u) ** 2 - 1.0 + u)

    def _dg(self, u):
        return 1.0 + self.a - 0.5 * math.pi * self.a * jnp.sin(math.pi * u)

    def sample(self, key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
        u = jax.random.uniform(key, _shape(shape), dtype)
        return jnp.clip(self._g(u), 0.0, 1.0)

    def density(self, t: Array) -> Array:
        t = jnp.asarray(t)
        dtype = jnp.result_type(t.dtype, jnp.float32)
        tc = jnp.clip(t, 0.0, 1.0).astype(dtype)

        def body(_, lo_hi):
            lo, hi = lo_hi
            mid = 0.5 * (lo + hi)
            below = self._g(mid) < tc
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 64, body, (jnp.zeros_like(tc), jnp.ones_like(tc)))
        return jnp.where(_inside(t), 1.0 / self._dg(0.5 * (lo + hi)), 0.0)


@dataclasses.dataclass(frozen=True)
class CosMap:
    """SD3 "CosMap", converted to our t.

    SD3 (noise level): ``u ~ U(0,1)``, ``tau = 1 - 1 / (tan(pi u / 2) + 1)``. Ours
    ``t = 1 - tau = 1 / (tan(pi u / 2) + 1) = cos(pi u / 2) / (sin(pi u / 2) + cos(pi u / 2))``.
    The law is symmetric about 1/2 with density

        p(t) = 2 / (pi (t^2 + (1 - t)^2))             on [0, 1]

    (from ``u = (2/pi) arctan(1/t - 1)``).
    """

    name: ClassVar[str] = "cosmap"

    def sample(self, key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
        u = jax.random.uniform(key, _shape(shape), dtype)
        c, s = jnp.cos(0.5 * math.pi * u), jnp.sin(0.5 * math.pi * u)
        return jnp.clip(c / (s + c), 0.0, 1.0)

    def density(self, t: Array) -> Array:
        t = jnp.asarray(t)
        return jnp.where(_inside(t), 2.0 / (math.pi * (t**2 + (1.0 - t) ** 2)), 0.0)


@dataclasses.dataclass(frozen=True)
class UShaped:
    """U-shaped law of Lee et al. (2-rectified flow++), symmetric so unchanged by ``t -> 1 - t``.

    ``y`` has density ``a cosh(a (y - 1/2)) / (2 sinh(a / 2))`` on [0, 1] (proportional to
    ``exp(a y) + exp(a (1 - y))``) and ``t = eps + (1 - 2 eps) y``, so

        p(t) = a cosh(a (y - 1/2)) / (2 sinh(a / 2) (1 - 2 eps)),   y = (t - eps) / (1 - 2 eps)

    on ``[eps, 1 - eps]``. Exact sampler: ``u ~ U(0,1)``, ``y = log(1 + u (e^a - 1)) / a``
    (density proportional to ``e^{a y}``), then ``y <- 1 - y`` with probability 1/2. The
    official code draws ``y``, concatenates ``1 - y`` and shuffles: same per-sample marginal.
    """

    a: float = 4.0
    eps: float = 1e-5
    name: ClassVar[str] = "u_shaped"

    def __post_init__(self):
        if not (math.isfinite(self.a) and self.a > 0):
            raise ValueError(f"UShaped needs a finite a > 0 (a -> 0 is uniform); got a={self.a!r}")
        if not (0.0 <= self.eps < 0.5):
            raise ValueError(f"UShaped needs eps in [0, 1/2); got eps={self.eps!r}")

    def sample(self, key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
        key_u, key_flip = jax.random.split(key)
        shape = _shape(shape)
        u = jax.random.uniform(key_u, shape, dtype)
        y = jnp.log1p(u * math.expm1(self.a)) / self.a
        y = jnp.where(jax.random.bernoulli(key_flip, 0.5, shape), 1.0 - y, y)
        return jnp.clip(self.eps + (1.0 - 2.0 * self.eps) * y, 0.0, 1.0).astype(dtype)

    def density(self, t: Array) -> Array:
        t = jnp.asarray(t)
        width = 1.0 - 2.0 * self.eps
        y = (t - self.eps) / width
        norm = self.a / (2.0 * math.sinh(0.5 * self.a) * width)
        return jnp.where(_inside(y), norm * jnp.cosh(self.a * (y - 0.5)), 0.0)


@dataclasses.dataclass(frozen=True)
class Shifted:
    """Any sampler followed by the resolution shift ``t' = t / (t + alpha (1 - t))``.

    Density by change of variables, with ``t = shift_time(t', 1 / alpha)``::

        p'(t') = p(t) * dt/dt' = p(t) * alpha / (1 + (alpha - 1) t')^2

    ``alpha > 1`` moves training mass toward noise (SD3 / Flux high-resolution training).
    Shifting a logit-normal ``(loc, scale)`` by ``alpha`` gives the logit-normal
    ``(loc - log(alpha), scale)``.
    """

    base: Any
    alpha: float

    def __post_init__(self):
        methods = (getattr(self.base, m, None) for m in ("sample", "density"))
        if not all(callable(m) for m in methods):
            raise TypeError(f"Shifted needs a base sampler with sample/density; got {self.base!r}")
        _check_alpha(self.alpha)

    @property
    def name(self) -> str:
        return f"{self.base.name}+shift({self.alpha:g})"

    def sample(self, key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
        return shift_time(self.base.sample(key, shape, dtype), self.alpha)

    def density(self, t: Array) -> Array:
        t = jnp.asarray(t)
        tc = jnp.clip(t, 0.0, 1.0)
        t_base = shift_time(tc, 1.0 / self.alpha)
        jac = self.alpha / (1.0 + (self.alpha - 1.0) * tc) ** 2
        return jnp.where(_inside(t), self.base.density(t_base) * jac, 0.0)


@dataclasses.dataclass(frozen=True)
class Discrete:
    """``t`` uniform on the ``num_steps`` grid times ``t_j = t_min + (1 - t_min) j / num_steps``,
    ``j = 0 .. num_steps - 1`` (the start times of a uniform ``num_steps``-step grid).

    Few-step distillation trains a velocity only where an ``num_steps``-step Euler sampler
    evaluates it (rectified flow's k-step distillation; ``num_steps = 1`` with ``t_min = 0``
    gives the one-step map ``z -> z + v(z, 0)``). A discrete law has no density:
    :meth:`density` raises; :meth:`support` lists the atoms (each of probability
    ``1 / num_steps``).
    """

    num_steps: int = 1
    t_min: float = 0.0
    name: ClassVar[str] = "discrete"

    def __post_init__(self):
        if int(self.num_steps) != self.num_steps or self.num_steps < 1:
            raise ValueError(f"Discrete needs an integer num_steps >= 1; got {self.num_steps!r}")
        if not 0.0 <= self.t_min < 1.0:
            raise ValueError(f"Discrete needs 0 <= t_min < 1; got {self.t_min!r}")

    def support(self) -> np.ndarray:
        j = np.arange(int(self.num_steps), dtype=np.float64)
        return self.t_min + (1.0 - self.t_min) * j / self.num_steps

    def sample(self, key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
        j = jax.random.randint(key, _shape(shape), 0, int(self.num_steps))
        return (self.t_min + (1.0 - self.t_min) * j / self.num_steps).astype(dtype)

    def density(self, t: Array) -> Array:
        raise NotImplementedError("Discrete is a discrete law without a density; see support()")


def sample_pair(
    key: Array,
    shape: Shape,
    base: TimeSampler,
    equal_fraction: float,
    dtype: Any = jnp.float32,
) -> tuple[Array, Array]:
    """Draw start/end times ``(s, e)`` with ``s <= e`` for average-velocity models (MeanFlow).

    Two iid draws ``a, b ~ base``; ``s = min(a, b)``, ``e = max(a, b)``; then the first
    ``floor(equal_fraction * B)`` rows (``B = shape[0]``) get ``e = s`` (instantaneous
    velocity), as in the official MeanFlow JAX code (docs/maths/meanflow.md step 1; MF's
    ``(r, t)`` are our ``(1 - e, 1 - s)``). With ``F`` the CDF of ``base``, ``s`` has CDF
    ``1 - (1 - F)^2`` in every row (also in the equal rows, where ``e`` is overwritten by
    ``s``) and ``e`` has CDF ``F^2`` in the other rows. A tiny tolerance is added before the
    floor so that e.g. ``0.29 * 100`` counts 29 rows.
    """
    shape = _shape(shape)
    if len(shape) == 0:
        raise ValueError("sample_pair needs a shape with a leading batch axis; got ()")
    if not (0.0 <= equal_fraction <= 1.0):
        raise ValueError(f"equal_fraction must be in [0, 1]; got {equal_fraction!r}")
    key_a, key_b = jax.random.split(key)
    a = base.sample(key_a, shape, dtype)
    b = base.sample(key_b, shape, dtype)
    s, e = jnp.minimum(a, b), jnp.maximum(a, b)
    num_equal = math.floor(equal_fraction * shape[0] + 1e-9)
    rows = jnp.arange(shape[0]).reshape((shape[0],) + (1,) * (len(shape) - 1))
    e = jnp.where(rows < num_equal, s, e)
    return s, e


_SAMPLERS: dict[str, type] = {
    "uniform": Uniform,
    "logit_normal": LogitNormal,
    "mode": ModeSampler,
    "cosmap": CosMap,
    "u_shaped": UShaped,
    "discrete": Discrete,
}


def make_time_sampler(name: str, *, shift: float = 1.0, **kwargs) -> TimeSampler:
    """Build a training-time sampler by name, optionally resolution-shifted.

    Names: ``"uniform"`` (t_min, t_max), ``"logit_normal"`` (loc, scale), ``"mode"`` (a),
    ``"cosmap"`` (none), ``"u_shaped"`` (a, eps), ``"discrete"`` (num_steps, t_min).
    ``shift = alpha`` wraps the sampler in
    :class:`Shifted`; ``shift = 1`` (default) means no shift.
    """
    if name not in _SAMPLERS:
        raise ValueError(f"unknown time sampler {name!r}; choose one of {sorted(_SAMPLERS)}")
    cls = _SAMPLERS[name]
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"time sampler {name!r} got unknown arguments {unknown}; it accepts {allowed} and shift"
        )
    sampler = cls(**kwargs)
    _check_alpha(shift, "shift")
    return sampler if float(shift) == 1.0 else Shifted(sampler, float(shift))


def _spec_kwargs(spec: str, items: list[str], example: str) -> dict[str, float]:
    """``["key=number", ...]`` of a text spec -> ``{key: float}`` (clear error otherwise)."""
    kwargs: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            kwargs[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ValueError(
                f"bad spec {spec!r}: expected NAME[,key=number...] such as {example!r}; got "
                f"item {item!r}"
            ) from None
    return kwargs


def time_sampler_from_spec(spec: str) -> TimeSampler:
    """A training-time sampler given as text: ``"uniform"``, ``"logit_normal,loc=-0.8"``,
    ``"u_shaped,a=4"``, ``"discrete,num_steps=2"``, ``"logit_normal,loc=0,shift=3"``."""
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise ValueError("empty time-sampler spec; give a name such as 'uniform'")
    kwargs: dict[str, Any] = _spec_kwargs(spec, parts[1:], "logit_normal,loc=0.4,scale=1")
    if "num_steps" in kwargs:
        kwargs["num_steps"] = int(kwargs["num_steps"])
    return make_time_sampler(parts[0], **kwargs)


# ---------------------------------------------------------------------------------------------
# Inference time grids (numpy float64)
# ---------------------------------------------------------------------------------------------


def _check_num_steps(num_steps: Any, minimum: int = 1) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise TypeError(f"num_steps must be an integer; got {num_steps!r}")
    if num_steps < minimum:
        raise ValueError(f"num_steps must be >= {minimum}; got {num_steps}")
    return int(num_steps)


def _show(values: np.ndarray, idx: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(f"t[{i}]={float(values[i])}" for i in idx[:limit])
    more = f" (and {len(idx) - limit} more)" if len(idx) > limit else ""
    return shown + more


def validate_grid(grid: Any) -> np.ndarray:
    """Check that ``grid`` is a usable time grid and return it as numpy float64.

    A grid must be 1-D, have at least 2 points, contain no NaN, stay inside [0, 1] and be
    strictly increasing (noise -> data). Raises ``ValueError`` naming the first problem found
    and the offending values.
    """
    arr = np.asarray(grid, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"time grid must be 1-D; got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(
            f"time grid needs at least 2 points (start and end); got {arr.shape[0]}: {arr}"
        )
    nan = np.flatnonzero(np.isnan(arr))
    if nan.size:
        raise ValueError(f"time grid contains NaN at {_show(arr, nan)}; grid={arr}")
    outside = np.flatnonzero((arr < 0.0) | (arr > 1.0))
    if outside.size:
        raise ValueError(f"time grid leaves [0, 1] at {_show(arr, outside)}; grid={arr}")
    bad = np.flatnonzero(np.diff(arr) <= 0.0)
    if bad.size:
        pairs = ", ".join(
            f"t[{i}]={float(arr[i])} >= t[{i + 1}]={float(arr[i + 1])}" for i in bad[:5]
        )
        raise ValueError(
            f"time grid is not strictly increasing (it must run from noise t=0 toward data t=1): "
            f"{pairs}; grid={arr}"
        )
    return arr


def uniform_grid(num_steps: int, t_min: float = 0.0, t_max: float = 1.0) -> np.ndarray:
    """``t_k = t_min + (t_max - t_min) k / N``, ``k = 0..N``: ``N + 1`` points, ``N`` steps.

    The RF official sampler uses ``t_min = 1e-3``.
    """
    num_steps = _check_num_steps(num_steps)
    if not (0.0 <= t_min < t_max <= 1.0):
        raise ValueError(f"need 0 <= t_min < t_max <= 1; got t_min={t_min!r}, t_max={t_max!r}")
    grid = np.linspace(t_min, t_max, num_steps + 1, dtype=np.float64)
    grid[0], grid[-1] = t_min, t_max
    return grid


def shifted_grid(num_steps: int, alpha: float, t_min: float = 0.0) -> np.ndarray:
    """Shifted uniform grid ``shift_time(uniform_grid(N, t_min, 1), alpha)``; ``N + 1`` points.

    ``t_min`` is the start *before* the shift (the first point is ``shift_time(t_min, alpha)``);
    the last point is exactly 1. ``alpha > 1`` spends more steps near noise (SD3 uses 3.0 at
    1024^2; see :func:`sd3_resolution_shift`, :func:`flux_shift`). Over diffusers' noise level
    this is their ``shift`` / ``flow_shift``.
    """
    _check_alpha(alpha)
    return shift_time(uniform_grid(num_steps, t_min, 1.0), float(alpha))


def logsnr_uniform_grid(
    num_steps: int, t_min: float = 1e-3, t_max: float = 1.0 - 1e-3
) -> np.ndarray:
    """Grid uniform in ``lambda = logit(t)`` (DPM-Solver "logSNR"), then a final point at 1.

    Returns ``num_steps + 1`` points: ``num_steps`` points ``t_0 = t_min, ..., t_{N-1} = t_max``
    evenly spaced in ``logit(t)``, followed by ``t_N = 1.0`` exactly. ``num_steps`` counts
    solver steps *including* the last segment ``t_max -> 1`` (which DPM-Solver++ takes as a
    first-order step returning ``x1_hat``), so the lambda spacing is
    ``(logit(t_max) - logit(t_min)) / (num_steps - 1)``. docs/maths/solvers.md writes the same grid
    with ``N = num_steps - 1`` lambda intervals plus the extra final step. Needs
    ``num_steps >= 2`` and ``0 < t_min < t_max < 1``.
    """
    num_steps = _check_num_steps(num_steps, minimum=2)
    if not (0.0 < t_min < t_max < 1.0):
        raise ValueError(
            f"logsnr grid needs 0 < t_min < t_max < 1 (finite logit); got t_min={t_min!r}, "
            f"t_max={t_max!r}"
        )
    lam_min = math.log(t_min) - math.log1p(-t_min)
    lam_max = math.log(t_max) - math.log1p(-t_max)
    lam = np.linspace(lam_min, lam_max, num_steps, dtype=np.float64)
    inner = 1.0 / (1.0 + np.exp(-lam))
    inner[0], inner[-1] = t_min, t_max
    return np.concatenate([inner, [1.0]])


def edm_grid(
    num_steps: int, rho: float = 7.0, sigma_min: float = 1e-3, sigma_max: float = 1.0
) -> np.ndarray:
    """EDM (Karras et al.) ``rho`` schedule over the noise level ``sigma = 1 - t``, then t = 1.

    ``N = num_steps`` solver steps; the first ``N`` points are

        sigma_k = (sigma_max^(1/rho) + k / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
        t_k     = 1 - sigma_k,                                    k = 0 .. N - 1

    and the last point is ``t_N = 1`` (noise level 0), so the final step lands on the data.
    For ``N = 1`` the grid is ``[1 - sigma_max, 1]``. ``rho = 1`` is uniform in ``t`` from
    ``1 - sigma_max`` to ``1 - sigma_min``; larger ``rho`` spends more steps near the data end.
    The noise level here is the flow's (diffusers' ``sigma`` with ``use_karras_sigmas``), not
    the VE ``sigma`` of EDM itself. Needs ``0 < sigma_min < sigma_max <= 1`` and ``rho > 0``.
    """
    num_steps = _check_num_steps(num_steps)
    if not (0.0 < sigma_min < sigma_max <= 1.0):
        raise ValueError(
            f"edm grid needs 0 < sigma_min < sigma_max <= 1 (noise levels 1 - t); got "
            f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
        )
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"edm grid needs a finite rho > 0; got rho={rho!r}")
    frac = np.arange(num_steps, dtype=np.float64) / max(num_steps - 1, 1)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigma = (hi + frac * (lo - hi)) ** rho
    sigma[0] = sigma_max
    if num_steps > 1:
        sigma[-1] = sigma_min
    return np.concatenate([1.0 - sigma, [1.0]])


def diffusers_flow_grid(
    num_steps: int, shift: float = 1.0, num_train_timesteps: int = 1000
) -> np.ndarray:
    """The grid of diffusers' schedulers with ``use_flow_sigmas=True`` (docs/maths/solvers.md).

    diffusers builds noise levels ``s = 1 - linspace(1, 1/T, N + 1)`` (``T =
    num_train_timesteps``), shifts them ``s' = shift s / (1 + (shift - 1) s)``, reverses them,
    drops the trailing 0 and appends a final noise level 0. Over our ``t = 1 - s`` this is
    exactly the shifted uniform grid starting at ``t_min = 1/T``::

        diffusers_flow_grid(N, shift) == shifted_grid(N, shift, t_min=1/T)

    (first point ``shift_time(1/T, shift)``, last point 1).
    """
    if isinstance(num_train_timesteps, bool) or int(num_train_timesteps) < 2:
        raise ValueError(f"num_train_timesteps must be >= 2; got {num_train_timesteps!r}")
    return shifted_grid(num_steps, shift, t_min=1.0 / int(num_train_timesteps))


def custom_grid(num_steps: int, times: Sequence[float]) -> np.ndarray:
    """A user-given grid: ``times`` validated, and checked to hold ``num_steps + 1`` points."""
    grid = validate_grid(times)
    num_steps = _check_num_steps(num_steps)
    if grid.shape[0] != num_steps + 1:
        raise ValueError(
            f"a grid for {num_steps} steps needs {num_steps + 1} points; the given grid has "
            f"{grid.shape[0]}: {grid}"
        )
    return grid


_GRIDS: dict[str, Callable[..., np.ndarray]] = {
    "uniform": uniform_grid,
    "shifted": shifted_grid,
    "logsnr": logsnr_uniform_grid,
    "edm": edm_grid,
    "diffusers": diffusers_flow_grid,
    "custom": custom_grid,
}


def make_grid(name: str, num_steps: int, **kwargs) -> np.ndarray:
    """Build an inference grid by name (``num_steps + 1`` points, numpy float64).

    Names and their keyword arguments: ``"uniform"`` (t_min, t_max), ``"shifted"`` (alpha,
    t_min), ``"logsnr"`` (t_min, t_max), ``"edm"`` (rho, sigma_min, sigma_max),
    ``"diffusers"`` (shift, num_train_timesteps), ``"custom"`` (times).
    """
    if name not in _GRIDS:
        raise ValueError(f"unknown time grid {name!r}; choose one of {sorted(_GRIDS)}")
    fn = _GRIDS[name]
    params = list(inspect.signature(fn).parameters)[1:]
    try:
        inspect.signature(fn).bind(num_steps, **kwargs)
    except TypeError as err:
        raise ValueError(
            f"time grid {name!r} accepts keyword arguments {params}; got {sorted(kwargs)} ({err})"
        ) from None
    return validate_grid(fn(num_steps, **kwargs))


def parse_grid_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Parse a grid given as text (command lines, ``config.eval.samplers``).

    ``"uniform"``, ``"logsnr"``, ``"edm,rho=5"``, ``"shifted,alpha=3"`` give a name and
    keyword arguments (numbers); a comma-separated list of numbers, ``"0,0.4,0.8,1"``, is a
    user-given grid (``("custom", {"times": [...]})``). Use with :func:`make_grid`.
    """
    text = str(spec).strip()
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("empty time-grid spec; give a name such as 'uniform' or a list of times")
    try:
        return "custom", {"times": [float(p) for p in parts]}
    except ValueError:
        pass
    name = parts[0]
    try:
        kwargs = _spec_kwargs(spec, parts[1:], "shifted,alpha=3")
    except ValueError as err:
        raise ValueError(
            f"{err} (a time grid may also be a list of times such as '0,0.5,1')"
        ) from None
    return name, kwargs


def grid_from_spec(spec: str, num_steps: int) -> np.ndarray:
    """``make_grid`` of a text spec (see :func:`parse_grid_spec`) for ``num_steps`` steps."""
    name, kwargs = parse_grid_spec(spec)
    if name == "custom":
        return custom_grid(num_steps, kwargs["times"])
    if "num_train_timesteps" in kwargs:
        kwargs["num_train_timesteps"] = int(kwargs["num_train_timesteps"])
    return make_grid(name, num_steps, **kwargs)
