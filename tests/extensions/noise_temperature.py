"""An example objective added from outside the library, with its own sampler option.

Rectified flow trained as :class:`~flowjax.objectives.FlowMatching` trains it, sampled at a
*temperature* ``s``: the sampler starts from ``s * x0`` instead of the noise ``x0`` (noise at
t = 0, data at t = 1) and solves the same ODE. ``"euler:4@temperature=0.7"`` in
``config.eval.samplers`` or ``flowjax.sample --sampler`` selects it (metric label
``euler_nfe4_temperature0.7``); ``s = 1`` is the standard sampler and ``s = 0`` sends every
sample along the one trajectory that starts at the origin. Declaring the option is what makes
the sampler grammar accept it; without the declaration it is refused.
"""

import dataclasses
from typing import ClassVar

import jax

from flowjax import solvers
from flowjax.objectives import FlowMatching, register_objective
from flowjax.time import grids
from flowjax.types import SamplerOption


@dataclasses.dataclass(frozen=True)
class TemperatureFlowMatching(FlowMatching):
    sampler_options: ClassVar = {
        "temperature": SamplerOption("temperature", help="the scale of the starting noise")
    }

    def make_sampler(self, velocity, solver, nfe, grid_spec, *, temperature=None):
        if temperature is None:
            return None  # the standard sampler
        if len(temperature) != 1:
            raise ValueError("@temperature takes one number, e.g. 'euler:4@temperature=0.7'")
        scale = float(temperature[0])
        plain = solvers.make_sampler(
            solver, velocity, grids.grid_from_spec(grid_spec, solver.num_steps_for_nfe(nfe))
        )

        @jax.jit
        def run(params, x0, cond=None):
            return plain(params, scale * x0, cond)

        return run


register_objective(
    "temperature_flow_matching",
    lambda cfg, num_classes: TemperatureFlowMatching(num_classes=num_classes),
)
