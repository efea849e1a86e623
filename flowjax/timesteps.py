"""The former single module of training-time laws, grids and shifts (now :mod:`flowjax.time`).

Re-exports every public name of :mod:`flowjax.time.laws`, :mod:`flowjax.time.grids` and
:mod:`flowjax.time.shifts` under its old name, so code written against
``flowjax.timesteps`` keeps working; new code imports the modules of :mod:`flowjax.time`.
"""

from flowjax.time.grids import (
    GRIDS,
    custom_grid,
    diffusers_flow_grid,
    edm_grid,
    grid_from_spec,
    logsnr_uniform_grid,
    make_grid,
    parse_grid_spec,
    shifted_grid,
    uniform_grid,
    validate_grid,
)
from flowjax.time.laws import (
    LAWS,
    MODE_A_MAX,
    MODE_A_MIN,
    CosMap,
    Discrete,
    LogitNormal,
    ModeSampler,
    Shifted,
    TimeSampler,
    Uniform,
    UShaped,
    make_time_sampler,
    num_equal_rows,
    sample_pair,
    time_sampler_from_spec,
    time_sampler_spec,
)
from flowjax.time.shifts import check_alpha, flux_shift, sd3_resolution_shift, shift_time

__all__ = [
    "GRIDS",
    "LAWS",
    "MODE_A_MAX",
    "MODE_A_MIN",
    "CosMap",
    "Discrete",
    "LogitNormal",
    "ModeSampler",
    "Shifted",
    "TimeSampler",
    "UShaped",
    "Uniform",
    "check_alpha",
    "custom_grid",
    "diffusers_flow_grid",
    "edm_grid",
    "flux_shift",
    "grid_from_spec",
    "logsnr_uniform_grid",
    "make_grid",
    "make_time_sampler",
    "num_equal_rows",
    "parse_grid_spec",
    "sample_pair",
    "sd3_resolution_shift",
    "shift_time",
    "shifted_grid",
    "time_sampler_from_spec",
    "time_sampler_spec",
    "uniform_grid",
    "validate_grid",
]
