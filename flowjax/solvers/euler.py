"""Euler's method: ``x_{k+1} = x_k + (t_{k+1} - t_k) v(x_k, t_k)``. Order 1, 1 NFE per step."""

from __future__ import annotations

import dataclasses

from flowjax.solvers.base import register_solver
from flowjax.types import Solver


@dataclasses.dataclass(frozen=True)
class Euler(Solver):
    name: str = "euler"
    order: int = 1
    nfe_per_step: int = 1

    def step(self, f, x, t, t_next, state, index, num_steps):
        return x + (t_next - t) * f(x, t), state


register_solver("euler", Euler)
