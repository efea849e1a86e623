"""Reflow pair data sets: (noise, sample) pairs written resumably as a tfds data set, read back.

Reflow (rectified flow, Liu et al. 2023, arXiv:2209.03003) draws noise ``z0 ~ N(0, I)``,
integrates a trained teacher's ODE from ``t = 0`` to ``t = 1`` to get ``z1``, and trains a new
flow on the coupled pairs. In this library's time convention the pair is ``(x0, x1)``: ``x0``
the noise end (``t = 0``), ``x1`` the teacher's sample at the data end (``t = 1``); a student
trained on them uses ``x_t = t * x1 + (1 - t) * x0`` with these ``x0`` instead of fresh noise.

Writing (:func:`write_pairs`) costs one ODE solve per pair, so it is sharded and resumable:
the caller's ``shard_fn(index, start, stop)`` makes the pair rows ``[start, stop)`` of shard
``index`` as a pure function of ``index`` (e.g. noise from ``fold_in(key, index)``); each shard
is written once, atomically, and an interrupted generation continues with the missing shards
only. The result is an ordinary tfds data set (array_record files plus tfds metadata), so
``tfds.builder_from_directory(out_dir).as_data_source("train")`` reads it without TensorFlow.

On-disk layout of ``out_dir`` (``S = ceil(num_pairs / shard_size)`` shards)::

    pairs_manifest.json                              # settings + caller metadata, first
    reflow_pairs-train.array_record-00000-of-NNNNN   # shard 0: pair rows [0, shard_size)
    reflow_pairs-train.array_record-00001-of-NNNNN   # shard s: rows [s*shard_size, ...)
    ...                                              # (NNNNN = S, 5 digits or more)
    dataset_info.json, features.json                 # tfds metadata, once all shards exist

Each record is one pair ``{"x0": float32 [*element_shape], "x1": float32 [*element_shape],
"label": int64 []}`` (``label`` only when ``num_classes`` is given), stored in global row order.

Training (:class:`PairSource`) reads the pairs in the order of :mod:`flowjax.data.tfds_pipeline`
(a fresh permutation per epoch, global batch ``k`` a pure function of ``(seed, k)``), with the
source contract of :class:`flowjax.data.base.DataSource`.

Example::

    def shard_fn(index, start, stop):
        x0 = jax.random.normal(jax.random.fold_in(key, index), (stop - start, 8, 8, 1))
        return {"x0": x0, "x1": solve_teacher_ode(x0)}

    write_pairs("/data/pairs/digits_rk4", shard_fn, num_pairs=100_000, shard_size=4096,
                element_shape=(8, 8, 1), metadata={"teacher": ckpt, "solver": "rk4", "nfe": 40})
    source = PairSource("/data/pairs/digits_rk4", base=digits_source, batch_size=128, seed=0)
    batch = next(source.iterator(0))  # {"x0": [128, 8, 8, 1], "x1": [128, 8, 8, 1]}
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from tqdm import tqdm

from flowjax.data.base import BatchLayout
from flowjax.data.tfds_pipeline import Batch, BatchOrder, DatasetNotFoundError

log = logging.getLogger(__name__)

PAIRS_DATASET_NAME = "reflow_pairs"
PAIRS_MANIFEST = "pairs_manifest.json"
PAIRS_SPLIT = "train"
_FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
_FILE_FORMAT = "array_record"
_TMP_SUFFIX = ".tmp"
_FORMAT = "flowjax.reflow_pairs"
_FORMAT_VERSION = 1
IN_MEMORY_BYTES = 1 << 30  # PairSource reads smaller pair sets into RAM
_DESCRIPTION = """\
Reflow (rectified flow) pairs written by flowjax.data.write_pairs: x0 is noise (t = 0), x1 the
teacher ODE's sample from it (t = 1). The generation settings and the caller's metadata
(teacher checkpoint, solver, NFE, seed, ...) are in pairs_manifest.json beside this file.
"""


# ---------------------------------------------------------------------------------------------
# Features and file names
# ---------------------------------------------------------------------------------------------


def _check_element_shape(element_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in element_shape)
        ok = all(d == e and d > 0 for d, e in zip(shape, element_shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"element_shape={element_shape!r}; pass a tuple of positive ints, the shape of one "
            "x0 / x1 (e.g. (8, 8, 1) for digits, (2,) for 2-D points)."
        )
    return shape


def _check_num_classes(num_classes: Any) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes={num_classes!r}; pass a positive int or None.")
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes}; pass a positive int or None.")
    return int(num_classes)


def pair_features(
    element_shape: tuple[int, ...], num_classes: int | None
) -> tfds.features.FeaturesDict:
    """The tfds features of one pair record.

    Args:
      element_shape: the shape of one ``x0`` (and one ``x1``).
      num_classes: the number of classes of the teacher's conditioning label, or ``None`` for
        unconditional pairs (no ``label`` feature).

    Returns:
      ``FeaturesDict({"x0": Tensor(element_shape, float32), "x1": Tensor(element_shape,
      float32)[, "label": ClassLabel(num_classes)]})``. The tensors use tfds' raw-bytes
      encoding (``Encoding.BYTES``): the same values, about 70 times faster to serialize than
      the default float list. ``serialize_example`` and ``deserialize_example_np`` of the result
      need no TensorFlow.
    """
    shape = _check_element_shape(element_shape)
    num_classes = _check_num_classes(num_classes)
    tensor = lambda: tfds.features.Tensor(
        shape=shape, dtype=np.float32, encoding=tfds.features.Encoding.BYTES
    )
    features = {"x0": tensor(), "x1": tensor()}
    if num_classes is not None:
        features["label"] = tfds.features.ClassLabel(num_classes=num_classes)
    return tfds.features.FeaturesDict(features)


def _template(
    out_dir: str, dataset_name: str = PAIRS_DATASET_NAME
) -> tfds.core.ShardedFileTemplate:
    return tfds.core.ShardedFileTemplate(
        data_dir=out_dir,
        template=_FILENAME_TEMPLATE,
        dataset_name=dataset_name,
        split=PAIRS_SPLIT,
        filetype_suffix=_FILE_FORMAT,
    )


def _shard_path(
    out_dir: str, index: int, num_shards: int, dataset_name: str = PAIRS_DATASET_NAME
) -> str:
    template = _template(out_dir, dataset_name)
    return os.fspath(template.sharded_filepath(shard_index=index, num_shards=num_shards))


def _shard_bounds(index: int, num_pairs: int, shard_size: int) -> tuple[int, int]:
    start = index * shard_size
    return start, min(start + shard_size, num_pairs)


def _count_records(path: str) -> int | None:
    """The number of records of a readable array_record file; ``None`` if it is damaged."""
    try:
        reader = array_record_module.ArrayRecordReader(path)
    except (OSError, RuntimeError, ValueError):
        return None
    try:
        count = reader.num_records() if reader.ok() else None
    finally:
        try:
            reader.close()  # a damaged file (e.g. truncated) reports its error here
        except (OSError, RuntimeError, ValueError):
            count = None
    return count


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


def _make_manifest(num_pairs, shard_size, element_shape, num_classes, metadata) -> dict:
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a dict (or None), got {type(metadata).__name__}.")
    try:
        metadata = json.loads(json.dumps(dict(metadata or {}), sort_keys=True))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"metadata must be JSON-serialisable (strings, numbers, lists, dicts): {err}"
        ) from err
    return {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "num_pairs": num_pairs,
        "shard_size": shard_size,
        "num_shards": math.ceil(num_pairs / shard_size),
        "element_shape": list(element_shape),
        "num_classes": num_classes,
        "metadata": metadata,
    }


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The contents of ``<out_dir>/pairs_manifest.json``.

    Keys: ``num_pairs``, ``shard_size``, ``num_shards``, ``element_shape`` (a list),
    ``num_classes`` (``None`` if unconditional), ``metadata`` (what the caller passed to
    :func:`write_pairs`), ``format``, ``format_version``.

    Raises:
      FileNotFoundError: there is no manifest (not a pair directory, or nothing written yet).
    """
    path = os.path.join(os.fspath(out_dir), PAIRS_MANIFEST)
    with open(path) as f:
        return json.load(f)


