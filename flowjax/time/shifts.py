"""The resolution (timestep) shift ``t' = t / (t + alpha (1 - t))`` and its SD3 / Flux rules.

Time convention (everywhere in flowjax): noise ``x0`` at ``t = 0``, data ``x1`` at ``t = 1``,
``x_t = t * x1 + (1 - t) * x0``; generation integrates forward from 0 to 1 and the log-SNR of
the linear path is ``lambda(t) = logit(t)``. SD3, diffusers and Flux parametrise time by the
*noise level* ``tau = 1 - t``; every formula below has been converted to our ``t``
(docs/maths/convention.md), with the conversion noted where it matters.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def check_alpha(alpha: Any, what: str = "alpha") -> None:
    """Refuse a shift ``alpha`` that is not a finite number > 0 (a traced value passes)."""
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
    check_alpha(alpha)
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
