"""Position encodings as small frozen values behind one contract (docs/maths/positions.md).

A :class:`PositionEncoding` sees each token's position as numbers, never as its index in a
sequence, so padded, cropped or gathered tokens keep their place:

- an *additive* encoding returns ``embed(positions, width) -> [..., N, width]``, added to the
  token vectors (the fixed 2-D sine-cosine table of the DiT, :class:`SinCos2D`);
- a *rotary* encoding rotates queries and keys, ``rotate(x [B, N, H, D], positions, grid=,
  t=) -> [B, N, H, D]``, applied to ``q`` and to ``k`` (never ``v``), so that ``q . k``
  depends on the two tokens' offset only (:class:`RoPE` and its extrapolation rules).

``positions`` is ``[..., N, 2]`` holding ``(row, col)`` per token for the 2-D layouts and
``[..., N]`` for ``layout="1d"``. ``grid`` is the token grid being sampled, ``(h, w)`` (or
``(n,)`` in 1-D): the extrapolation rules compare it with ``train_size``, the tokens per
side seen in training, and reduce to plain RoPE when it is no larger. ``t`` is flowjax time
(noise 0, data 1), a scalar or ``[B]``, used by the time-dependent rules only.

Every encoding is chosen by a ``name,k=v`` spec (:func:`position_from_spec`, e.g.
``"visionyarn,train_size=16"``) from :data:`POSITIONS`; :func:`register_position` adds one.

RoPE layouts (``D`` = head dim, ``d`` = channels per axis, ``F = d/2`` frequencies per axis,
``w_k = theta^(-2k/d)``; the pair of channels ``(2j, 2j+1)`` is rotated by angle ``a_j``):

- ``"fit"`` (FiTv2): ``d = D/2``; pairs ``0..F-1`` take ``row * w_k``, pairs ``F..2F-1``
  ``col * w_k``: the first half of the head encodes the height, the second the width;
- ``"nextdit"`` (Lumina-Next): ``d = D/2``; pair ``j`` takes the row if ``j`` is even and the
  column if odd, with ``k = j // 2`` (the axes interleaved);
- ``"1d"`` (Flag-DiT): ``d = D``; pair ``j`` takes ``pos * w_j``.

Rules (``s_a = max(g_a / train_size, 1)`` per axis, ``s = max_a s_a``; ``s_g`` the Next-DiT
scale ``max((h w)^(1/2) / train_size, 1)``):

==================  ===========================================================================
``rope``            ``w_k`` (no change)
``pi``              ``w_k / s``
``ntk``             base ``theta * s^(d/(d-2))``
``visionntk``       base ``theta * s_a^(d/(d-2))`` per axis
``yarn``            ``w_k (1 - r_k) + (w_k / s) r_k`` with the ramp ``r``; cos and sin scaled
                    by ``1 + 0.1 ln s``
``visionyarn``      the same with ``s_a`` per axis (the temperature keeps ``s``)
``time_switch``     Next-DiT as released: ``w_k / s_g`` for ``t < watershed``, else base
                    ``theta * s_g``
``frequency_aware`` ``w_k s_g^(-min(2k / d_target, 1))``, ``d_target = d log_theta(L/2 pi)``
                    (inferred form)
``time_aware``      the same with ``d_t = (d - 1) t + 1`` for ``d_target`` (inferred form)
==================  ===========================================================================

RoPE runs in float32 (float64 for float64 inputs) and returns the input's dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from flowjax.registry import Registry, registrar
from flowjax.spec import check_keys, coerce, init_fields, parse_spec
from flowjax.types import Array

__all__ = [
    "NTK",
    "PI",
    "POSITIONS",
    "FrequencyAware",
    "PositionEncoding",
    "RoPE",
    "SinCos2D",
    "TimeAware",
    "TimeSwitch",
    "VisionNTK",
    "VisionYaRN",
    "YaRN",
    "grid_positions",
    "make_position",
    "position_from_spec",
    "register_position",
    "yarn_ramp",
]

SPEC_EXAMPLE = "visionyarn,train_size=16"
LAYOUTS = ("fit", "nextdit", "1d")


@dataclasses.dataclass(frozen=True)
class PositionEncoding:
    """The contract: ``embed`` (additive encodings) and ``rotate`` (rotary ones).

    The defaults make a value of one kind a no-op of the other: ``embed`` returns None and
    ``rotate`` returns ``x`` unchanged, so a model calls both without asking which it has.
    """

    name: ClassVar[str] = ""

    def embed(self, positions: Any, width: int) -> Array | np.ndarray | None:
        """``[..., N, width]`` added to the tokens at ``positions``; None for a rotary one."""
        del positions, width
        return None

    def rotate(self, x: Array, positions: Any, *, grid=None, t=None) -> Array:
        """``x [B, N, H, D]`` rotated by position (queries and keys); ``x`` for an additive one."""
        del positions, grid, t
        return x


# ---------------------------------------------------------------------------------------------
# Additive: the fixed 2-D sine-cosine table
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SinCos2D(PositionEncoding):
    """The fixed 2-D sine-cosine embedding of MAE and DiT (not trained).

    Channels ``[0, W/2)`` encode the column and ``[W/2, W)`` the row, each as
    ``[sin(pos w_k), cos(pos w_k)]`` with ``w_k = theta^(-k / (W/4))``, ``k = 0..W/4-1``.
    """

    name: ClassVar[str] = "sincos"
    theta: float = 10000.0

    def __post_init__(self):
        _check_theta(self.theta, self.name)

    def embed(self, positions, width):
        """``positions [..., N, 2]`` (row, col) -> ``[..., N, width]``; numpy in, numpy out
        (computed in float64, returned as float32), a jax array in, a jax array out."""
        if width % 4:
            raise ValueError(
                f"the 2-D sin-cos position embedding needs width % 4 == 0; got {width}"
            )
        xp = np if isinstance(positions, np.ndarray) else jnp
        _check_positions(positions, 2, "sincos")
        omega = 1.0 / self.theta ** (np.arange(width // 4, dtype=np.float64) / (width / 4.0))

        def axis(pos):
            args = pos[..., None] * xp.asarray(omega, None if xp is np else jnp.float32)
            return xp.concatenate([xp.sin(args), xp.cos(args)], axis=-1)

        out = xp.concatenate([axis(positions[..., 1]), axis(positions[..., 0])], axis=-1)
        return out.astype(np.float32)

    def table(self, width: int, grid_h: int, grid_w: int) -> np.ndarray:
        """The embedding of a full ``grid_h x grid_w`` grid, ``[grid_h * grid_w, width]``
        (float32, tokens row-major); cached."""
        return _sincos_table(self, int(width), int(grid_h), int(grid_w))


@functools.lru_cache(maxsize=32)
def _sincos_table(encoding: SinCos2D, width: int, grid_h: int, grid_w: int) -> np.ndarray:
    return encoding.embed(grid_positions(grid_h, grid_w), width)


def grid_positions(grid_h: int, grid_w: int) -> np.ndarray:
    """``[grid_h * grid_w, 2]`` integer (row, col) of a full grid, tokens row-major."""
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    return np.stack([rows.reshape(-1), cols.reshape(-1)], axis=-1)


# ---------------------------------------------------------------------------------------------
# Rotary: RoPE and its extrapolation rules
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RoPE(PositionEncoding):
    """Rotary position embedding, unchanged at every size (plain extrapolation).

    Attributes:
      theta: the base ``b`` of the frequencies ``w_k = b^(-2k/d)``.
      layout: ``"fit"`` (height half, then width half), ``"nextdit"`` (axes interleaved) or
        ``"1d"`` (one position per token).
      train_size: tokens per side seen in training (``L_train``; 16 for 256^2 latents with
        patch 2); the rules scale by the sampled grid over it.

    A rule subclasses this and overrides :meth:`axis_scales` (how the grid gives a scale per
    axis), :meth:`axis_frequencies` (frequencies of one axis at a scale) and, for YaRN,
    :meth:`attention_factor`.
    """

    name: ClassVar[str] = "rope"
    _uses_time: ClassVar[bool] = False  # True: the frequencies follow the sampling time t
    theta: float = 10000.0
    layout: str = "fit"
    train_size: int = 16

    def __post_init__(self):
        _check_theta(self.theta, self.name)
        if self.layout not in LAYOUTS:
            raise ValueError(
                f"unknown RoPE layout {self.layout!r} in {self.name!r}; use one of {list(LAYOUTS)}"
            )
        if not isinstance(self.train_size, int) or self.train_size < 1:
            raise ValueError(
                f"{self.name}: train_size must be a positive integer (tokens per side seen in "
                f"training); got {self.train_size!r}"
            )

    @property
    def num_axes(self) -> int:
        return 1 if self.layout == "1d" else 2

    def axis_dim(self, head_dim: int) -> int:
        """``d``: the channels one axis owns (``D/2`` in 2-D, ``D`` in 1-D)."""
        return head_dim // self.num_axes

    def check_head_dim(self, head_dim: int) -> None:
        """A clear error unless every axis gets at least two frequencies."""
        step = 2 * self.num_axes
        if head_dim % step or head_dim < 2 * step:
            raise ValueError(
                f"{self.name} ({self.layout} layout) needs a head dim divisible by {step} and at "
                f"least {2 * step}; got {head_dim}"
            )

    def base_frequencies(self, d: int, base: float | None = None) -> np.ndarray:
        """``w_k = base^(-2k/d)``, ``k = 0..d/2-1`` (float64; ``base`` defaults to theta)."""
        base = self.theta if base is None else base
        return base ** (-np.arange(0, d, 2, dtype=np.float64) / d)

    def grid_scale(self, extent: int) -> float:
        """``max(extent / train_size, 1)``: the scale of one axis of ``extent`` tokens."""
        return max(extent / self.train_size, 1.0)

    def axis_scales(self, grid) -> tuple[float, ...]:
        """One scale per axis: the largest axis's, for both (the coupled rules)."""
        s = max(self.grid_scale(g) for g in grid)
        return (s,) * self.num_axes

    def axis_frequencies(self, d: int, scale: float, t) -> Any:
        """Frequencies ``[F]`` (or ``[*t.shape, F]``) of one axis of ``d`` channels at ``scale``."""
        del scale, t
        return self.base_frequencies(d)

    def attention_factor(self, grid) -> float:
        """The factor on cos and sin (on q and on k: the logits scale by its square)."""
        del grid
        return 1.0

    def frequencies(self, head_dim: int, grid=None, t=None) -> list:
        """Per axis, the frequencies for tokens of a ``grid`` (None: the training size)."""
        self.check_head_dim(head_dim)
        grid = self._grid(grid)
        d = self.axis_dim(head_dim)
        return [self.axis_frequencies(d, s, t) for s in self.axis_scales(grid)]

    def angles(self, positions, head_dim: int, *, grid=None, t=None, dtype=jnp.float32) -> Array:
        """The rotation angle of each channel pair, ``[..., N, D/2]``, in the layout's order."""
        freqs = [jnp.asarray(f, dtype) for f in self.frequencies(head_dim, grid, t)]
        positions = jnp.asarray(positions, dtype)
        if self.layout == "1d":
            return positions[..., None] * freqs[0][..., None, :]
        per_axis = [positions[..., a, None] * freqs[a][..., None, :] for a in range(2)]
        if self.layout == "fit":
            return jnp.concatenate(per_axis, axis=-1)
        return jnp.stack(per_axis, axis=-1).reshape(*per_axis[0].shape[:-1], -1)

    def rotate(self, x, positions, *, grid=None, t=None):
        """``x [B, N, H, D]`` with channel pair ``(2j, 2j+1)`` turned by angle ``a_j`` of its
        token: ``(x_2j, x_2j+1) -> (x_2j cos a - x_2j+1 sin a, x_2j+1 cos a + x_2j sin a)``,
        times :meth:`attention_factor`."""
        if x.ndim != 4:
            raise ValueError(f"{self.name}: x must be [B, N, H, D]; got shape {tuple(x.shape)}")
        _check_positions(positions, self.num_axes, self.name, num_tokens=x.shape[1])
        if t is not None and self._uses_time:
            t = jnp.asarray(t)
            if t.ndim == 1 and t.shape[0] != x.shape[0]:
                raise ValueError(
                    f"{self.name}: t must be a scalar or [B] with B = {x.shape[0]}; got {t.shape}"
                )
        dtype = jnp.promote_types(x.dtype, jnp.float32)
        a = self.angles(positions, x.shape[-1], grid=grid, t=t, dtype=dtype)[..., None, :]
        m = self.attention_factor(self._grid(grid))
        cos, sin = jnp.cos(a) * m, jnp.sin(a) * m
        pairs = x.astype(dtype).reshape(*x.shape[:-1], -1, 2)
        even, odd = pairs[..., 0], pairs[..., 1]
        out = jnp.stack([even * cos - odd * sin, odd * cos + even * sin], axis=-1)
        return out.reshape(x.shape).astype(x.dtype)

    def _grid(self, grid) -> tuple[int, ...]:
        if grid is None:
            return (self.train_size,) * self.num_axes
        grid = (grid,) if isinstance(grid, int) else tuple(grid)
        if len(grid) != self.num_axes or not all(isinstance(g, int) and g > 0 for g in grid):
            raise ValueError(
                f"{self.name}: grid must be {self.num_axes} positive token count(s) "
                f"({'(h, w)' if self.num_axes == 2 else '(n,)'}); got {grid!r}"
            )
        return grid


