"""Writing reflow pair data sets: :func:`write_pairs` (sharded, resumable), :func:`finalize_pairs`.

The layout and the reading side are described in :mod:`flowjax.data.pairs`; the shard loop,
the manifest check and the tfds metadata are :mod:`flowjax.data.shards`'.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from flowjax.data import shards
from flowjax.data.pairs.manifest import (
    PAIRS_DATASET_NAME,
    PAIRS_MANIFEST,
    PAIRS_SPLIT,
    _check_element_shape,
    _check_num_classes,
    make_manifest,
    pair_features,
    read_manifest,
)

_DESCRIPTION = """\
Reflow (rectified flow) pairs written by flowjax.data.write_pairs: x0 is noise (t = 0), x1 the
teacher ODE's sample from it (t = 1). The generation settings and the caller's metadata
(teacher checkpoint, solver, NFE, seed, ...) are in pairs_manifest.json beside this file.
"""


def _checked_shard(arrays: Any, index: int, n: int, manifest: dict) -> dict[str, np.ndarray]:
    """``shard_fn``'s output as ``{"x0", "x1": float32 [n, ...], "label": int64 [n]}``."""
    shape = tuple(manifest["element_shape"])
    num_classes = manifest["num_classes"]
    where = f"shard_fn(index={index}, ...) (rows {n})"
    want = {"x0", "x1"} if num_classes is None else {"x0", "x1", "label"}
    if not isinstance(arrays, Mapping):
        raise ValueError(f"{where} returned {type(arrays).__name__}; return a dict {sorted(want)}.")
    if set(arrays) != want:
        raise ValueError(
            f"{where} returned keys {sorted(arrays)}; expected exactly {sorted(want)}"
            + (
                " (num_classes is None, so no label)"
                if num_classes is None
                else f" (num_classes={num_classes}, so a label per pair)"
            )
            + "."
        )
    out = {}
    for key in ("x0", "x1"):
        x = np.asarray(arrays[key])
        if x.shape != (n, *shape):
            raise ValueError(f"{where}: {key} has shape {x.shape}, expected {(n, *shape)}.")
        if not (np.issubdtype(x.dtype, np.floating) or x.dtype.kind in "iuV"):
            raise ValueError(f"{where}: {key} has dtype {x.dtype}; pass real numbers.")
        try:
            x = x.astype(np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{where}: {key} of dtype {x.dtype} is not castable to float32."
            ) from err
        if not np.all(np.isfinite(x)):
            raise ValueError(
                f"{where}: {key} contains NaN or inf (did the teacher's ODE solve diverge?)."
            )
        out[key] = x
    if num_classes is not None:
        label = np.asarray(arrays["label"])
        if label.shape != (n,):
            raise ValueError(f"{where}: label has shape {label.shape}, expected {(n,)}.")
        if label.dtype.kind not in "iu":
            raise ValueError(f"{where}: label has dtype {label.dtype}; pass integer class ids.")
        if label.size and (label.min() < 0 or label.max() >= num_classes):
            raise ValueError(
                f"{where}: labels range over [{label.min()}, {label.max()}]; "
                f"expected class ids in [0, {num_classes})."
            )
        out["label"] = label.astype(np.int64)
    return out


