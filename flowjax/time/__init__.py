"""Time in flowjax: training-time laws, inference grids and the resolution shift.

Time convention (everywhere in flowjax): noise ``x0`` at ``t = 0``, data ``x1`` at ``t = 1``,
``x_t = t * x1 + (1 - t) * x0``; generation integrates forward from 0 to 1.

- :mod:`flowjax.time.laws`: the laws ``p(t)`` objectives draw training times from
  (``"logit_normal,loc=0.4,scale=1"``), :func:`~flowjax.time.laws.sample_pair`.
- :mod:`flowjax.time.grids`: the inference grids ``t_0 < ... < t_N`` solvers step along
  (``"shifted,alpha=3"``, ``"0,0.5,1"``), :func:`~flowjax.time.grids.validate_grid`.
- :mod:`flowjax.time.shifts`: ``t' = t / (t + alpha (1 - t))`` and the SD3 / Flux rules for
  ``alpha``, used by both.
"""

from flowjax.time import grids, laws, shifts

__all__ = ["grids", "laws", "shifts"]
