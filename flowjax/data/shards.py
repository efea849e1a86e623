"""Resumable sharded tfds writing: the shard loop, manifest and metadata of pair and latent sets.

A sharded set of ``R`` rows in ``out_dir`` is an ordinary tfds data set (array_record files
plus tfds metadata, one split ``"train"``) beside a JSON manifest of its settings::

    <manifest>.json                                   # settings + caller metadata, first
    <name>-train.array_record-00000-of-NNNNN          # shard 0: rows [0, shard_size)
    <name>-train.array_record-0000s-of-NNNNN          # shard s: rows [s*shard_size, ...)
    dataset_info.json, features.json                  # tfds metadata, once all shards exist

with ``S = ceil(R / shard_size)`` shards (``NNNNN = S``, 5 digits or more); only the last shard
may be shorter. :func:`write_shards` writes the missing shards of one process (shard ``s``
belongs to process ``s % process_count``) through a temporary name and an atomic rename, checks
existing ones by their record count, and has process 0 write the tfds metadata
(:func:`write_metadata`) once every shard exists. Records are serialised deterministically, so
a shard is a pure function of its arrays and a resumed generation is byte-identical to an
uninterrupted one. :mod:`flowjax.data.pairs` and :mod:`flowjax.data.latents` are the two
formats built on it; each supplies its features, manifest and row checks.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

log = logging.getLogger(__name__)

SPLIT = "train"
TMP_SUFFIX = ".tmp"
_FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
_FILE_FORMAT = "array_record"


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int, or a ``ValueError`` naming ``name`` if it is not an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}; pass an int >= {minimum}.")
    return int(value)


def check_processes(process_index: Any, process_count: Any) -> tuple[int, int]:
    """``(process_index, process_count)`` as ints with ``0 <= process_index < process_count``."""
    process_count = check_int(process_count, "process_count", 1)
    process_index = check_int(process_index, "process_index", 0)
    if process_index >= process_count:
        raise ValueError(
            f"process_index={process_index}, process_count={process_count}; need "
            "0 <= process_index < process_count."
        )
    return process_index, process_count


def json_metadata(metadata: Any) -> dict:
    """The caller's provenance ``metadata`` as the plain JSON dict a manifest stores."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a dict (or None), got {type(metadata).__name__}.")
    try:
        return json.loads(json.dumps(dict(metadata or {}), sort_keys=True))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"metadata must be JSON-serialisable (strings, numbers, lists, dicts): {err}"
        ) from err


def file_template(out_dir: str, dataset_name: str) -> tfds.core.ShardedFileTemplate:
    """The tfds file template of the shards of ``dataset_name`` in ``out_dir``."""
    import tensorflow_datasets as tfds  # heavy: imported where used

    return tfds.core.ShardedFileTemplate(
        data_dir=out_dir,
        template=_FILENAME_TEMPLATE,
        dataset_name=dataset_name,
        split=SPLIT,
        filetype_suffix=_FILE_FORMAT,
    )


def shard_path(out_dir: str, dataset_name: str, index: int, num_shards: int) -> str:
    """The file of shard ``index`` of ``num_shards``."""
    template = file_template(out_dir, dataset_name)
    return os.fspath(template.sharded_filepath(shard_index=index, num_shards=num_shards))


