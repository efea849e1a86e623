"""Resumable stages of an experiment script: each stage runs once, in its own directory under
the script's root, and its wall time is kept in ``<root>/times.json`` (a stage recorded there
is skipped when the script runs again). A stage whose training was stopped by SIGTERM (its
summary says ``preempted``) is not recorded: the script exits, and running it again resumes
that stage from its checkpoint."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable


class Stages:
    """Runs (or resumes) stages and records their wall times in ``<root>/times.json``."""

    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.path = os.path.join(root, "times.json")
        self.times = json.load(open(self.path)) if os.path.exists(self.path) else {}

    def dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def run(self, name: str, fn: Callable[[str], object]) -> str:
        """``fn(workdir)`` unless ``name`` finished before; returns the stage's directory."""
        workdir = self.dir(name)
        if name in self.times:
            print(f"[{name}] done before ({self.times[name]:.0f} s)")
            return workdir
        print(f"[{name}] ...")
        start = time.perf_counter()
        out = fn(workdir)
        if isinstance(out, dict) and out.get("preempted"):
            print(f"[{name}] stopped by SIGTERM; run the same command again to resume it")
            sys.exit(143)
        self.times[name] = time.perf_counter() - start  # the last session's time, if resumed
        with open(self.path, "w") as f:
            json.dump(self.times, f, indent=1)
        return workdir
