"""Preemption and divergence handling for the training loop.

- :class:`PreemptionGuard` turns SIGTERM / SIGINT into a flag the loop polls between steps, so
  the loop can save a checkpoint and exit cleanly (exit code 0) within seconds.
- :class:`NonFiniteLossError` is raised when a loss is NaN or Inf; it names the first bad step.
- :class:`ExitOnSignal` makes SIGTERM end the process at once (exit 0) where nothing can be
  lost: during the setup, and during an evaluation (a committed checkpoint precedes it).
- User mistakes are :class:`SetupError` s (the command line prints one line and exits 2):
  a changed config, a second writer, a checkpoint of another model, a run none of whose
  checkpoints can be restored (:class:`NoUsableCheckpointError`).
"""

from __future__ import annotations

import os
import re
import select
import signal
import sys
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


class ConfigChangedError(SetupError):
    """The config differs from the one the run in the workdir was trained with."""


class WorkdirLockedError(SetupError):
    """Another live process is writing to the workdir."""


class CheckpointMismatchError(SetupError):
    """A checkpoint holds a state of other shapes or structure than the config's model: not a
    corrupt checkpoint, a different run (it is never moved aside)."""


class NoUsableCheckpointError(SetupError):
    """Every checkpoint of the run failed verification: resuming would silently start over."""


class CheckpointSaveError(RuntimeError):
    """Writing a checkpoint failed (full disk, read-only or missing directory, ...)."""

    def __init__(self, step: int, directory: str, cause: BaseException | str):
        self.step = step
        reason = (cause if isinstance(cause, str) else describe_error(cause)).rstrip(".")
        super().__init__(
            f"saving the checkpoint at step {step} in {directory} failed: {reason}. Free space "
            f"or fix the directory, then re-run the same command to resume from the last "
            f"checkpoint."
        )


def describe_error(err: BaseException) -> str:
    """``"TypeName: first line"`` of an exception, without object reprs such as
    ``<bound method ...>`` that carry no information for a user."""
    text = re.sub(r"<(bound method|function|built-in method)[^>]*>", "", str(err))
    text = re.sub(r"\s*\[(tensorstore_spec|source_locations|os_error_code)=.*", "", text)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if len(first) > 300:
        first = first[:300] + "..."
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


class ExitOnSignal:
    """Context manager: SIGTERM ends the process at once with exit code 0 (``message`` is
    printed first), even while the main thread waits in a long XLA computation.

    For the parts of a job that may be abandoned because nothing is lost (the setup before
    the first step; an evaluation, which a committed checkpoint precedes). A Python signal
    handler runs only between bytecodes, so a compiled sampler running for a minute would
    delay it by a minute; the handler therefore also writes to a wakeup pipe that a helper
    thread watches. ``cleanup`` (e.g. releasing the workdir lock) runs before the exit.

    Active only in the main thread of a single-process job (in a multi-host job every process
    must leave a collective together: there SIGTERM keeps its checkpoint-then-stop meaning).
    A SIGTERM that arrived before the context (``pending=True``) exits on entry.
    """

    def __init__(self, message: str, *, cleanup=None, pending: bool = False, enabled=True):
        self.message = message
        self.cleanup = cleanup
        self.pending = pending
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self._once = threading.Lock()
        self._previous = None
        self._old_fd = None
        self._pipes = None
        self._thread = None

    def _exit(self, *_):
        if not self._once.acquire(blocking=False):
            return
        try:
            if self.cleanup is not None:
                self.cleanup()
        finally:
            print(self.message, file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(0)

    def _watch(self, wake_r: int, stop_r: int) -> None:
        while True:
            ready, _, _ = select.select([wake_r, stop_r], [], [])
            if stop_r in ready:
                return
            data = os.read(wake_r, 64)
            if signal.SIGTERM in data:
                self._exit()

    def __enter__(self):
        if not self.enabled:
            return self
        if self.pending:
            self._exit()
        wake_r, wake_w = os.pipe()
        stop_r, stop_w = os.pipe()
        os.set_blocking(wake_w, False)
        self._pipes = (wake_r, wake_w, stop_r, stop_w)
        self._previous = signal.signal(signal.SIGTERM, self._exit)
        self._old_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, args=(wake_r, stop_r), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if not self.enabled:
            return False
        signal.set_wakeup_fd(self._old_fd)
        signal.signal(signal.SIGTERM, self._previous)
        wake_r, wake_w, stop_r, stop_w = self._pipes
        os.write(stop_w, b"x")
        self._thread.join()
        for fd in self._pipes:
            os.close(fd)
        return False
