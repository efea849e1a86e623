"""Explicit midpoint method. Order 2, 2 NFE per step.

x_mid  = x + h/2 v(x, t)
x_next = x + h v(x_mid, t + h/2)
"""

from __future__ import annotations

import dataclasses

from flowjax.solvers.base import register_solver
from flowjax.types import Solver


@dataclasses.dataclass(frozen=True)
class Midpoint(Solver):
    name: str = "midpoint"
    order: int = 2
    nfe_per_step: int = 2

    def step(self, f, x, t, t_next, state, index, num_steps):
        h = t_next - t
        x_mid = x + 0.5 * h * f(x, t)
        return x + h * f(x_mid, t + 0.5 * h), state


register_solver("midpoint", Midpoint)