def _claim_manifest(out_dir: str, manifest: dict, process_index: int) -> None:
    """Write the manifest if it is missing; otherwise check it equals ``manifest``."""
    path = os.path.join(out_dir, PAIRS_MANIFEST)
    if not os.path.exists(path):
        template = _template(out_dir)
        foreign = [
            f for f in os.listdir(out_dir) if f == "dataset_info.json" or template.is_valid(f)
        ]
        if foreign:
            raise ValueError(
                f"{out_dir} already holds a data set ({', '.join(sorted(foreign)[:3])}, ...) "
                f"but no {PAIRS_MANIFEST}, so it was not written by write_pairs; write the "
                "pairs to a new directory, or delete the old one."
            )
        tmp = f"{path}{_TMP_SUFFIX}-{process_index}"
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)  # several processes may race here; all write the same content
    on_disk = read_manifest(out_dir)
    if on_disk != manifest:
        keys = sorted(set(on_disk) | set(manifest))
        diffs = [
            f"{k}: {on_disk.get(k)!r} on disk, {manifest.get(k)!r} now"
            for k in keys
            if on_disk.get(k) != manifest.get(k)
        ]
        raise ValueError(
            f"{out_dir} holds pairs written with other settings ("
            + "; ".join(diffs)
            + "). A generation resumes only with identical settings; write to a new directory, "
            "or delete the old one to start over."
        )


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}; pass an int >= {minimum}.")
    return int(value)


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


