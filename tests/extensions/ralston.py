"""An example solver added from outside the library: Ralston's method (order 2, 2 NFE/step).

k1 = v(x, t);  k2 = v(x + 2/3 h k1, t + 2/3 h);  x_next = x + h (k1 / 4 + 3 k2 / 4).
"""

import dataclasses

from flowjax.solvers import Solver, register_solver


@dataclasses.dataclass(frozen=True)
class Ralston(Solver):
    name: str = "ralston"
    order: int = 2
    nfe_per_step: int = 2

    def step(self, f, x, t, t_next, state, index, num_steps):
        h = t_next - t
        k1 = f(x, t)
        k2 = f(x + (2.0 / 3.0) * h * k1, t + (2.0 / 3.0) * h)
        return x + h * (0.25 * k1 + 0.75 * k2), state


register_solver("ralston", Ralston)