def shard_bounds(index: int, num_rows: int, shard_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of shard ``index``."""
    start = index * shard_size
    return start, min(start + shard_size, num_rows)


def count_records(path: str) -> int | None:
    """The number of records of a readable array_record file; ``None`` if it is damaged."""
    from array_record.python import array_record_module  # heavy: imported where used

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


def missing_shards(out_dir: str, dataset_name: str, num_shards: int) -> list[int]:
    """The shard indices whose files do not exist."""
    return [
        s
        for s in range(num_shards)
        if not os.path.exists(shard_path(out_dir, dataset_name, s, num_shards))
    ]


def _serialize(features, example: dict[str, np.ndarray]) -> bytes:
    """One record's bytes, the same in every process.

    ``tf.train.Example`` keeps its features in a protobuf map, whose serialised order is the
    map's iteration order and can differ between processes (seen: two key orders over four
    runs); ``deterministic=True`` writes the keys sorted, so a shard is a pure function of its
    arrays. Readers parse either order.
    """
    proto = features._example_serializer.get_tf_example(features.encode_example(example))
    return proto.SerializeToString(deterministic=True)


def write_shard(path: str, arrays: dict[str, np.ndarray], features) -> None:
    """Write one shard (rows of equal-length ``arrays``) through ``<path>.tmp`` and an atomic
    rename."""
    from array_record.python import array_record_module  # heavy: imported where used

    tmp = path + TMP_SUFFIX
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    try:
        for i in range(len(next(iter(arrays.values())))):
            writer.write(_serialize(features, {k: v[i] for k, v in arrays.items()}))
    finally:
        writer.close()
    with open(tmp, "rb") as f:  # the bytes reach the disk before the name does
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


def read_json(out_dir: str | os.PathLike, filename: str) -> dict:
    """The JSON object in ``<out_dir>/<filename>`` (``FileNotFoundError`` if absent)."""
    with open(os.path.join(os.fspath(out_dir), filename)) as f:
        return json.load(f)


def claim_manifest(
    out_dir: str,
    filename: str,
    manifest: dict,
    *,
    dataset_name: str,
    process_index: int,
    what: str,
    writer: str,
) -> None:
    """Write ``manifest`` to ``<out_dir>/<filename>`` if it is missing; else check it is equal.

    Refuses a directory that holds another tfds data set but no manifest (``writer`` names the
    function that writes this format) and one whose manifest differs (``what`` names the rows,
    e.g. ``"pairs"``): a generation resumes only with identical settings.
    """
    path = os.path.join(out_dir, filename)
    if not os.path.exists(path):
        template = file_template(out_dir, dataset_name)
        foreign = [
            f for f in os.listdir(out_dir) if f == "dataset_info.json" or template.is_valid(f)
        ]
        if foreign:
            raise ValueError(
                f"{out_dir} already holds a data set ({', '.join(sorted(foreign)[:3])}, ...) "
                f"but no {filename}, so it was not written by {writer}; write the "
                f"{what} to a new directory, or delete the old one."
            )
        tmp = f"{path}{TMP_SUFFIX}-{process_index}"
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)  # several processes may race here; all write the same content
    on_disk = read_json(out_dir, filename)
    if on_disk != manifest:
        keys = sorted(set(on_disk) | set(manifest))
        diffs = [
            f"{k}: {on_disk.get(k)!r} on disk, {manifest.get(k)!r} now"
            for k in keys
            if on_disk.get(k) != manifest.get(k)
        ]
        raise ValueError(
            f"{out_dir} holds {what} written with other settings ("
            + "; ".join(diffs)
            + "). A generation resumes only with identical settings; write to a new directory, "
            "or delete the old one to start over."
        )


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_shards(
    out_dir: str,
    *,
    dataset_name: str,
    num_rows: int,
    shard_size: int,
    make_shard: Callable[[int, int, int], dict[str, np.ndarray]],
    features,
    finalize: Callable[[str], Any],
    writer: str,
    progress: bool,
    process_index: int,
    process_count: int,
    barrier_fn: Callable[[str], None] | None,
    rate_name: str | None = None,
) -> None:
    """Write this process's missing shards, then (process 0) the tfds metadata.

    Shard ``s`` (``s % process_count == process_index``) is ``make_shard(s, start, stop)``:
    the checked arrays of rows ``[start, stop)``, written with :func:`write_shard`. An existing
    shard with the right record count is kept; a damaged one is regenerated with a warning; a
    stale temporary file is removed. ``barrier_fn(name)`` (names
    ``flowjax_<writer>_shards`` and ``flowjax_<writer>_metadata``) is called after the shards
    and after the metadata, so process 0 calls ``finalize(out_dir)`` only once every process
    is done. Without a barrier process 0 finalises only if every shard already exists (else it
    logs that ``finalize`` must be called later).

    Args:
      writer: the public writing function (``"write_pairs"``), for names and messages.
      rate_name: if given, the progress bar shows rows per second under this name.
    """
    num_shards = -(-num_rows // shard_size)
    owned = range(process_index, num_shards, process_count)
    todo = []
    for index in owned:
        path = shard_path(out_dir, dataset_name, index, num_shards)
        if os.path.exists(path + TMP_SUFFIX):
            log.info("removing the stale temporary file %s", path + TMP_SUFFIX)
            os.remove(path + TMP_SUFFIX)
        if os.path.exists(path):
            start, stop = shard_bounds(index, num_rows, shard_size)
            count = count_records(path)
            if count == stop - start:
                continue
            warnings.warn(
                f"{path} is damaged ({'unreadable' if count is None else f'{count} records'}, "
                f"expected {stop - start}); regenerating shard {index}.",
                stacklevel=3,
            )
            os.remove(path)
        todo.append(index)

    desc = writer.removeprefix("write_")
    bar = tqdm(
        total=len(owned),
        initial=len(owned) - len(todo),
        disable=not progress,
        desc=desc if process_count == 1 else f"{desc} (process {process_index})",
        unit="shard",
        dynamic_ncols=True,
    )
    t0, done = time.perf_counter(), 0
    with bar:
        for index in todo:
            start, stop = shard_bounds(index, num_rows, shard_size)
            arrays = make_shard(index, start, stop)
            write_shard(shard_path(out_dir, dataset_name, index, num_shards), arrays, features)
            if rate_name is not None:
                done += stop - start
                bar.set_postfix({rate_name: f"{done / (time.perf_counter() - t0):.1f}"})
            bar.update(1)

    if barrier_fn is not None:
        barrier_fn(f"flowjax_{writer}_shards")
    if process_index == 0:
        missing = missing_shards(out_dir, dataset_name, num_shards)
        if not missing:
            finalize(out_dir)
        elif barrier_fn is not None:
            raise ValueError(
                f"after the barrier, shards {missing[:10]} of {out_dir} are still missing; did "
                f"every process call {writer} with the same arguments?"
            )
        else:
            log.info(
                "%d shards of %s are written by other processes; call %s(%r) once they are done.",
                len(missing),
                out_dir,
                getattr(finalize, "__name__", "finalize"),
                out_dir,
            )
    if barrier_fn is not None:
        barrier_fn(f"flowjax_{writer}_metadata")


def write_metadata(
    out_dir: str,
    *,
    dataset_name: str,
    num_rows: int,
    shard_size: int,
    features,
    description: str,
    writer: str,
) -> None:
    """Write the tfds metadata of a set whose shards are all written.

    Checks every shard's record count, then writes ``dataset_info.json`` and ``features.json``
    with ``tfds.folder_dataset.write_metadata`` (one split ``"train"`` with the shard lengths;
    no TensorFlow). Idempotent. Raises a ``ValueError`` naming the missing or damaged shards
    (``writer`` is the function that finishes them).
    """
    import tensorflow_datasets as tfds  # heavy: imported where used

    num_shards = -(-num_rows // shard_size)
    lengths, num_bytes, bad = [], 0, []
    for index in range(num_shards):
        path = shard_path(out_dir, dataset_name, index, num_shards)
        start, stop = shard_bounds(index, num_rows, shard_size)
        if not os.path.exists(path) or count_records(path) != stop - start:
            bad.append(index)
            continue
        lengths.append(stop - start)
        num_bytes += os.path.getsize(path)
    if bad:
        raise ValueError(
            f"{out_dir}: shards {bad[:10]}{' ...' if len(bad) > 10 else ''} of {num_shards} are "
            f"missing or damaged; run {writer} again with the same arguments to finish them."
        )
    template = file_template(out_dir, dataset_name)
    split = tfds.core.SplitInfo(
        name=SPLIT, shard_lengths=lengths, num_bytes=num_bytes, filename_template=template
    )
    tfds.folder_dataset.write_metadata(
        data_dir=out_dir,
        features=features,
        split_infos=[split],
        filename_template=template,
        check_data=False,  # tfds' check reads through tf.data; record counts are checked above
        description=description,
        disable_shuffling=True,
    )


def is_complete(out_dir: str, manifest_name: str, dataset_name: str, num_rows_key: str) -> bool:
    """Whether ``out_dir`` holds a finished set: a readable manifest, tfds metadata whose shard
    lengths match the manifest's ``num_rows_key`` and ``shard_size``, and every shard file.
    (Record counts are checked when shards are written and by :func:`write_metadata`.)"""
    import tensorflow_datasets as tfds  # heavy: imported where used

    try:
        manifest = read_json(out_dir, manifest_name)
        if not os.path.exists(os.path.join(out_dir, "dataset_info.json")):
            return False
        split = tfds.builder_from_directory(out_dir).info.splits[SPLIT]
        num_shards = manifest["num_shards"]
        want = [
            b - a
            for a, b in (
                shard_bounds(s, manifest[num_rows_key], manifest["shard_size"])
                for s in range(num_shards)
            )
        ]
    except Exception:  # any unreadable or inconsistent metadata means "not complete"
        return False
    return list(split.shard_lengths) == want and not missing_shards(
        out_dir, dataset_name, num_shards
    )
