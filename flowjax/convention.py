"""Converters between flowjax's time convention and the opposite one (used only at the edges).

flowjax: noise ``x0 ~ N(0, I)`` at ``t = 0``, data at ``t = 1``, ``x_t = t x1 + (1 - t) x0``,
velocity ``v = x1 - x0`` (toward data), generation integrates from 0 to 1.

Much published code (diffusers, SD3, Flux, MeanFlow, rectified-flow++; docs/maths/convention.md)
puts data at ``tau = 0`` and noise at ``tau = 1``: ``z_tau = (1 - tau) x + tau eps``, velocity
``u = eps - x`` (toward noise), sampling ``tau: 1 -> 0``. The dictionary::

    tau = 1 - t,           u_theirs(x, tau) = -v_ours(x, 1 - tau)
    noise level sigma (diffusers, SD3, Flux) = tau = 1 - t;  diffusers timestep = 1000 sigma
    logit-normal(m, s) over tau == logit-normal(-m, s) over t
    an interval [a, b] of tau  == the interval [1 - b, 1 - a] of t
    their "x0 prediction" (clean data) == our x1_hat

MeanFlow (Geng et al.) uses ``r <= t`` in its own convention and an average velocity
``u_MF(z, r, t) = (z_t - z_r) / (t - r)``; ours is ``ubar(x, s, e) = (Phi_{s->e}(x) - x) /
(e - s)`` with ``s <= e``. With ``s = 1 - t_MF`` and ``e = 1 - r_MF``::

    ubar(x, s, e) = -u_MF(x, r = 1 - e, t = 1 - s)

Its networks embed ``(t_MF, h = t_MF - r_MF)``, raw (no x1000); flowjax's average-velocity
networks embed ``(t, t_end - t)``. :func:`meanflow_network` turns the apply function of a
network trained by MeanFlow's code into flowjax's ``u(x, s, cond, t_end=e)`` by feeding it
``t = 1 - s`` and an end time whose difference to it is ``h = e - s``.
"""

from __future__ import annotations

from typing import Callable


def time_from_opposite(tau):
    """``t = 1 - tau`` (their time, data at 0, to ours, data at 1); its own inverse."""
    return 1.0 - tau


def interval_from_opposite(interval: tuple[float, float]) -> tuple[float, float]:
    """An interval ``[a, b]`` of their time is ``[1 - b, 1 - a]`` of ours."""
    a, b = interval
    if not 0.0 <= a <= b <= 1.0:
        raise ValueError(f"interval must satisfy 0 <= a <= b <= 1; got {interval}")
    return 1.0 - b, 1.0 - a


def logit_normal_loc_from_opposite(loc: float) -> float:
    """Logit-normal location over their time -> over ours (``m_ours = -m_theirs``)."""
    return -loc


def velocity_from_opposite(velocity_fn: Callable) -> Callable:
    """``u(x, tau, cond)`` (data at tau = 0, pointing to noise) -> ``v(x, t, cond)`` of flowjax."""

    def v(x, t, cond=None):
        return -velocity_fn(x, 1.0 - t, cond)

    return v


def velocity_from_diffusers(model_fn: Callable, num_train_timesteps: int = 1000) -> Callable:
    """A diffusers flow model ``model_fn(x, timestep, cond) = eps - x_data`` at noise level
    ``sigma = timestep / num_train_timesteps`` -> ``v(x, t, cond)`` (``sigma = 1 - t``)."""

    def v(x, t, cond=None):
        return -model_fn(x, num_train_timesteps * (1.0 - t), cond)

    return v


def average_velocity_from_meanflow(u_mf: Callable) -> Callable:
    """``u_MF(z, r, t, cond)`` in MeanFlow's convention -> ``ubar(x, s, cond, e)`` of flowjax."""

    def ubar(x, s, cond=None, e=None):
        if e is None:
            raise ValueError("an average velocity needs the end time e")
        return -u_mf(x, 1.0 - e, 1.0 - s, cond)

    return ubar


def meanflow_network(apply_fn: Callable) -> Callable:
    """Adapt the flowjax-style ``apply_fn(params, x, t, cond, t_end=...)`` of a network whose
    weights were trained by MeanFlow's code (inputs ``t_MF`` and ``h = t_MF - r_MF``, output
    ``u_MF``) to flowjax's average velocity ``apply(params, x, s, cond, t_end=e)``.

    The network embeds ``t`` and ``t_end - t``; it receives ``t = 1 - s`` and
    ``t_end = (1 - s) + (e - s)``, so it sees exactly ``(t_MF, h) = (1 - s, e - s)``, and its
    output is negated.
    """

    def apply(params, x, t, cond=None, *, t_end, **kwargs):
        t_mf = 1.0 - t
        return -apply_fn(params, x, t_mf, cond, t_end=t_mf + (t_end - t), **kwargs)

    return apply
