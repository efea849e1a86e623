"""Restore a finished (or running) training run: its data, its experiment, its EMA weights.

:func:`run_data` rebuilds the data of a run from its ``config.json``;
:func:`flowjax.training.experiment.load_run` (on top of it) is what sampling, reflow pairs, BOSS
search, calibration and fine-tunes from ``config.init.workdir`` read a run with. Both live in
the training layer, below every workflow that uses them, so nothing here imports upward.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from flowjax import data as data_lib


def run_data(config: Any) -> Any:
    """The data a run was trained on, rebuilt from its ``config.json``, or, where that is not
    possible, a :class:`~flowjax.data.RecordedShapeSource` (the recorded shape, no examples)
    whose ``reason`` says why.

    The run's ``dataset`` record (:func:`flowjax.data.describe_source`) decides: data built from
    the config is rebuilt (for ``kind="array"`` from the recorded file) and must have the
    recorded fingerprint; data passed in code is used only if the config happens to rebuild the
    same fingerprint. Runs from before the record are rebuilt from the config as they are.
    """
    try:
        rebuilt, error = (
            data_lib.make_source(
                config.data,
                batch_size=int(config.train.batch_size),
                seed=int(config.seed),
                shard_index=jax.process_index(),
                shard_count=jax.process_count(),
            ),
            None,
        )
    except (ValueError, FileNotFoundError) as err:
        rebuilt, error = None, err
    record = config.get("dataset", None)
    if record is None:
        if error is not None:
            raise error
        return rebuilt
    record = record.to_dict() if isinstance(record, ml_collections.ConfigDict) else dict(record)
    recorded = record.get("fingerprint", None)
    fingerprint = data_lib.fingerprint_of(rebuilt) if rebuilt is not None else None
    what = f"{record['name']!r} {tuple(record['element_shape'])}"
    if record.get("built_from") == "code":
        if recorded is not None and fingerprint == recorded:
            return rebuilt
        reason = (
            f"the run was trained on data passed in code ({what}) that its config.json does not "
            "rebuild; retrain from a config (e.g. data.kind='array' with data.path) to score it"
        )
    elif error is not None:
        reason = f"its data {what} cannot be rebuilt from config.json: {error}"
    elif recorded is not None and fingerprint is not None and fingerprint != recorded:
        where = f" at {record['path']}" if record.get("path") else ""
        reason = (
            f"its data {what}{where} has changed since training (sha256 {fingerprint[:12]}..., "
            f"recorded {recorded[:12]}...)"
        )
    else:
        return rebuilt
    return data_lib.RecordedShapeSource(record, reason)