def _serialize(features, example: dict[str, np.ndarray]) -> bytes:
    """One record's bytes, the same in every process.

    ``tf.train.Example`` keeps its features in a protobuf map, whose serialised order is the
    map's iteration order and can differ between processes (seen: two key orders over four
    runs); ``deterministic=True`` writes the keys sorted, so a shard is a pure function of its
    arrays. Readers parse either order.
    """
    proto = features._example_serializer.get_tf_example(features.encode_example(example))
    return proto.SerializeToString(deterministic=True)


def _write_shard(path: str, arrays: dict[str, np.ndarray], features) -> None:
    """Write one shard through ``<path>.tmp`` and rename it into place (atomic)."""
    tmp = path + _TMP_SUFFIX
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    try:
        for i in range(len(next(iter(arrays.values())))):
            writer.write(_serialize(features, {k: v[i] for k, v in arrays.items()}))
    finally:
        writer.close()
    with open(tmp, "rb") as f:  # the bytes reach the disk before the name does
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    num_pairs = _check_int(num_pairs, "num_pairs", 1)
    shard_size = _check_int(shard_size, "shard_size", 1)
    shape = _check_element_shape(element_shape)
    num_classes = _check_num_classes(num_classes)
    process_count = _check_int(process_count, "process_count", 1)
    process_index = _check_int(process_index, "process_index", 0)
    if process_index >= process_count:
        raise ValueError(
            f"process_index={process_index}, process_count={process_count}; need "
            "0 <= process_index < process_count."
        )
    manifest = _make_manifest(num_pairs, shard_size, shape, num_classes, metadata)
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    os.makedirs(out_dir, exist_ok=True)
    _claim_manifest(out_dir, manifest, process_index)

    num_shards = manifest["num_shards"]
    features = pair_features(shape, num_classes)
    owned = range(process_index, num_shards, process_count)
    todo = []
    for index in owned:
        path = _shard_path(out_dir, index, num_shards)
        if os.path.exists(path + _TMP_SUFFIX):
            log.info("removing the stale temporary file %s", path + _TMP_SUFFIX)
            os.remove(path + _TMP_SUFFIX)
        if os.path.exists(path):
            start, stop = _shard_bounds(index, num_pairs, shard_size)
            count = _count_records(path)
            if count == stop - start:
                continue
            warnings.warn(
                f"{path} is damaged ({'unreadable' if count is None else f'{count} records'}, "
                f"expected {stop - start}); regenerating shard {index}.",
                stacklevel=2,
            )
            os.remove(path)
        todo.append(index)

    bar = tqdm(
        total=len(owned),
        initial=len(owned) - len(todo),
        disable=not progress,
        desc="pairs" if process_count == 1 else f"pairs (process {process_index})",
        unit="shard",
        dynamic_ncols=True,
    )
    with bar:
        for index in todo:
            start, stop = _shard_bounds(index, num_pairs, shard_size)
            arrays = _checked_shard(shard_fn(index, start, stop), index, stop - start, manifest)
            _write_shard(_shard_path(out_dir, index, num_shards), arrays, features)
            bar.update(1)

    if barrier_fn is not None:
        barrier_fn("flowjax_write_pairs_shards")
    if process_index == 0:
        missing = _missing_shards(out_dir, num_shards)
        if not missing:
            finalize_pairs(out_dir)
        elif barrier_fn is not None:
            raise ValueError(
                f"after the barrier, shards {missing[:10]} of {out_dir} are still missing; did "
                "every process call write_pairs with the same arguments?"
            )
        else:
            log.info(
                "%d shards of %s are written by other processes; call finalize_pairs(%r) once "
                "they are done.",
                len(missing),
                out_dir,
                out_dir,
            )
    if barrier_fn is not None:
        barrier_fn("flowjax_write_pairs_metadata")
    return out_dir


