"""Adaptive reference solves through diffrax, reporting the NFE actually spent.

A fixed-grid solver is judged against a high-accuracy solution of the same ODE from the same
starting noise: ``dx/dt = v(x, t, cond)`` integrated forward from ``t0`` (noise side, default 0)
to ``t1`` (data side, default 1) with an embedded Runge-Kutta pair and a PID step-size
controller (diffrax's ``Tsit5`` / ``Dopri5`` / ``Dopri8`` with ``PIDController``). The whole
batch is one ODE state, so the step sizes are shared; the error norm is the max over all
elements (``norm="max"``, the strictest) or diffrax's RMS norm (``norm="rms"``).

NFE accounting: diffrax evaluates the vector field once to start the first-same-as-last
chain, then ``stages`` times per *attempted* step (accepted or rejected): 6 for the FSAL
pairs Tsit5 and Dopri5, 13 for Dopri8. So ``nfe = 1 + stages * num_steps`` (checked against
a call counter in the tests).

Example::

    solve = AdaptiveSolve("tsit5", rtol=1e-6, atol=1e-6)
    x1, stats = solve(velocity_fn, x0)          # stats["nfe"], stats["num_steps"], ...
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from flowjax.registry import Registry
from flowjax.solvers.base import check_inputs
from flowjax.types import Array, VelocityFn

#: diffrax methods by name: ``(diffrax solver class name, function evaluations per step)``.
#: diffrax itself (with equinox, optimistix, lineax: about a second to import) is imported by
#: the first solve, not by every command that imports the solvers.
_METHODS: Registry[tuple[str, int]] = Registry(
    "adaptive method",
    {"tsit5": ("Tsit5", 6), "dopri5": ("Dopri5", 6), "dopri8": ("Dopri8", 13)},
)


def _max_norm(tree) -> Array:
    return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(tree)]))


@dataclasses.dataclass(frozen=True)
class AdaptiveSolve:
    """An adaptive diffrax solve of the flow ODE (a value: its fields are its settings).

    Attributes:
      method: ``"tsit5"`` (default), ``"dopri5"`` or ``"dopri8"``.
      rtol, atol: tolerances of the PID step-size controller.
      norm: ``"max"`` (every element meets the tolerance) or ``"rms"`` (diffrax default).
      max_steps: attempted steps before diffrax raises an error.
    """

    method: str = "tsit5"
    rtol: float = 1e-5
    atol: float = 1e-5
    norm: str = "max"
    max_steps: int = 4096

    def __post_init__(self):
        _METHODS[self.method]  # unknown adaptive method 'x'; choose one of [...]
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"rtol and atol must be > 0; got rtol={self.rtol}, atol={self.atol}")
        if self.norm not in ("max", "rms"):
            raise ValueError(f"norm must be 'max' or 'rms'; got {self.norm!r}")

    @property
    def stages(self) -> int:
        return _METHODS[self.method][1]

    def __call__(
        self,
        velocity_fn: VelocityFn,
        x0: Array,
        cond: Any = None,
        *,
        t0: float = 0.0,
        t1: float = 1.0,
    ) -> tuple[Array, dict[str, Array]]:
        """Solve from ``x0`` at ``t0`` to ``t1``; returns ``(x(t1), stats)``.

        ``stats`` holds ``nfe``, ``num_steps`` (attempted), ``num_accepted_steps`` and
        ``num_rejected_steps`` as int arrays. Traceable (jit it with the velocity closed over).
        """
        check_inputs(x0, cond)
        if not (0.0 <= float(t0) < float(t1) <= 1.0):
            raise ValueError(f"need 0 <= t0 < t1 <= 1 (noise -> data); got t0={t0}, t1={t1}")
        batch = x0.shape[0]
        import diffrax  # heavy and optional: only an adaptive solve needs it

        def vf(t, x, args):
            return velocity_fn(x, jnp.full((batch,), t, dtype=x.dtype), args)

        controller = diffrax.PIDController(
            rtol=self.rtol,
            atol=self.atol,
            **({"norm": _max_norm} if self.norm == "max" else {}),
        )
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf),
            getattr(diffrax, _METHODS[self.method][0])(),
            t0=jnp.asarray(t0, x0.dtype),
            t1=jnp.asarray(t1, x0.dtype),
            dt0=None,
            y0=x0,
            args=cond,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=controller,
            max_steps=self.max_steps,
        )
        steps = sol.stats["num_steps"]
        stats = {
            "nfe": 1 + self.stages * steps,
            "num_steps": steps,
            "num_accepted_steps": sol.stats["num_accepted_steps"],
            "num_rejected_steps": sol.stats["num_rejected_steps"],
        }
        return sol.ys[0], stats
