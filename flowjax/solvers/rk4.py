"""The classical fourth-order Runge-Kutta method. Order 4, 4 NFE per step.

k1 = v(x, t)                     k2 = v(x + h/2 k1, t + h/2)
k3 = v(x + h/2 k2, t + h/2)      k4 = v(x + h k3, t + h)
x_next = x + h/6 (k1 + 2 k2 + 2 k3 + k4)
"""

from __future__ import annotations

import dataclasses

from flowjax.solvers.base import register_solver
from flowjax.types import Solver


@dataclasses.dataclass(frozen=True)
class RK4(Solver):
    name: str = "rk4"
    order: int = 4
    nfe_per_step: int = 4

    def step(self, f, x, t, t_next, state, index, num_steps):
        h = t_next - t
        half = t + 0.5 * h
        k1 = f(x, t)
        k2 = f(x + 0.5 * h * k1, half)
        k3 = f(x + 0.5 * h * k2, half)
        k4 = f(x + h * k3, t_next)
        return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4), state


register_solver("rk4", RK4)