def _missing_shards(out_dir: str, num_shards: int) -> list[int]:
    return [s for s in range(num_shards) if not os.path.exists(_shard_path(out_dir, s, num_shards))]


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
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    manifest = read_manifest(out_dir)
    num_pairs, shard_size, num_shards = (
        manifest["num_pairs"],
        manifest["shard_size"],
        manifest["num_shards"],
    )
    lengths, num_bytes, bad = [], 0, []
    for index in range(num_shards):
        path = _shard_path(out_dir, index, num_shards)
        start, stop = _shard_bounds(index, num_pairs, shard_size)
        if not os.path.exists(path) or _count_records(path) != stop - start:
            bad.append(index)
            continue
        lengths.append(stop - start)
        num_bytes += os.path.getsize(path)
    if bad:
        raise ValueError(
            f"{out_dir}: shards {bad[:10]}{' ...' if len(bad) > 10 else ''} of {num_shards} are "
            "missing or damaged; run write_pairs again with the same arguments to finish them."
        )
    template = _template(out_dir)
    split = tfds.core.SplitInfo(
        name=PAIRS_SPLIT, shard_lengths=lengths, num_bytes=num_bytes, filename_template=template
    )
    tfds.folder_dataset.write_metadata(
        data_dir=out_dir,
        features=pair_features(manifest["element_shape"], manifest["num_classes"]),
        split_infos=[split],
        filename_template=template,
        check_data=False,  # tfds' check reads through tf.data; we read back below instead
        description=_DESCRIPTION,
        disable_shuffling=True,
    )
    info = tfds.builder_from_directory(out_dir).info
    if info.splits[PAIRS_SPLIT].num_examples != num_pairs:
        raise ValueError(f"{out_dir}: the tfds metadata does not describe {num_pairs} pairs.")
    return out_dir


