"""Closed forms of the shared Gaussian fixture (docs/maths/flow_matching.md), for tests.

Data ``x1 ~ N(mu, q^2 I)`` per dimension (``q`` is the data std, not a time), noise
``x0 ~ N(0, I)``, linear path ``x_t = t x1 + (1 - t) x0`` (noise at t=0, data at t=1). Then
``x_t ~ N(m_t, sd_t^2 I)`` and every quantity below is exact:

    m_t            = t mu
    sd_t           = sqrt(t^2 q^2 + (1 - t)^2)
    sd_dot_t       = d sd_t / dt = (t q^2 - (1 - t)) / sd_t
    v(x, t)        = E[x1 - x0 | x_t = x] = mu + sd_dot_t (x - m_t) / sd_t
                   = mu + (t q^2 - (1 - t)) / (t^2 q^2 + (1 - t)^2) * (x - t mu)
    Phi_{s->e}(x)  = m_e + (sd_e / sd_s) (x - m_s)           (flow map of dx/dt = v)
    ubar(x, s, e)  = (Phi_{s->e}(x) - x) / (e - s)            (average velocity, s != e)
    x1_hat(x, t)   = E[x1 | x_t = x] = x + (1 - t) v(x, t)
    score(x, t)    = -(x - m_t) / sd_t^2 = (t v - x) / (1 - t)

``q = 0`` is point-mass data (straight flow, ``v = (mu - x) / (1 - t)``).

All functions are plain arithmetic, so they accept Python floats, numpy arrays and jax arrays
(also under ``jit``) and return the same kind. Times and ``x`` must broadcast against each
other: pass scalar times, or reshape ``t`` of shape ``[B]`` to ``[B, 1, ...]`` yourself. Use
float64 and avoid ``t = 1`` where a formula divides by ``1 - t``.
"""

from __future__ import annotations


def mean(t, mu):
    """``m_t = t mu``."""
    return t * mu


def std(t, q):
    """``sd_t = sqrt(t^2 q^2 + (1 - t)^2)``."""
    return (t**2 * q**2 + (1.0 - t) ** 2) ** 0.5


def std_dot(t, q):
    """``d sd_t / dt = (t q^2 - (1 - t)) / sd_t``."""
    return (t * q**2 - (1.0 - t)) / std(t, q)


def velocity(x, t, mu, q):
    """Marginal velocity ``v(x, t) = mu + sd_dot_t (x - m_t) / sd_t``."""
    return mu + std_dot(t, q) * (x - mean(t, mu)) / std(t, q)


def flow_map(x, s, e, mu, q):
    """Flow map ``Phi_{s->e}(x) = m_e + (sd_e / sd_s) (x - m_s)``: ODE solution at ``e``."""
    return mean(e, mu) + std(e, q) / std(s, q) * (x - mean(s, mu))


def average_velocity(x, s, e, mu, q):
    """``ubar(x, s, e) = (Phi_{s->e}(x) - x) / (e - s)``, in a form that is exact at ``e = s``.

    Since ``Phi - x = (e - s) mu + (sd_e - sd_s) (x - m_s) / sd_s`` and
    ``(sd_e - sd_s) / (e - s) = (q^2 (e + s) - (2 - e - s)) / (sd_e + sd_s)``::

        ubar = mu + (q^2 (e + s) - (2 - e - s)) / (sd_e + sd_s) * (x - m_s) / sd_s

    which has no cancellation and equals ``v(x, s)`` at ``e = s``.
    """
    slope = (q**2 * (e + s) - (2.0 - e - s)) / (std(e, q) + std(s, q))
    return mu + slope * (x - mean(s, mu)) / std(s, q)


def x1_hat(x, t, mu, q):
    """Posterior mean of the data ``E[x1 | x_t = x] = x + (1 - t) v(x, t)``."""
    return x + (1.0 - t) * velocity(x, t, mu, q)


def score(x, t, mu, q):
    """``grad_x log p_t(x) = -(x - m_t) / sd_t^2``."""
    return -(x - mean(t, mu)) / std(t, q) ** 2
