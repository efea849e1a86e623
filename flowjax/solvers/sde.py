"""SDE sampling of flow models with the ODE's marginals, and the linear -> VP conversion.

Time convention: noise ``x0 ~ N(0, I)`` at ``t = 0``, data at ``t = 1``; a path is
``x_t = alpha_t x1 + sigma_t x0`` (:mod:`flowjax.paths`). docs/maths/sde_search.md.

**Score from velocity.** A velocity ``u(x, t) = E[alpha'_t x1 + sigma'_t x0 | x_t = x]`` fixes
the noise prediction and hence the score exactly (:meth:`flowjax.paths.Path.convert`)::

    score(x, t) = (alpha_t u - alpha'_t x) / (sigma_t (alpha'_t sigma_t - alpha_t sigma'_t))
                = (t u - x) / (1 - t)                                     (linear path)

**An SDE with the same marginals.** For any diffusion coefficient ``g(t) >= 0``,

    dx = [u(x, t) + g(t)^2 / 2 * score(x, t)] dt + g(t) dW

has the marginals ``p_t`` of the ODE ``dx = u dt``: its Fokker-Planck equation
``d_t p = -div((u + g^2/2 grad log p) p) + g^2/2 lap p = -div(u p)`` is the ODE's continuity
equation. ``g = 0`` is the ODE. :func:`sample_sde` integrates it with Euler-Maruyama,

    x' = x + dt [u + g^2/2 score] + g sqrt(dt) xi,        xi ~ N(0, I),

on a grid ``t_0 < ... < t_N = 1``, except the last interval, which is the deterministic jump to
the posterior mean ``x_N = x1_hat(x_{N-1}, t_{N-1})`` (Tweedie; for the linear path it is
exactly the Euler step to ``t = 1``). The score is singular at ``t = 1``; the jump never
evaluates there, and it spends no velocity evaluation beyond the one at ``t_{N-1}``, so a run
costs exactly ``N`` NFE like the Euler ODE solver.

**Linear -> VP conversion.** A model trained on the linear path can be sampled along another
path ``(abar_s, sbar_s)`` (``s``: 0 = noise, 1 = data) by matching signal-to-noise ratios and
rescaling: with ``t(s) = abar_s / (abar_s + sbar_s)`` (so ``t / (1 - t) = abar / sbar``) and
``c_s = abar_s + sbar_s``, the process ``xbar_s = c_s x_{t(s)}`` follows the target path, and
its velocity is (chain rule)::

    ubar(xbar, s) = (c'_s / c_s) xbar + c_s t'(s) u(xbar / c_s, t(s)),
    t'(s) = (abar' sbar - abar sbar') / (abar + sbar)^2,        c'_s = abar' + sbar'.

:func:`convert_velocity` returns ``ubar``; each evaluation is one evaluation of ``u`` (1 NFE).
The VP path (``flowjax.paths.VPPath``, beta_min 0.1, beta_max 20) has ``abar_0 ~ 6.6e-3``, so
sampling starts from ``N(0, I)`` at ``s = 0`` with a negligible mismatch; ``sbar'`` is
infinite at ``s = 1``, so use solvers that do not evaluate there (Euler, Euler-Maruyama with
the Tweedie jump) or stop short of ``s = 1``. With ``(abar, sbar) = (s, 1 - s)`` the conversion
is the identity.

Diffusion coefficients (``g`` in the time of the path being sampled; :func:`make_diffusion`):
``"ode"`` (``g = 0``), ``"square,eta=3"`` (``g = eta (1 - t)^2``, the choice of Kim et al. on the
VP path), ``"sit,eta=1"`` (``g^2 = 2 eta (1 - t)``, SiT), ``"constant,eta=1"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import paths
from flowjax.registry import Registry, registrar
from flowjax.solvers.base import check_inputs
from flowjax.spec import check_keys, coerce, parse_spec
from flowjax.time import grids
from flowjax.types import Array, VelocityFn

Diffusion = Callable[[Array], Array]


# -- diffusion coefficients -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DiffusionCoefficient:
    """``g(t)`` of the SDE; ``kind`` in ``("ode", "square", "sit", "constant")``."""

    kind: str = "square"
    eta: float = 3.0

    def __post_init__(self):
        DIFFUSIONS[self.kind]  # unknown diffusion 'x'; choose one of [...]
        if not np.isfinite(self.eta) or self.eta < 0:
            raise ValueError(f"diffusion eta must be a finite number >= 0; got {self.eta}")

    @property
    def is_zero(self) -> bool:
        return self.kind == "ode" or self.eta == 0.0

    def __call__(self, t: Array) -> Array:
        return DIFFUSIONS[self.kind](jnp.asarray(t), self.eta)


#: Diffusion coefficients ``g(t; eta)`` by name.
DIFFUSIONS: Registry[Callable[[Array, float], Array]] = Registry(
    "diffusion",
    {
        "ode": lambda t, eta: jnp.zeros_like(t),
        "square": lambda t, eta: eta * (1.0 - t) ** 2,
        "sit": lambda t, eta: jnp.sqrt(2.0 * eta * jnp.clip(1.0 - t, 0.0, None)),
        "constant": lambda t, eta: jnp.full_like(t, eta),
    },
)
register_diffusion = registrar(DIFFUSIONS, "register_diffusion", "``g(t, eta) -> array like t``")


def make_diffusion(
    spec: str | DiffusionCoefficient | None = "square,eta=3",
) -> DiffusionCoefficient:
    """``"square,eta=3"`` -> ``DiffusionCoefficient("square", 3.0)``; ``None``, ``"ode"``: g = 0."""
    if isinstance(spec, DiffusionCoefficient):
        return spec
    if spec is None:
        return DiffusionCoefficient("ode", 0.0)
    name, kwargs = parse_spec(spec, kind="diffusion", example="square,eta=3")
    check_keys(kwargs, ["eta"], f"diffusion {spec!r}")
    kwargs = coerce(DiffusionCoefficient, kwargs)
    if name == "ode":
        kwargs["eta"] = 0.0
    return DiffusionCoefficient(name, **kwargs)


# -- score, drift and one Euler-Maruyama step ---------------------------------------------------


def score_from_velocity(path: paths.Path, u: Array, x: Array, t: Array) -> Array:
    """``grad_x log p_t(x)`` from the velocity ``u`` at ``(x, t)`` (``t`` scalar or ``[B]``)."""
    return path.convert(u, x, t, src="velocity", dst="score")


def sde_drift(path: paths.Path, u: Array, x: Array, t: Array, g: Array) -> Array:
    """``u + g^2 / 2 * score``; with ``g = 0`` exactly ``u`` (the score is not computed)."""
    g = paths.bcast(g, x)
    return u + 0.5 * g**2 * score_from_velocity(path, u, x, t)


def em_step(
    path: paths.Path,
    diffusion: DiffusionCoefficient,
    u: Array,
    x: Array,
    t: Array,
    t_next: Array,
    noise: Array,
) -> Array:
    """One Euler-Maruyama step from ``t`` to ``t_next`` given ``u = u(x, t)`` (no new NFE).

    ``t``, ``t_next``: scalars or ``[B]`` (particles may sit at different times). ``noise``:
    standard normal like ``x``. With a zero diffusion this is Euler's step.
    """
    t = jnp.asarray(t, x.dtype)
    dt = paths.bcast(jnp.asarray(t_next, x.dtype) - t, x)
    if diffusion.is_zero:
        return x + dt * u
    g = diffusion(t)
    drift = sde_drift(path, u, x, t, g)
    return x + dt * drift + paths.bcast(g, x) * jnp.sqrt(dt) * noise


def tweedie(path: paths.Path, u: Array, x: Array, t: Array) -> Array:
    """Posterior mean ``x1_hat = E[x1 | x_t = x]`` from the velocity ``u`` at ``(x, t)``."""
    return path.convert(u, x, t, src="velocity", dst="x1")


# -- linear -> other path ------------------------------------------------------------------------


def conversion_coefficients(target: paths.Path, s: Array):
    """``(t(s), c_s, t'(s), c'_s)`` of the linear -> ``target`` conversion (module docstring)."""
    a, b = target.alpha(s), target.sigma(s)
    da, db = target.d_alpha(s), target.d_sigma(s)
    c = a + b
    t = a / c
    dt = (da * b - a * db) / c**2
    return t, c, dt, da + db


def convert_velocity(velocity_fn: VelocityFn, target: paths.Path) -> VelocityFn:
    """The velocity ``ubar(xbar, s, cond)`` along ``target`` of a linear-path model ``u``.

    ``xbar_s = c_s x_{t(s)}`` with ``t(s) = abar_s / (abar_s + sbar_s)``, ``c_s = abar_s +
    sbar_s``; ``ubar = (c'/c) xbar + c t' u(xbar / c, t(s))`` (module docstring). One call of
    ``ubar`` is one call of ``u``. ``s`` has shape ``[B]`` like every velocity time.
    """

    def ubar(xbar, s, cond=None):
        t, c, dt, dc = conversion_coefficients(target, s)
        cb, dtb, dcb = (paths.bcast(v, xbar) for v in (c, dt, dc))
        u = velocity_fn(xbar / cb, t, cond)
        return (dcb / cb) * xbar + cb * dtb * u

    ubar.velocity_kind = "instantaneous"
    return ubar


# -- the sampler --------------------------------------------------------------------------------


def sample_sde(
    velocity_fn: VelocityFn,
    x0: Array,
    grid,
    key: Array,
    cond: Any = None,
    *,
    path: paths.Path | None = None,
    diffusion: str | DiffusionCoefficient | None = "square,eta=3",
    return_trajectory: bool = False,
):
    """Euler-Maruyama for ``dx = [u + g^2/2 score] dt + g dW`` over ``grid``, ending at ``t = 1``.

    Args:
      velocity_fn: ``u(x, t[B], cond)`` along ``path`` (a linear-path model, or
        :func:`convert_velocity` of one for another path).
      x0: ``[B, ...]`` starting points at ``grid[0]`` (noise, ``N(0, I)``, at ``t = 0``).
      grid: increasing times ``[N + 1]`` with ``grid[-1] = 1``; ``N >= 1``.
      key: PRNG key for the Brownian increments.
      cond: optional per-example conditioning ``[B, ...]``.
      path: the path ``u`` belongs to (default linear).
      diffusion: ``g(t)`` (see :func:`make_diffusion`); ``"ode"`` gives the Euler ODE sampler.
      return_trajectory: also return ``[N + 1, B, ...]`` states.

    Steps ``0..N-2`` are Euler-Maruyama; the last is the Tweedie jump ``x1_hat(x, t_{N-1})``.
    Costs exactly ``N`` evaluations of ``velocity_fn``. Jit-able (a ``lax.scan``).
    """
    path = paths.LinearPath() if path is None else path
    diffusion = make_diffusion(diffusion)
    check_inputs(x0, cond)
    if not isinstance(grid, jax.core.Tracer):
        g_np = grids.validate_grid(np.asarray(grid, dtype=np.float64))
        if abs(float(g_np[-1]) - 1.0) > 1e-12:
            raise ValueError(f"an SDE grid must end at t = 1 (data); it ends at {g_np[-1]}")
    ts = jnp.asarray(grid, dtype=x0.dtype)
    num_steps = ts.shape[0] - 1
    batch = x0.shape[0]

    def f(x, t):
        return velocity_fn(x, jnp.full((batch,), t, x.dtype), cond)

    def body(x, inputs):
        t, t_next, k, is_last = inputs
        u = f(x, t)
        x_em = em_step(path, diffusion, u, x, t, t_next, jax.random.normal(k, x.shape, x.dtype))
        x_next = jnp.where(is_last, tweedie(path, u, x, t), x_em)
        return x_next, (x_next if return_trajectory else None)

    keys = jax.random.split(key, num_steps)
    is_last = jnp.arange(num_steps) == num_steps - 1
    x, traj = jax.lax.scan(body, x0, (ts[:-1], ts[1:], keys, is_last))
    if return_trajectory:
        return x, jnp.concatenate([x0[None], traj], axis=0)
    return x