def is_complete(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` holds a finished pair data set.

    True when the manifest and the tfds metadata are readable, the metadata describes the
    manifest's ``num_pairs`` in its shards, and every shard file exists. (Record counts are
    checked when the shards are written and by :func:`finalize_pairs`, not here.)
    """
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    try:
        manifest = read_manifest(out_dir)
        if not os.path.exists(os.path.join(out_dir, "dataset_info.json")):
            return False
        split = tfds.builder_from_directory(out_dir).info.splits[PAIRS_SPLIT]
        num_shards = manifest["num_shards"]
        want = [
            b - a
            for a, b in (
                _shard_bounds(s, manifest["num_pairs"], manifest["shard_size"])
                for s in range(num_shards)
            )
        ]
    except Exception:  # any unreadable or inconsistent metadata means "not complete"
        return False
    return list(split.shard_lengths) == want and not _missing_shards(out_dir, num_shards)


def _open_complete(data_dir: str) -> tuple[dict, Any]:
    """The manifest and the tfds ``train`` data source of a finished pair directory."""
    if not is_complete(data_dir):
        if os.path.exists(os.path.join(data_dir, PAIRS_MANIFEST)):
            reason = "its generation is not finished (shards or the tfds metadata are missing)"
        else:
            reason = f"there is no {PAIRS_MANIFEST} (not a pair data set, or nothing written)"
        raise DatasetNotFoundError(
            f"The reflow pair data set {data_dir} cannot be read: {reason}. Write or finish it "
            "with flowjax.data.write_pairs (it resumes), or finalize_pairs after a multi-process "
            "generation."
        )
    manifest = read_manifest(data_dir)
    source = tfds.builder_from_directory(data_dir).as_data_source(PAIRS_SPLIT)
    return manifest, source


def _to_batch_types(example: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {
        "x0": np.asarray(example["x0"], np.float32),
        "x1": np.asarray(example["x1"], np.float32),
    }
    if "label" in example:
        out["label"] = np.asarray(example["label"], np.int32)
    return out


def load_pairs(out_dir: str | os.PathLike, chunk_size: int = 1024) -> dict[str, np.ndarray]:
    """All pairs of a finished pair data set, in global row order (for small sets and tests).

    Read through ``tfds.builder_from_directory(out_dir).as_data_source("train")``.

    Returns:
      ``{"x0": float32 [N, ...], "x1": float32 [N, ...], "label": int32 [N]}`` (``label`` only
      for conditional pairs); row ``i`` is the ``i``-th pair that :func:`write_pairs` wrote.

    Raises:
      DatasetNotFoundError: the directory is not a finished pair data set.
    """
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    manifest, source = _open_complete(out_dir)
    n, shape = len(source), tuple(manifest["element_shape"])
    out = {"x0": np.empty((n, *shape), np.float32), "x1": np.empty((n, *shape), np.float32)}
    if manifest["num_classes"] is not None:
        out["label"] = np.empty((n,), np.int32)
    for lo in range(0, n, chunk_size):
        rows = range(lo, min(lo + chunk_size, n))
        for i, example in zip(rows, source.__getitems__(list(rows))):
            for key, value in _to_batch_types(example).items():
                out[key][i] = value
    return out


# ---------------------------------------------------------------------------------------------
# Reading for training
# ---------------------------------------------------------------------------------------------


class PairSource:
    """Reflow pairs as a training source (the contract of :class:`flowjax.data.base.DataSource`).

    Batches are ``{"x0": float32 [b, ...], "x1": float32 [b, ...], "label": int32 [b]}``
    (``label`` only for conditional pairs), ``b = batch_size // shard_count``; a pair's ``x0``
    and ``x1`` (and label) always stay in the same row. The order is that of
    :class:`~flowjax.data.ImageDataset` (shared through
    :class:`~flowjax.data.tfds_pipeline.BatchOrder`): epoch ``e`` is a fresh permutation of
    the ``N`` pairs (a Philox permutation per epoch), global batch ``k``
    is stream positions ``[k*B, (k+1)*B)`` and process ``i`` gets rows ``[i*b, (i+1)*b)``. So
    batch ``k`` is a pure function of ``(seed, k)``, ``iterator(start_step=k)`` resumes
    exactly, and the processes' batches concatenate to the global batch.

    ``kind``, ``name`` and ``eval_array`` come from ``base``, the real data set the teacher was
    trained on, so evaluation still scores samples against held-out real data;
    ``element_shape`` and ``num_classes`` must agree with ``base``.

    Args:
      data_dir: a finished :func:`write_pairs` directory.
      base: the real data's source (``kind``, ``name``, ``element_shape``, ``num_classes``,
        ``eval_array``).
      batch_size: ``B``, the global batch size (divisible by ``shard_count``).
      seed: non-negative int; fixes the epoch permutations.
      shard_index, shard_count: this process and the number of processes.
      num_threads, prefetch_buffer_size: grain read-ahead (threads only).
      in_memory: read all pairs into RAM once and gather batches with numpy (much faster for
        small pairs: no per-example decoding per step); ``None`` (default) does so when the
        pairs take less than ``IN_MEMORY_BYTES`` (1 GiB). Batches are the same either way.

    Attributes:
      num_examples: ``N``, the number of pairs.
      manifest: the generation settings and metadata (see :func:`read_manifest`).
      local_batch_size, steps_per_epoch: ``b`` and ``N / B``.

    Raises:
      DatasetNotFoundError: ``data_dir`` is not a finished pair data set.
      ValueError: bad batch/shard/seed arguments, or pairs whose element shape or classes differ
        from ``base``'s.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        base: Any,
        batch_size: int,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
        num_threads: int = 8,
        prefetch_buffer_size: int | None = None,
        in_memory: bool | None = None,
    ):
        BatchLayout(batch_size, shard_index, shard_count, seed)  # a clear error before any I/O
        self.data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
        self.manifest, self._source = _open_complete(self.data_dir)
        shape = tuple(self.manifest["element_shape"])
        classes = self.manifest["num_classes"]
        if tuple(base.element_shape) != shape:
            raise ValueError(
                f"the pairs in {self.data_dir} have element shape {shape} but the base data set "
                f"{base.name!r} has {tuple(base.element_shape)}; pass the base the teacher was "
                "trained on."
            )
        if base.num_classes != classes:
            raise ValueError(
                f"the pairs in {self.data_dir} have num_classes={classes} but the base data set "
                f"{base.name!r} has num_classes={base.num_classes}; conditional pairs need a "
                "labelled base with the same classes, unconditional pairs an unlabelled one."
            )
        self.base = base
        self.kind, self.name = base.kind, base.name
        self.element_shape, self.num_classes = shape, classes
        self.num_examples = len(self._source)
        self.batch_size = int(batch_size)
        self._order = BatchOrder(
            self.num_examples,
            global_batch_size=self.batch_size,
            seed=seed,
            shard_index=shard_index,
            shard_count=shard_count,
            num_threads=num_threads,
            prefetch_buffer_size=prefetch_buffer_size,
        )
        self.local_batch_size = self._order.local_batch_size
        self.steps_per_epoch = self.num_examples / self.batch_size
        size = 2 * 4 * self.num_examples * math.prod(shape)
        self.in_memory = size < IN_MEMORY_BYTES if in_memory is None else bool(in_memory)
        self._arrays = load_pairs(self.data_dir) if self.in_memory else None

    def _example(self, index: int, position: int) -> dict[str, np.ndarray]:
        del position  # pairs are used as they are (no augmentation)
        return _to_batch_types(self._source[index])

    def example_indices(self, step: int) -> np.ndarray:
        """Row indices (as in :func:`load_pairs`) of this process's rows of batch ``step``."""
        return self._order.example_indices(step)

    def get_batch(self, step: int) -> Batch:
        """This process's rows of global batch ``step``, read synchronously."""
        if self._arrays is not None:
            rows = self._order.example_indices(step)
            return {k: v[rows] for k, v in self._arrays.items()}
        return self._order.get_batch(self._example, step)

    def iterator(self, start_step: int = 0, num_steps: int | None = None) -> Iterator[Batch]:
        """Batches ``start_step, start_step + 1, ...`` (endless unless ``num_steps`` is given)."""
        if self._arrays is None:
            return self._order.iterator(self._example, start_step, num_steps)
        start = self._order.check_step(start_step, "start_step")
        if num_steps is not None and (
            not isinstance(num_steps, (int, np.integer)) or num_steps < 0
        ):
            raise ValueError(f"num_steps={num_steps!r}; pass a non-negative int or None.")
        stop = self._order.max_steps if num_steps is None else start + int(num_steps)
        return (self.get_batch(step) for step in range(start, stop))

    def eval_array(self, n: int):
        """Held-out real data from ``base``: ``(x [n, ...], labels or None)``."""
        return self.base.eval_array(n)

    def __repr__(self) -> str:
        return (
            f"PairSource({self.data_dir!r}, N={self.num_examples}, base={self.name!r}, "
            f"element_shape={self.element_shape}, B={self.batch_size})"
        )
