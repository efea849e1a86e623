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
:mod:`flowjax.convention` (the opposite time convention, at the edges),
:mod:`flowjax.workflows` (the jobs as functions: sample a run, reflow pairs, BOSS, calibrate,
latents, search, score). Command lines: the ``flowjax`` console script (:mod:`flowjax.cli`:
``flowjax train``, ``flowjax sample``, ... ; ``flowjax --help`` lists them), also run as
``python -m flowjax.<command>``. Importing ``flowjax`` imports no JAX: every name below is
resolved on first use.

:func:`integrate` is :func:`flowjax.solvers.sample` (integrate ``dx/dt = v(x, t, cond)`` over
a time grid with a solver); it is not exported as ``flowjax.sample`` because that name is the
sampling command line's module, which would replace the function once imported. No name in
``__all__`` is also a submodule's name (tested). :mod:`flowjax.time` is imported but not in
``__all__`` (``from flowjax import *`` would hide the standard library's ``time``).
"""

import importlib

__version__ = "0.1.0"

#: Exported name -> (module, attribute); attribute None: the module itself. Resolved on first
#: use, so ``import flowjax`` imports no JAX and ``import flowjax.solvers`` imports only
#: what the solvers need (no model, no objective).
_EXPORTS = {
    "objectives": ("flowjax.objectives", None),
    "paths": ("flowjax.paths", None),
    "pyramid": ("flowjax.pyramid", None),
    "solvers": ("flowjax.solvers", None),
    "LinearPath": ("flowjax.paths", "LinearPath"),
    "CosinePath": ("flowjax.paths", "CosinePath"),
    "VPPath": ("flowjax.paths", "VPPath"),
    "make_path": ("flowjax.paths", "make_path"),
    "make_sampler": ("flowjax.solvers", "make_sampler"),
    "make_solver": ("flowjax.solvers", "make_solver"),
    "integrate": ("flowjax.solvers", "sample"),
    "time": ("flowjax.time", None),  # not in __all__: see above
}

__all__ = [name for name in _EXPORTS if name != "time"]


def __getattr__(name: str):
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
