"""Preemption and divergence handling for the training loop.

- :class:`PreemptionGuard` turns SIGTERM / SIGINT into a flag the loop polls between steps, so
  the loop can save a checkpoint and exit cleanly (exit code 0) within seconds.
- :class:`NonFiniteLossError` is raised when a loss is NaN or Inf; it names the first bad step.
"""

from __future__ import annotations

import signal
import threading


class SetupError(ValueError):
    """The job could not be set up from its config (bad value, missing data set, ...)."""


class NonFiniteLossError(RuntimeError):
    def __init__(self, step: int, name: str, value: float, last_checkpoint: int | None):
        self.step = step
        kept = (
            f"the last good checkpoint (step {last_checkpoint}) is kept"
            if last_checkpoint is not None
            else "no checkpoint had been saved yet"
        )
        super().__init__(
            f"training stopped: {name} = {value} (non-finite) at step {step}; {kept}. Lower the "
            f"learning rate, enable grad clipping (--config.optim.grad_clip=1.0) or check the data."
        )


class PreemptionGuard:
    """Context manager catching SIGTERM and SIGINT (main thread only) into ``.requested``."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = signals
        self.requested = False
        self.signal_name = None
        self._previous = {}

    def _handler(self, signum, frame):
        del frame
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False
