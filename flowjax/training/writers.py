"""Metric writers: ``metrics.jsonl`` (always) and TensorBoard event files (tensorboardX, which
needs no TensorFlow). Only process 0 writes.

TensorBoard (``<workdir>/tensorboard``) gets every scalar of ``metrics.jsonl`` (losses, the
learning rate ``train/lr``, throughput, evaluation scores), the scores of the weights the
run started from (``untrained/<name>``, or ``initial/<name>`` for a fine-tune, a flat line
from step 0), the config as text once per session (tag ``config``) and the sample figure of
each evaluation (tag ``samples``, the same picture as ``samples.png``). View them with
``tensorboard --logdir=<workdir>/tensorboard`` (installed with the package). It is optional:
``tensorboard=False`` (``train.tensorboard``) writes ``metrics.jsonl`` only, and so does a
machine without tensorboardX (with a warning).
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Mapping

import jax
import numpy as np
from PIL import Image  # pillow: a dependency of matplotlib, and what tensorboardX's images use

log = logging.getLogger(__name__)


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
            try:
                from tensorboardX import SummaryWriter  # optional: only this writer needs it
            except ImportError:
                log.warning("tensorboardX is not installed: writing metrics.jsonl only")
            else:
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    @property
    def tensorboard(self) -> bool:
        """Whether TensorBoard event files are written (process 0 with tensorboardX)."""
        return self._tb is not None

    def truncate_after(self, step: int) -> None:
        """Keep the records of steps ``<= step``; a damaged file is repaired on the way.

        A torn last line (a kill or a full disk during an append leaves one) is dropped; any
        other line that is not a JSON record is moved to ``metrics.jsonl.quarantine`` (appended,
        kept for inspection) with a warning, so a resume never stops on the metrics log.
        """
        if not self.enabled or not os.path.exists(self.path):
            return
        records, torn, bad = _parse_lines(self.path)
        if torn is not None:
            log.warning("dropped the torn last line of %s: %r", self.path, _preview(torn))
        if bad:
            quarantine = self.path + ".quarantine"
            with open(quarantine, "ab") as f:
                f.writelines(line if line.endswith(b"\n") else line + b"\n" for line in bad)
            log.warning("moved %d unreadable line(s) of %s to %s", len(bad), self.path, quarantine)
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.writelines(line for record, line in records if record.get("step", 0) <= step)
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

    def write_baseline(self, name: str, metrics: Mapping[str, float], last_step: int) -> None:
        """The scores of what the run started from (``name``: ``untrained``, or ``initial`` for
        a fine-tune) in TensorBoard as flat lines from step 0 to ``last_step`` under
        ``<name>/<metric>`` (the reference for the ``eval/`` curves).
        Their own tags: a step-0 point written after later steps of the same tag would make
        TensorBoard drop that tag's later points. ``metrics.jsonl`` is not written (its steps
        only grow; ``summary.json`` holds these scores)."""
        if self._tb is not None:
            for step in sorted({0, int(last_step)}):
                for k, v in metrics.items():
                    self._tb.add_scalar(f"{name}/{k}", float(v), step)

    def write_text(self, tag: str, text: str, step: int) -> None:
        """``text`` under ``tag`` in TensorBoard's text tab, shown verbatim (a code block)."""
        if self._tb is not None:
            block = "\n".join("    " + line for line in str(text).splitlines())
            self._tb.add_text(tag, block, int(step))

    def write_config(self, config: Any, step: int) -> None:
        """The config (a ``ConfigDict`` or a dict) as JSON text under the tag ``config``."""
        if self._tb is not None:
            as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
            self.write_text(
                "config", json.dumps(as_dict, indent=2, sort_keys=True, default=str), step
            )

    def write_image(self, tag: str, png_path: str, step: int) -> None:
        """The PNG file ``png_path`` (e.g. the sample figure) under ``tag`` in TensorBoard."""
        if self._tb is not None:
            with Image.open(png_path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self._tb.add_image(tag, pixels, int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _parse_lines(path: str) -> tuple[list[tuple[dict, bytes]], bytes | None, list[bytes]]:
    """``(records, torn, bad)`` of a JSON-lines file: each readable record with its line (ending
    in a newline), the torn last line (no newline, not a record) or ``None``, and the other
    lines that are not JSON objects with a numeric step (garbage, NUL blocks, bad UTF-8)."""
    with open(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    records, bad, torn = [], [], None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            record = None
        if isinstance(record, dict) and isinstance(record.get("step", 0), (int, float)):
            records.append((record, line if line.endswith(b"\n") else line + b"\n"))
        elif i == len(lines) - 1 and not line.endswith(b"\n"):
            torn = line
        else:
            bad.append(line)
    return records, torn, bad


def _preview(line: bytes) -> str:
    text = line.decode("utf-8", errors="replace")
    return text if len(text) <= 80 else text[:80] + "..."


def read_metrics(workdir: str) -> list[dict]:
    """All records of ``workdir/metrics.jsonl``; lines that are not records (a torn last line
    of a run being written or killed, garbage) are skipped with a warning."""
    path = os.path.join(workdir, "metrics.jsonl")
    records, torn, bad = _parse_lines(path)
    skipped = len(bad) + (torn is not None)
    if skipped:
        log.warning("skipped %d line(s) of %s that are not JSON records", skipped, path)
    return [record for record, _ in records]
