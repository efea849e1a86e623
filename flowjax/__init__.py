"""flowjax: flow-matching generative models in JAX.

Time convention, everywhere: noise ``x0 ~ N(0, I)`` at ``t = 0``, data ``x1`` at ``t = 1``,
``x_t = t x1 + (1 - t) x0`` on the linear path, and sampling integrates ``dx/dt = v(x, t)``
forward from 0 to 1. Conversions from the opposite convention (diffusers, SD3, MeanFlow's
code) happen only at the edges.

Subpackages: :mod:`flowjax.paths`, :mod:`flowjax.time` (training-time laws, grids, shifts),
:mod:`flowjax.objectives` (flow matching, MeanFlow, reflow, FreeFlow, Decomposable Flow Matching),
:mod:`flowjax.pyramid` (the Laplacian pyramid),
:mod:`flowjax.solvers`, :mod:`flowjax.models`,
:mod:`flowjax.data`, :mod:`flowjax.evaluation`, :mod:`flowjax.training`,
:mod:`flowjax.parallel`, :mod:`flowjax.search` (inference-time particle search),
:mod:`flowjax.convention` (the opposite time convention, at the edges). Command lines:
``python -m flowjax.main`` (train), ``python -m flowjax.sample`` (sample a run),
``python -m flowjax.reflow`` (teacher pairs for reflow and distillation),
``python -m flowjax.search`` (reward-guided search on a trained run).

:func:`integrate` is :func:`flowjax.solvers.sample` (integrate ``dx/dt = v(x, t, cond)`` over
a time grid with a solver); it is not exported as ``flowjax.sample`` because that name is the
sampling command line's module, which would replace the function once imported. No name in
``__all__`` is also a submodule's name (tested). :mod:`flowjax.time` is imported but not in
``__all__`` (``from flowjax import *`` would hide the standard library's ``time``).
"""

from flowjax import objectives, paths, pyramid, solvers
from flowjax import time as time  # noqa: F401  (not in __all__: see above)
from flowjax.paths import CosinePath, LinearPath, VPPath, make_path
from flowjax.solvers import make_sampler, make_solver
from flowjax.solvers import sample as integrate

__version__ = "0.1.0"

__all__ = [
    "objectives",
    "paths",
    "pyramid",
    "solvers",
    "LinearPath",
    "CosinePath",
    "VPPath",
    "make_path",
    "make_sampler",
    "make_solver",
    "integrate",
]