@dataclasses.dataclass(frozen=True)
class PI(RoPE):
    """Position interpolation: every frequency divided by the (largest) scale."""

    name: ClassVar[str] = "pi"

    def axis_frequencies(self, d, scale, t):
        return self.base_frequencies(d) / scale


@dataclasses.dataclass(frozen=True)
class NTK(RoPE):
    """NTK-aware: base ``theta * s^(d/(d-2))``, so the highest frequency is kept and the lowest
    (``k = d/2 - 1``) is exactly ``w / s``; one scale (the largest) for both axes."""

    name: ClassVar[str] = "ntk"

    def axis_frequencies(self, d, scale, t):
        return self.base_frequencies(d, self.theta * scale ** (d / (d - 2)))


@dataclasses.dataclass(frozen=True)
class VisionNTK(NTK):
    """NTK-aware with each axis at its own scale (FiTv2's decoupled rule)."""

    name: ClassVar[str] = "visionntk"

    def axis_scales(self, grid):
        return tuple(self.grid_scale(g) for g in grid)


def yarn_ramp(d: int, theta: float, train_size: int, beta_fast: float, beta_slow: float):
    """YaRN's ramp ``r_k``, ``k = 0..d/2-1``: 0 keeps frequency ``k``, 1 interpolates it.

    ``c(beta) = d ln(L / (2 pi beta)) / (2 ln theta)`` is the index whose wavelength spans
    ``L / beta`` tokens; ``lo = max(floor(c(beta_fast)), 0)``, ``hi = min(ceil(c(beta_slow)),
    d - 1)`` (``hi += 0.001`` when equal), ``r_k = clip((k - lo) / (hi - lo), 0, 1)``.
    """

    def index(beta):
        return d * math.log(train_size / (2 * math.pi * beta)) / (2 * math.log(theta))

    lo = max(math.floor(index(beta_fast)), 0)
    hi = min(math.ceil(index(beta_slow)), d - 1)
    if lo == hi:
        hi += 0.001
    return np.clip((np.arange(d // 2, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class YaRN(RoPE):
    """YaRN: the frequencies whose wavelength is short against ``train_size`` are kept, the
    long ones interpolated (``w / s``), a linear ramp between; cos and sin are scaled by
    ``1 + 0.1 ln s`` (``s`` the largest scale; 1 when ``s <= 1``)."""

    name: ClassVar[str] = "yarn"
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.beta_slow < self.beta_fast:
            raise ValueError(
                f"{self.name}: need 0 < beta_slow < beta_fast; got beta_slow={self.beta_slow}, "
                f"beta_fast={self.beta_fast}"
            )

    def axis_frequencies(self, d, scale, t):
        w = self.base_frequencies(d)
        ramp = yarn_ramp(d, self.theta, self.train_size, self.beta_fast, self.beta_slow)
        return (w / scale) * ramp + w * (1.0 - ramp)

    def attention_factor(self, grid):
        s = max(self.grid_scale(g) for g in grid)
        return 0.1 * math.log(s) + 1.0 if s > 1 else 1.0


@dataclasses.dataclass(frozen=True)
class VisionYaRN(YaRN):
    """YaRN with each axis at its own scale; the attention factor keeps the largest scale."""

    name: ClassVar[str] = "visionyarn"

    def axis_scales(self, grid):
        return tuple(self.grid_scale(g) for g in grid)


@dataclasses.dataclass(frozen=True)
class _NextDiTRule(RoPE):
    """The Next-DiT rules: one scale ``max(sqrt(h w) / train_size, 1)`` for both axes."""

    _uses_time: ClassVar[bool] = True
    layout: str = "nextdit"

    def axis_scales(self, grid):
        s = max(math.prod(grid) ** (1.0 / len(grid)) / self.train_size, 1.0)
        return (s,) * self.num_axes

    def _time(self, t):
        if t is None:
            raise ValueError(
                f"{self.name} depends on the sampling time: pass t (a scalar or [B], noise 0, "
                "data 1) to rotate"
            )
        return jnp.asarray(t)


@dataclasses.dataclass(frozen=True)
class TimeSwitch(_NextDiTRule):
    """Next-DiT's released time-aware rule: position interpolation ``w / s`` while
    ``t < watershed`` (near noise: the global layout), NTK with base ``theta * s`` after."""

    name: ClassVar[str] = "time_switch"
    watershed: float = 0.3

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.watershed <= 1.0:
            raise ValueError(f"{self.name}: watershed must be in [0, 1]; got {self.watershed}")

    def axis_frequencies(self, d, scale, t):
        t = self._time(t)
        interpolated = self.base_frequencies(d) / scale
        ntk = self.base_frequencies(d, self.theta * scale)
        return jnp.where((t < self.watershed)[..., None], interpolated, ntk)


def _partial_interpolation(base: np.ndarray, d: int, scale: float, d_split, dtype) -> Array:
    """``w_k scale^(-min(2k / d_split, 1))``: NTK-like below index ``d_split``, exact
    interpolation at and beyond it (``d_split`` a number or an array, broadcast on ``k``)."""
    exponent = jnp.minimum(jnp.arange(0, d, 2, dtype=dtype) / d_split, 1.0)
    return jnp.asarray(base, dtype) * jnp.asarray(scale, dtype) ** -exponent


@dataclasses.dataclass(frozen=True)
class FrequencyAware(_NextDiTRule):
    """Next-DiT's frequency-aware rule (inferred form): ``w_k s^(-min(2k / d_target, 1))``
    with ``d_target = d log_theta(train_size / 2 pi)``, the index whose wavelength is the
    training length; exact interpolation beyond it. Needs ``train_size > 2 pi``."""

    name: ClassVar[str] = "frequency_aware"
    _uses_time: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        if self.train_size <= 2 * math.pi:
            raise ValueError(
                f"{self.name} needs train_size > 2 pi (a training length longer than one turn "
                f"of the highest frequency); got {self.train_size}"
            )

    def axis_frequencies(self, d, scale, t):
        d_target = d * math.log(self.train_size / (2 * math.pi)) / math.log(self.theta)
        return _partial_interpolation(self.base_frequencies(d), d, scale, d_target, jnp.float32)


@dataclasses.dataclass(frozen=True)
class TimeAware(_NextDiTRule):
    """Next-DiT's time-aware rule (inferred form): the frequency-aware rule with ``d_target``
    replaced by ``d_t = (d - 1) t + 1``: interpolation of every ``k >= 1`` at ``t = 0``,
    NTK with base ``theta * s`` at ``t = 1``."""

    name: ClassVar[str] = "time_aware"

    def axis_frequencies(self, d, scale, t):
        t = self._time(t)
        dtype = jnp.promote_types(t.dtype, jnp.float32)
        d_t = ((d - 1) * t + 1).astype(dtype)[..., None]
        return _partial_interpolation(self.base_frequencies(d), d, scale, d_t, dtype)


# ---------------------------------------------------------------------------------------------
# Names and specs
# ---------------------------------------------------------------------------------------------

POSITIONS: Registry[type] = Registry(
    "position encoding",
    {
        cls.name: cls
        for cls in (
            SinCos2D,
            RoPE,
            PI,
            NTK,
            VisionNTK,
            YaRN,
            VisionYaRN,
            TimeSwitch,
            FrequencyAware,
            TimeAware,
        )
    },
)
register_position = registrar(POSITIONS, "register_position", "a frozen PositionEncoding dataclass")


def make_position(name: str, **kwargs) -> PositionEncoding:
    """The encoding registered as ``name`` with ``kwargs`` (checked against its fields)."""
    cls = POSITIONS[name]
    check_keys(kwargs, init_fields(cls), f"position encoding {name!r}")
    return cls(**coerce(cls, kwargs))


def position_from_spec(spec: str) -> PositionEncoding:
    """``"visionyarn,train_size=16"`` -> ``VisionYaRN(train_size=16)``."""
    name, kwargs = parse_spec(spec, kind="position encoding", example=SPEC_EXAMPLE)
    return make_position(name, **kwargs)


def _check_theta(theta: float, name: str) -> None:
    if not isinstance(theta, (int, float)) or not theta > 1:
        raise ValueError(f"{name}: theta (the frequency base) must be a number > 1; got {theta!r}")


def _check_positions(positions, num_axes: int, name: str, num_tokens: int | None = None):
    shape = tuple(np.shape(positions))
    want = "[..., N, 2] (row, col)" if num_axes == 2 else "[..., N]"
    ok = len(shape) >= num_axes and (num_axes == 1 or shape[-1] == 2)
    n = shape[-num_axes] if ok else None
    if not ok or (num_tokens is not None and n != num_tokens):
        raise ValueError(
            f"{name}: positions must be {want}"
            + (f" with N = {num_tokens} tokens" if num_tokens is not None else "")
            + f"; got shape {shape}"
        )
