"""What a user sees while a job runs: progress bars and the command lines' logging.

- :func:`progress_bar`: a tqdm bar, quiet when stderr is not a terminal (a log file, a CI
  job) unless asked for, and quiet on every process but 0 of a multi-process job.
- :class:`StepBar`: a bar whose rate and ETA leave out the first update, the step that
  compiles the jitted function (seconds to minutes, against milliseconds for later steps).
- :func:`setup_logging`: the command lines' logging: WARNING unless the user asks for more
  with absl's ``--verbosity`` / ``-v`` (INFO in a script or notebook), WARNING for absl's own
  logger (orbax's per-save chatter), and without JAX's INFO line about backends it probed and did
  not find ("Unable to initialize backend 'tpu'" on a CPU or GPU machine). A backend the
  user asked for that fails still raises in JAX, and JAX's warnings still print.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from absl import flags
from absl import logging as absl_logging
from tqdm import tqdm

__all__ = ["StepBar", "progress_bar", "setup_logging"]

_BACKEND_PROBE = "Unable to initialize backend"


class StepBar(tqdm):
    """A tqdm bar whose rate (and so its ETA) starts after the first update.

    The first :meth:`update` after the bar is made (the first step of a run or of a resumed
    run, where ``jax.jit`` compiles) moves the counter without a timing: it is counted in
    ``initial``, and the clock restarts when it returns. The rate is then that of the steps
    after it, ``(n - initial) / elapsed`` (or tqdm's moving average of the same intervals),
    and the ETA ``(total - n) / rate`` does not include the compilation.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._timed = False

    def update(self, n: float = 1) -> bool | None:
        if self._timed or self.disable:
            return super().update(n)
        self._timed = True
        self.n += n
        self.initial = self.last_print_n = self.n
        self.start_t = self.last_print_t = self._time()
        self.refresh()
        return True


def progress_bar(
    total: int | None = None,
    *,
    desc: str,
    unit: str = "it",
    enabled: bool | None = None,
    initial: int = 0,
    first_step_compiles: bool = False,
) -> tqdm:
    """A progress bar for a job's loop (sampling batches, evaluation settings, searches).

    ``enabled=None`` shows it only when stderr is a terminal; ``True`` / ``False`` force it.
    Only process 0 of a multi-process job shows one. ``first_step_compiles`` returns a
    :class:`StepBar` (its ETA leaves out the first, compiling, update).
    """
    disable = None if enabled is None else not enabled
    if disable is None and not _stderr_is_terminal():
        disable = True
    if not disable and _process_index() != 0:
        disable = True
    cls = StepBar if first_step_compiles else tqdm
    return cls(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=bool(disable),
        dynamic_ncols=True,
        mininterval=0.5,
    )


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _process_index() -> int:
    jax = sys.modules.get("jax")  # never imports jax (the command lines import it late)
    return jax.process_index() if jax is not None else 0


class _DropBackendProbe(logging.Filter):
    """Drops JAX's below-WARNING records about a backend it could not start (a probe)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not str(record.msg).startswith(_BACKEND_PROBE)


def setup_logging(level: int = logging.INFO) -> None:
    """The command lines' logging (see the module docstring); call it first in ``main``.

    Under an absl command line (flags parsed) the level is absl's ``--verbosity``: WARNING
    unless the user asks for more (``--verbosity=0`` or ``-v 0``: INFO; ``-v 1``: DEBUG), so a
    job prints its results, not absl-formatted INFO lines. Elsewhere (a script, a notebook):
    ``level``.
    """
    if flags.FLAGS.is_parsed() and "verbosity" in flags.FLAGS:
        if not flags.FLAGS["verbosity"].present:
            absl_logging.set_verbosity(absl_logging.WARNING)
    else:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save INFO chatter
    probe = logging.getLogger("jax._src.xla_bridge")
    if not any(isinstance(f, _DropBackendProbe) for f in probe.filters):
        probe.addFilter(_DropBackendProbe())
