"""One JSON file of keyed sampler schedules, written atomically: BOSS grids and learned settings.

A store file maps ``key -> entry.to_dict()`` (sorted keys, one JSON object). Entries are frozen
dataclasses with a ``key`` property (the settings the schedule was computed for: solver, steps,
calibration size, checkpoint step, ...), ``to_dict()`` and ``from_dict(d)``. Reading re-keys
every entry by its ``key`` property, so a file written under an older key format is still read
and its entries are found under the current keys. Writing goes through a temporary file in the
same directory and an atomic rename: a reader never sees half a file. Subclasses set
``entry_type``: :class:`flowjax.solvers.boss.ScheduleStore` (``boss_schedules.json``) and
:class:`flowjax.solvers.learned.LearnedStore` (``learned_schedules.json``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any, ClassVar


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
