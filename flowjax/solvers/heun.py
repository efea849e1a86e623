"""Heun's method (explicit trapezoid, as in EDM and 2-rectified-flow++). Order 2, 2 NFE per step.

    x'      = x + h v(x, t)
    x_next  = x + h/2 [v(x, t) + v(x', t + h)]

The corrector is evaluated at the end of every step, including t = 1 (a velocity model is
finite there), so every step costs exactly two evaluations.
"""

from __future__ import annotations

import dataclasses

from flowjax.solvers.base import register_solver
from flowjax.types import Solver


@dataclasses.dataclass(frozen=True)
class Heun(Solver):
    name: str = "heun"
    order: int = 2
    nfe_per_step: int = 2

    def step(self, f, x, t, t_next, state, index, num_steps):
        h = t_next - t
        v0 = f(x, t)
        v1 = f(x + h * v0, t_next)
        return x + 0.5 * h * (v0 + v1), state


register_solver("heun", Heun)