def write_pairs(
    out_dir: str | os.PathLike,
    shard_fn: Callable[[int, int, int], Mapping[str, Any]],
    *,
    num_pairs: int,
    shard_size: int,
    element_shape: tuple[int, ...],
    num_classes: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    barrier_fn: Callable[[str], None] | None = None,
) -> str:
    """Write (or finish writing) a reflow pair data set as a tfds array_record data set.

    Shard ``s`` of ``S = ceil(num_pairs / shard_size)`` holds the pair rows
    ``[s * shard_size, min((s + 1) * shard_size, num_pairs))``; only the last may be shorter.
    Steps (the module docstring shows the resulting layout):

    1. ``pairs_manifest.json`` (the settings and ``metadata``) is written if missing, else
       compared: resuming with other settings raises a ``ValueError``.
    2. This process's shards (``s % process_count == process_index``) that are missing are made
       by ``shard_fn(s, start, stop)`` and written each as one array_record file, through a
       temporary name and an atomic rename: a killed process leaves every shard complete or
       absent. Existing shards are checked by their record count (a damaged one is regenerated
       with a warning); stale temporary files of this process's shards are removed.
    3. Process 0 writes the tfds metadata (``dataset_info.json``, ``features.json``) once all
       ``S`` shards exist, see :func:`finalize_pairs`.

    Resumption is exact when ``shard_fn`` is a pure function of ``index``: an interrupted run
    continued with the same arguments gives the same files, byte for byte, as an uninterrupted
    one (in any process: records are serialised deterministically), and calls ``shard_fn``
    once per shard in total.

    Several processes (multi-host) share ``out_dir`` on a common POSIX file system; each calls
    this with its ``process_index`` and the same other arguments. Pass
    ``barrier_fn=flowjax.parallel.multihost.barrier``: it is called (with a name) after this
    process's shards and after the metadata, so process 0 writes the metadata only when every
    process is done and every process returns with the data set complete. Without a barrier,
    process 0 writes the metadata only if the other shards already exist; otherwise call
    :func:`finalize_pairs` once all processes are done. Any process count can resume any other.

    Args:
      out_dir: the data set directory (created if needed); one data set per directory.
      shard_fn: ``shard_fn(index, start, stop) -> {"x0": [n, *element_shape], "x1": [n,
        *element_shape], "label": int [n]}`` with ``n = stop - start`` (``label`` exactly when
        ``num_classes`` is not ``None``); arrays may be numpy or JAX, any real dtype (stored as
        float32).
      num_pairs: the total number of pairs, ``>= 1``.
      shard_size: pairs per shard (and per ``shard_fn`` call), ``>= 1``.
      element_shape: the shape of one ``x0`` / ``x1``.
      num_classes: classes of the conditioning label, or ``None`` for unconditional pairs.
      metadata: JSON-serialisable provenance kept in the manifest (teacher checkpoint, solver,
        NFE, seed, ...); part of the settings a resumed run must repeat.
      progress: show a tqdm bar over this process's shards.
      process_index, process_count: this process and the number of writing processes.
      barrier_fn: ``barrier_fn(name)`` blocks until every process calls it with ``name``.

    Returns:
      ``out_dir`` as a string, ready for ``tfds.builder_from_directory`` and
      :class:`PairSource` once :func:`is_complete` is true.

    Raises:
      ValueError: bad arguments; ``out_dir`` holds pairs with other settings or a foreign data
        set; ``shard_fn`` returned wrong keys, shapes, dtypes, labels or non-finite values.
    """
    num_pairs = shards.check_int(num_pairs, "num_pairs", 1)
    shard_size = shards.check_int(shard_size, "shard_size", 1)
    shape = _check_element_shape(element_shape)
    num_classes = _check_num_classes(num_classes)
    process_index, process_count = shards.check_processes(process_index, process_count)
    manifest = make_manifest(num_pairs, shard_size, shape, num_classes, metadata)
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    os.makedirs(out_dir, exist_ok=True)
    shards.claim_manifest(
        out_dir,
        PAIRS_MANIFEST,
        manifest,
        dataset_name=PAIRS_DATASET_NAME,
        process_index=process_index,
        what="pairs",
        writer="write_pairs",
    )
    shards.write_shards(
        out_dir,
        dataset_name=PAIRS_DATASET_NAME,
        num_rows=num_pairs,
        shard_size=shard_size,
        make_shard=lambda index, start, stop: _checked_shard(
            shard_fn(index, start, stop), index, stop - start, manifest
        ),
        features=pair_features(shape, num_classes),
        finalize=finalize_pairs,
        writer="write_pairs",
        progress=progress,
        process_index=process_index,
        process_count=process_count,
        barrier_fn=barrier_fn,
    )
    return out_dir


def finalize_pairs(out_dir: str | os.PathLike) -> str:
    """Write the tfds metadata of a pair directory whose shards are all written.

    Checks every shard's record count against the manifest, then writes ``dataset_info.json``
    and ``features.json`` with ``tfds.folder_dataset.write_metadata`` (one split ``"train"``
    with the shard lengths; no TensorFlow) and reads them back. Idempotent; call it on one
    process. :func:`write_pairs` calls it itself when it can.

    Returns:
      ``out_dir`` as a string.

    Raises:
      ValueError: a shard is missing or has the wrong number of records (finish it with
        :func:`write_pairs`, which resumes).
    """
    import tensorflow_datasets as tfds  # heavy: imported where used

    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    manifest = read_manifest(out_dir)
    shards.write_metadata(
        out_dir,
        dataset_name=PAIRS_DATASET_NAME,
        num_rows=manifest["num_pairs"],
        shard_size=manifest["shard_size"],
        features=pair_features(manifest["element_shape"], manifest["num_classes"]),
        description=_DESCRIPTION,
        writer="write_pairs",
    )
    info = tfds.builder_from_directory(out_dir).info
    if info.splits[PAIRS_SPLIT].num_examples != manifest["num_pairs"]:
        raise ValueError(
            f"{out_dir}: the tfds metadata does not describe {manifest['num_pairs']} pairs."
        )
    return out_dir
