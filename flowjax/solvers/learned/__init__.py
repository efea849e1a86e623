"""Learned samplers: step grids and bespoke coefficients fitted against a reference solve.

- :mod:`~flowjax.solvers.learned.grid`: the monotone grid parametrisation (logits <-> grid) and
  the initial grids;
- :mod:`~flowjax.solvers.learned.calibration`: the reference solve, the endpoint loss, the
  optimiser, :func:`learn_grid` and :func:`heldout_error`;
- :mod:`~flowjax.solvers.learned.bespoke`: learned non-stationary coefficients on any solver
  (:func:`~flowjax.solvers.learned.bespoke.learn`) and the stored-setting lookup used by the
  evaluator and ``flowjax.sample``;
- :mod:`~flowjax.solvers.learned.store`: :class:`LearnedSchedule`, its key and the JSON store
  ``<workdir>/learned_schedules.json`` (:class:`LearnedStore`; BOSS's store shares the file
  format, :class:`~flowjax.solvers.learned.store.JsonScheduleStore`).

The maths: docs/maths/learned_solvers.md.
"""

from flowjax.solvers.learned import bespoke
from flowjax.solvers.learned.calibration import (
    Calibration,
    check_calibration,
    endpoint_loss,
    grid_loss_fn,
    heldout_error,
    learn_grid,
    optimise,
    parse_reference,
    prepare_calibration,
    reference_endpoints,
    resolve_init,
)
from flowjax.solvers.learned.grid import (
    INIT_CANDIDATES,
    grid_from_logits,
    grid_from_logits_np,
    init_grid,
    logits_from_grid,
)
from flowjax.solvers.learned.store import (
    STORE_NAME,
    JsonScheduleStore,
    LearnedSchedule,
    LearnedStore,
    schedule_key,
)

__all__ = [
    "bespoke",
    "Calibration",
    "check_calibration",
    "endpoint_loss",
    "grid_loss_fn",
    "heldout_error",
    "learn_grid",
    "optimise",
    "parse_reference",
    "prepare_calibration",
    "reference_endpoints",
    "resolve_init",
    "INIT_CANDIDATES",
    "grid_from_logits",
    "grid_from_logits_np",
    "init_grid",
    "logits_from_grid",
    "STORE_NAME",
    "JsonScheduleStore",
    "LearnedSchedule",
    "LearnedStore",
    "schedule_key",
]
