"""ODE samplers for flow models (noise at t=0 -> data at t=1), driven by one ``lax.scan``.

Public API: :class:`Solver` (the contract), :func:`sample`, :func:`make_sampler`,
:func:`make_solver` and the solvers :class:`Euler`, :class:`Heun`, :class:`Midpoint`,
:class:`RK4`, :class:`DPMSolverPP` (``dpm++1``, ``dpm++2m``, ``dpm++3m``); the adaptive
diffrax reference :class:`AdaptiveSolve`; :class:`FlowMap` (``flowmap``) samples
average-velocity models ``u(x, t, cond, t_end)`` (MeanFlow, FreeFlow). :mod:`sde` samples the
SDE with the ODE's marginals (Euler-Maruyama) and converts a linear-path velocity to the VP path.
"""

from flowjax.solvers import sde
from flowjax.solvers.adaptive import AdaptiveSolve
from flowjax.solvers.base import (
    check_velocity_kind,
    make_sampler,
    make_solver,
    register_solver,
    sample,
    solver_names,
)
from flowjax.solvers.dpm_solver_pp import DPMSolverPP, DynamicThreshold
from flowjax.solvers.euler import Euler
from flowjax.solvers.flow_map import FlowMap
from flowjax.solvers.heun import Heun
from flowjax.solvers.midpoint import Midpoint
from flowjax.solvers.rk4 import RK4
from flowjax.types import Solver, VelocityFn
from flowjax.velocity import (
    average_velocity,
    diagonal_velocity,
    instantaneous_velocity,
    velocity_kind,
)

__all__ = [
    "Solver",
    "VelocityFn",
    "sample",
    "make_sampler",
    "make_solver",
    "register_solver",
    "solver_names",
    "Euler",
    "Heun",
    "Midpoint",
    "RK4",
    "DPMSolverPP",
    "DynamicThreshold",
    "AdaptiveSolve",
    "FlowMap",
    "sde",
    "average_velocity",
    "instantaneous_velocity",
    "diagonal_velocity",
    "velocity_kind",
    "check_velocity_kind",
]
