"""The flow-map sampler of average-velocity models (MeanFlow, FreeFlow students).

An average-velocity model ``u(x, s, cond, e)`` approximates ``(Phi_{s->e}(x) - x) / (e - s)``,
the mean velocity along the ODE trajectory from time ``s`` to ``e`` (noise at 0, data at 1;
docs/maths/convention.md). One step jumps along the whole interval::

    x_{k+1} = x_k + (t_{k+1} - t_k) * u(x_k, t_k, cond, t_{k+1})

so one step on the grid ``[0, 1]`` is MeanFlow's 1-NFE sampler and ``[0, 0.5, 1]`` its 2-NFE
sampler. With the exact average velocity every grid gives the exact ODE solution; errors come
only from the network. 1 NFE per step.
"""

from __future__ import annotations

import dataclasses

from flowjax.solvers.base import register_solver
from flowjax.types import Solver


@dataclasses.dataclass(frozen=True)
class FlowMap(Solver):
    name: str = "flowmap"
    order: int = 1  # nominal: exact for an exact average velocity on any grid
    nfe_per_step: int = 1
    needs_end_time: bool = True

    def step(self, f, x, t, t_next, state, index, num_steps):
        return x + (t_next - t) * f(x, t, t_next), state


register_solver("flowmap", FlowMap)
