"""Metric writers: ``metrics.jsonl`` (always) and TensorBoard event files (tensorboardX, which
needs no TensorFlow). Only process 0 writes."""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

import jax


def _plain(value):
    value = float(value)
    return value if math.isfinite(value) else str(value)


class MetricWriter:
    """Append-only JSON lines ``{"step": k, "<name>": value, ...}`` plus TensorBoard scalars.

    On resume from step ``k``, :meth:`truncate_after` drops lines logged after ``k`` by the
    interrupted run, so the file never holds two values for one step.
    """

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled and tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            lines = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(tmp, self.path)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled or not metrics:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), int(step))

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """All records of ``workdir/metrics.jsonl``."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip()]
