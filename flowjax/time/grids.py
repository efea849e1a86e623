"""Inference time grids: where a solver evaluates the velocity.

Time convention (everywhere in flowjax): noise ``x0`` at ``t = 0``, data ``x1`` at ``t = 1``,
``x_t = t * x1 + (1 - t) * x0``; generation integrates forward from 0 to 1 and the log-SNR of
the linear path is ``lambda(t) = logit(t)``. SD3, diffusers and Flux parametrise time by the
*noise level* ``tau = 1 - t``; every formula below has been converted to our ``t``
(docs/maths/convention.md), with the conversion noted where it matters.

A grid is a strictly increasing 1-D **numpy float64** array ``t_0 < t_1 < ... < t_N`` in
``[0, 1]``; ``num_steps`` is always the number of solver steps, so a grid has ``num_steps + 1``
points and normally ends at ``t_N = 1``. Grids are static configuration (their length fixes the
shape of the compiled sampling loop), hence numpy rather than ``jax.Array``; the solvers convert
them to the working dtype. :data:`GRIDS` is the registry; :func:`make_grid` builds one by name,
:func:`grid_from_spec` from the ``name,k=v`` text form (:mod:`flowjax.spec`) or a list of
times, and :func:`validate_grid` checks a custom one.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from flowjax.registry import Registry, registrar
from flowjax.spec import coerce, parse_spec
from flowjax.time.shifts import check_alpha, shift_time


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
    check_alpha(alpha)
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


#: Inference grids by name; each entry is ``fn(num_steps, **kwargs) -> grid``.
GRIDS: Registry = Registry(
    "time grid",
    {
        "uniform": uniform_grid,
        "shifted": shifted_grid,
        "logsnr": logsnr_uniform_grid,
        "edm": edm_grid,
        "diffusers": diffusers_flow_grid,
        "custom": custom_grid,
    },
)
register_grid = registrar(GRIDS, "register_grid", "``fn(num_steps, **kwargs) -> grid``")

SPEC_EXAMPLE = "shifted,alpha=3"


def make_grid(name: str, num_steps: int, **kwargs) -> np.ndarray:
    """Build an inference grid by name (``num_steps + 1`` points, numpy float64).

    Names (:data:`GRIDS`) and their keyword arguments: ``"uniform"`` (t_min, t_max),
    ``"shifted"`` (alpha, t_min), ``"logsnr"`` (t_min, t_max), ``"edm"`` (rho, sigma_min,
    sigma_max), ``"diffusers"`` (shift, num_train_timesteps), ``"custom"`` (times).
    """
    fn = GRIDS[name]
    params = list(inspect.signature(fn).parameters)[1:]
    try:
        inspect.signature(fn).bind(num_steps, **kwargs)
    except TypeError as err:
        raise ValueError(
            f"time grid {name!r} accepts keyword arguments {params}; got {sorted(kwargs)} ({err})"
        ) from None
    return validate_grid(fn(num_steps, **coerce(fn, kwargs)))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_grid_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Parse a grid given as text (command lines, the grid part of ``config.eval.samplers``).

    ``"uniform"``, ``"logsnr"``, ``"edm,rho=5"``, ``"shifted,alpha=3"`` give a name and
    keyword arguments (the ``name,k=v`` form of :func:`flowjax.spec.parse_spec`); a
    comma-separated list of numbers, ``"0,0.4,0.8,1"``, is a user-given grid
    (``("custom", {"times": [...]})``). Use with :func:`make_grid`.
    """
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise ValueError("empty time-grid spec; give a name such as 'uniform' or a list of times")
    times = [_number(p) for p in parts]
    if all(t is not None for t in times):
        return "custom", {"times": times}
    try:
        return parse_spec(spec, kind="time grid", example=SPEC_EXAMPLE)
    except ValueError as err:
        raise ValueError(
            f"{err} (a time grid may also be a list of times such as '0,0.5,1')"
        ) from None


def grid_from_spec(spec: str, num_steps: int) -> np.ndarray:
    """``make_grid`` of a text spec (see :func:`parse_grid_spec`) for ``num_steps`` steps."""
    name, kwargs = parse_grid_spec(spec)
    if name == "custom":
        return custom_grid(num_steps, kwargs["times"])
    return make_grid(name, num_steps, **kwargs)
