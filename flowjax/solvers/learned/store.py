"""Stored sampler schedules: one JSON file of keyed entries, and the learned settings in it.

A store file maps ``key -> entry.to_dict()`` (sorted keys, one JSON object). Entries are frozen
dataclasses with a ``key`` property (the settings the schedule was computed for: solver, steps,
calibration size, checkpoint step, ...), ``to_dict()`` and ``from_dict(d)``. Reading re-keys
every entry by its ``key`` property, so a file written under an older key format is still read
and its entries are found under the current keys. Writing goes through a temporary file in the
same directory and an atomic rename: a reader never sees half a file. Subclasses set
``entry_type``: :class:`flowjax.solvers.boss.ScheduleStore` (``boss_schedules.json``) and
:class:`LearnedStore` (``learned_schedules.json``, entries :class:`LearnedSchedule` keyed by
:func:`schedule_key`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from flowjax.time import grids

#: The file name of the learned settings in a run's directory.
STORE_NAME = "learned_schedules.json"


class StoredSchedule:
    """What the entries of a store share: ``times`` (the ``K + 1`` grid times, noise -> data),
    :attr:`grid` (them as a validated numpy grid) and :meth:`to_dict` (the JSON form); a
    subclass is a frozen dataclass with a ``key`` property and ``from_dict``."""

    times: tuple[float, ...]

    @property
    def grid(self) -> np.ndarray:
        return grids.validate_grid(np.asarray(self.times, np.float64))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class JsonScheduleStore:
    """Schedules in one JSON file, by key (the module docstring describes the file)."""

    entry_type: ClassVar[Any]  # a dataclass with .key, .to_dict() and .from_dict(d)

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def load_all(self) -> dict[str, Any]:
        """Every stored entry, keyed by its ``key`` property."""
        if not os.path.exists(self.path):
            return {}
        with open(self.path, encoding="utf-8") as f:
            raw = json.load(f)
        entries = [self.entry_type.from_dict(v) for v in raw.values()]
        return {entry.key: entry for entry in entries}

    def get(self, key: str) -> Any | None:
        """The entry stored under ``key``, or ``None``."""
        return self.load_all().get(key)

    def put(self, entry: Any) -> None:
        """Store ``entry`` under ``entry.key`` (replacing one of the same key), atomically."""
        entries = self.load_all()
        entries[entry.key] = entry
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".schedules.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({k: v.to_dict() for k, v in sorted(entries.items())}, f, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """``(entry, reused)``: the stored entry for ``key``, or ``compute()`` stored."""
        found = self.get(key)
        if found is not None:
            return found, True
        entry = compute()
        if entry.key != key:
            raise ValueError(f"computed schedule has key {entry.key!r}, expected {key!r}")
        self.put(entry)
        return entry, False


@dataclasses.dataclass(frozen=True)
class LearnedSchedule(StoredSchedule):
    """A learned sampler setting and how it was made.

    Attributes:
      kind: ``"grid"`` (learned times for ``solver``) or ``"bespoke"`` (learned times and
        coefficients on top of ``solver``; see :mod:`flowjax.solvers.learned.bespoke`).
      solver: the (base) solver's name; nfe: its evaluations per sample.
      times: the ``K + 1`` learned grid times (noise -> data).
      weights: bespoke only: ``[J + 1][J]`` learned affine weights (else empty).
      loss, initial_loss: calibration loss of the learned / initial setting.
      init: the grid spec it started from; reference: the reference solve; slack: LD3 slack.
      requested_init: the ``init`` argument of the calibration (``"best"`` or a spec; part of
        the key); ``""`` in schedules stored before it was recorded, read as ``init``.
      num_calibration: ``M``; seed: calibration seed; step: checkpoint step (or -1).
      iters, lr: optimiser settings; calibration_nfe: batched evaluations spent (reference +
        one forward pass per iterate; each gradient adds one VJP per evaluation);
        seconds: wall time of the calibration.
    """

    kind: str
    solver: str
    nfe: int
    times: tuple[float, ...]
    loss: float
    initial_loss: float
    init: str
    reference: str
    num_calibration: int
    seed: int
    step: int = -1
    slack: float = 0.0
    iters: int = 0
    lr: float = 0.0
    calibration_nfe: int = 0
    seconds: float = 0.0
    weights: tuple[tuple[float, ...], ...] = ()
    requested_init: str = ""

    @property
    def key(self) -> str:
        return schedule_key(
            self.kind,
            self.solver,
            self.nfe,
            self.num_calibration,
            self.reference,
            self.seed,
            self.step,
            self.slack,
            init=self.requested_init or self.init,
        )

    @classmethod
    def from_dict(cls, d: dict) -> LearnedSchedule:
        d = dict(d)
        d["times"] = tuple(float(t) for t in d["times"])
        d["weights"] = tuple(tuple(float(w) for w in row) for row in d.get("weights", ()))
        return cls(**d)


def schedule_key(
    kind: str,
    solver: str,
    nfe: int,
    num_calibration: int,
    reference: str,
    seed: int,
    step: int = -1,
    slack: float = 0.0,
    *,
    init: str,
) -> str:
    """The store key of a calibration: every setting that changes its result.

    ``init`` is the requested initial grid (``"best"`` or a grid spec): two calibrations that
    differ only in it are different schedules.
    """
    return (
        f"{kind}|{solver}|NFE={int(nfe)}|M={int(num_calibration)}|ref={reference}|"
        f"seed={int(seed)}|slack={float(slack):g}|init={init}|step={int(step)}"
    )


class LearnedStore(JsonScheduleStore):
    """Learned schedules in one JSON file (``<workdir>/learned_schedules.json``), by key.

    Files written before the key held the initial grid are read too: their entries are
    re-keyed with ``init=<their recorded init>`` (see
    :class:`JsonScheduleStore`).
    """

    entry_type = LearnedSchedule

    def latest(self, kind: str, solver: str, nfe: int) -> LearnedSchedule | None:
        """The stored schedule of (kind, solver, NFE) from the newest checkpoint step (then
        the largest calibration set, then the lowest seed)."""
        found = [
            s
            for s in self.load_all().values()
            if s.kind == kind and s.solver == solver and s.nfe == int(nfe)
        ]
        if not found:
            return None
        return max(found, key=lambda s: (s.step, s.num_calibration, -s.seed))
