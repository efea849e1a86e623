"""Training-time laws ``p(t)``: the samplers objectives draw ``t`` from.

Time convention (everywhere in flowjax): noise ``x0`` at ``t = 0``, data ``x1`` at ``t = 1``,
``x_t = t * x1 + (1 - t) * x0``; generation integrates forward from 0 to 1 and the log-SNR of
the linear path is ``lambda(t) = logit(t)``. SD3, diffusers and Flux parametrise time by the
*noise level* ``tau = 1 - t``; every formula below has been converted to our ``t``
(docs/maths/convention.md), with the conversion noted where it matters.

A law is a small frozen (hashable) dataclass with the contract

    sample(key, shape, dtype=float32) -> array of ``shape`` with values in [0, 1]
    density(t)                        -> pdf of the law over OUR t (0 outside the support)
    name                              -> registry name

Available: :class:`Uniform`, :class:`LogitNormal`, :class:`ModeSampler`, :class:`CosMap`,
:class:`UShaped`, :class:`Discrete` (few-step distillation times) and :class:`Shifted` (the
resolution shift applied on top of any law). :data:`LAWS` is the registry;
:func:`make_time_sampler` builds one by name and :func:`time_sampler_from_spec` from the
``name,k=v`` text form (:mod:`flowjax.spec`), the one way configs name a law.
:func:`sample_pair` draws ``(s, e)`` pairs with ``s <= e`` for average-velocity models
(MeanFlow).

Example::

    sampler = time_sampler_from_spec("logit_normal,loc=0.4,scale=1,shift=3")
    # == make_time_sampler("logit_normal", loc=0.4, scale=1.0, shift=3.0)
    t = sampler.sample(jax.random.key(0), (256,))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.registry import Registry, registrar
from flowjax.spec import coerce, format_spec, init_fields, parse_spec
from flowjax.time.shifts import check_alpha, shift_time
from flowjax.types import Array

Shape = int | Sequence[int]

# Largest valid SD3 "mode" parameter: beyond it t(u) stops being monotone.
MODE_A_MAX = 2.0 / (math.pi - 2.0)
MODE_A_MIN = -1.0


class TimeSampler(Protocol):
    """What the objectives expect of a training-time sampler."""

    name: str

    def sample(self, key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array: ...

    def density(self, t: Array) -> Array: ...


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
        check_alpha(self.alpha)

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


def num_equal_rows(batch_size: int, equal_fraction: float) -> int:
    """How many leading rows :func:`sample_pair` gives ``e = s``: ``floor(equal_fraction * B)``
    (with a tiny tolerance, so that ``0.29 * 100`` counts 29 rows)."""
    if not (0.0 <= equal_fraction <= 1.0):
        raise ValueError(f"equal_fraction must be in [0, 1]; got {equal_fraction!r}")
    return math.floor(equal_fraction * batch_size + 1e-9)


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
    num_equal = num_equal_rows(shape[0], equal_fraction)
    rows = jnp.arange(shape[0]).reshape((shape[0],) + (1,) * (len(shape) - 1))
    e = jnp.where(rows < num_equal, s, e)
    return s, e


#: Training-time laws by name (``make_time_sampler`` / the ``name,k=v`` specs).
LAWS: Registry[type] = Registry(
    "time sampler",
    {
        "uniform": Uniform,
        "logit_normal": LogitNormal,
        "mode": ModeSampler,
        "cosmap": CosMap,
        "u_shaped": UShaped,
        "discrete": Discrete,
    },
)
register_time_law = registrar(
    LAWS, "register_time_law", "a TimeSampler dataclass; its fields are the spec's keys"
)

SPEC_EXAMPLE = "logit_normal,loc=0.4,scale=1"


def make_time_sampler(name: str, *, shift: float = 1.0, **kwargs) -> TimeSampler:
    """Build a training-time law by name, optionally resolution-shifted.

    Names (:data:`LAWS`) and their arguments: ``"uniform"`` (t_min, t_max),
    ``"logit_normal"`` (loc, scale), ``"mode"`` (a), ``"cosmap"`` (none), ``"u_shaped"``
    (a, eps), ``"discrete"`` (num_steps, t_min); absent arguments take the dataclass default.
    ``shift = alpha`` wraps the law in :class:`Shifted`; ``shift = 1`` (default) means no
    shift. An unknown argument is an error naming the valid ones.
    """
    cls = LAWS[name]
    allowed = init_fields(cls)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"time sampler {name!r} got unknown arguments {unknown}; it accepts {allowed} and shift"
        )
    sampler = cls(**coerce(cls, kwargs))
    check_alpha(shift, "shift")
    return sampler if float(shift) == 1.0 else Shifted(sampler, float(shift))


def time_sampler_from_spec(spec: str) -> TimeSampler:
    """A training-time law given as ``name,k=v`` text (:func:`flowjax.spec.parse_spec`).

    ``"uniform"``, ``"logit_normal,loc=-0.8"``, ``"u_shaped,a=4"``, ``"discrete,num_steps=2"``,
    ``"logit_normal,loc=0,shift=3"`` (``shift`` is the resolution shift ``alpha``). This is
    the form of ``config.objective.time_sampler`` and of FreeFlow's samplers.
    """
    name, kwargs = parse_spec(spec, kind="time sampler", example=SPEC_EXAMPLE)
    return make_time_sampler(name, **kwargs)


def time_sampler_spec(sampler: TimeSampler) -> str:
    """The ``name,k=v`` text of a law built from :data:`LAWS` (optionally :class:`Shifted`):
    ``time_sampler_from_spec(time_sampler_spec(s)) == s``."""
    base, shift = (sampler.base, sampler.alpha) if isinstance(sampler, Shifted) else (sampler, 1.0)
    kwargs = {f: getattr(base, f) for f in init_fields(type(base))}
    if shift != 1.0:
        kwargs["shift"] = shift
    return format_spec(base.name, kwargs)
