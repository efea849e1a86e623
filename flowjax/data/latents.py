"""Latent data sets: VAE posteriors of an image set, written resumably as tfds, read for training.

A latent set holds, for every (optionally flipped) image ``x`` of a tfds split, the VAE
posterior ``q(z | x) = N(mean, diag(std^2))`` *in model space* (already scaled:
``mean_y = scaling_factor * (mean - shift_factor)``, ``std_y = scaling_factor * std``), so a
flow model trained on it draws ``x1 = mean_y + std_y * eps`` afresh every time it sees the
example (``mode="posterior"``), or reads one fixed draw (``mode="sample"``: a ``latent`` feature).

On disk, like :mod:`flowjax.data.pairs` (both are written by the resumable shard loop of
:mod:`flowjax.data.shards`): ``latents_manifest.json`` (settings),
``latents-train.array_record-SSSSS-of-NNNNN`` shards of ``shard_size`` rows in row order, and
the tfds metadata once all shards exist, so
``tfds.builder_from_directory(dir).as_data_source("train")`` reads it. Shard ``s`` is written
by process ``s % process_count``; a shard is written once, atomically (temporary name +
rename), and a rerun writes only the missing ones: an interrupted generation resumed with the
same settings gives byte-identical files.

Row ``r`` is image ``r // 2`` of the source split, horizontally flipped when ``r`` is odd, if
``flip``; otherwise image ``r``.

The *held-out* set, ``<dir>/heldout``, is a latent set of its own (same layout) of images that
are not training rows (``flowjax latents`` encodes the image set's validation or test
split there, unflipped); :meth:`LatentSource.eval_array`, the evaluator's reference for FID and
the other scores, reads it and nothing else. A latent set is opened only if every shard file
is readable with the expected record count.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from flowjax.data import shards
from flowjax.data.batch_order import BatchOrder
from flowjax.data.tfds_pipeline import DatasetNotFoundError

LATENTS_DATASET_NAME = "latents"
LATENTS_MANIFEST = "latents_manifest.json"
HELD_OUT = "heldout"  # the held-out latent set's directory inside a latent set
SPLIT = shards.SPLIT
MODES = ("posterior", "sample")
_FORMAT = "flowjax.latents"


def latent_features(latent_shape, num_classes: int | None, mode: str) -> tfds.features.FeaturesDict:
    """``{"mean", "std": float32 latent_shape}`` (posterior) or ``{"latent"}`` (sample), plus
    ``label`` when ``num_classes``; raw-bytes tensors (no TensorFlow to decode)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose 'posterior' or 'sample'.")
    t = lambda: tfds.features.Tensor(
        shape=tuple(latent_shape), dtype=np.float32, encoding=tfds.features.Encoding.BYTES
    )
    f = {"mean": t(), "std": t()} if mode == "posterior" else {"latent": t()}
    if num_classes is not None:
        f["label"] = tfds.features.ClassLabel(num_classes=int(num_classes))
    return tfds.features.FeaturesDict(f)


def read_manifest(out_dir) -> dict:
    """The contents of ``<out_dir>/latents_manifest.json`` (the settings and metadata)."""
    return shards.read_json(out_dir, LATENTS_MANIFEST)


def _checked_shard(arrays: Any, start: int, stop: int, features, latent_shape) -> dict:
    """``shard_fn``'s output as float32 ``[n, *latent_shape]`` arrays and an int64 label."""
    arrays = dict(arrays)
    keys = set(features.keys())
    if set(arrays) != keys:
        raise ValueError(f"shard_fn returned keys {sorted(arrays)}, expected {sorted(keys)}.")
    for k in keys - {"label"}:
        arrays[k] = np.asarray(arrays[k], np.float32)
        if arrays[k].shape != (stop - start, *latent_shape):
            raise ValueError(f"shard_fn: {k} has shape {arrays[k].shape}.")
    if "label" in arrays:
        arrays["label"] = np.asarray(arrays["label"], np.int64)
    return arrays


def write_latents(
    out_dir: str | os.PathLike,
    shard_fn: Callable[[int, int, int], Mapping[str, Any]],
    *,
    num_rows: int,
    shard_size: int,
    latent_shape: tuple[int, ...],
    num_classes: int | None,
    mode: str = "posterior",
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    barrier_fn: Callable[[str], None] | None = None,
) -> str:
    """Write (or finish) a latent set; ``shard_fn(index, start, stop)`` returns the rows
    ``[start, stop)`` as ``{"mean", "std"}`` or ``{"latent"}`` (``[n, *latent_shape]``) and
    ``label [n]``, a pure function of ``index`` (then resuming is byte-exact). The shard loop,
    multi-host barriers and finalisation are :func:`flowjax.data.shards.write_shards`', as for
    :func:`flowjax.data.write_pairs`. Returns ``out_dir``."""
    num_rows = shards.check_int(num_rows, "num_rows", 1)
    shard_size = shards.check_int(shard_size, "shard_size", 1)
    process_index, process_count = shards.check_processes(process_index, process_count)
    features = latent_features(latent_shape, num_classes, mode)
    latent_shape = tuple(int(d) for d in latent_shape)
    manifest = {
        "format": _FORMAT,
        "num_rows": num_rows,
        "shard_size": shard_size,
        "num_shards": math.ceil(num_rows / shard_size),
        "latent_shape": list(latent_shape),
        "num_classes": None if num_classes is None else int(num_classes),
        "mode": mode,
        "metadata": shards.json_metadata(metadata),
    }
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    os.makedirs(out_dir, exist_ok=True)
    shards.claim_manifest(
        out_dir,
        LATENTS_MANIFEST,
        manifest,
        dataset_name=LATENTS_DATASET_NAME,
        process_index=process_index,
        what="latents",
        writer="write_latents",
    )
    shards.write_shards(
        out_dir,
        dataset_name=LATENTS_DATASET_NAME,
        num_rows=num_rows,
        shard_size=shard_size,
        make_shard=lambda index, start, stop: _checked_shard(
            shard_fn(index, start, stop), start, stop, features, latent_shape
        ),
        features=features,
        finalize=finalize_latents,
        writer="write_latents",
        progress=progress,
        process_index=process_index,
        process_count=process_count,
        barrier_fn=barrier_fn,
        rate_name="images_per_s",
    )
    return out_dir


def finalize_latents(out_dir) -> str:
    """Write the tfds metadata of a latent set whose shards all exist (idempotent)."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    m = read_manifest(out_dir)
    shards.write_metadata(
        out_dir,
        dataset_name=LATENTS_DATASET_NAME,
        num_rows=m["num_rows"],
        shard_size=m["shard_size"],
        features=latent_features(m["latent_shape"], m["num_classes"], m["mode"]),
        description="VAE posteriors (model-space mean/std, or fixed samples) of an image set, "
        "written by flowjax latents; settings in latents_manifest.json.",
        writer="write_latents",
    )
    return out_dir


def is_complete(out_dir) -> bool:
    """Whether ``out_dir`` holds a finished latent set (manifest, tfds metadata, all shards)."""
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    return shards.is_complete(out_dir, LATENTS_MANIFEST, LATENTS_DATASET_NAME, "num_rows")


def held_out_dir(data_dir) -> str:
    """The directory of the held-out latent set of the latent set in ``data_dir``."""
    return os.path.join(os.path.abspath(os.path.expanduser(os.fspath(data_dir))), HELD_OUT)


def open_latents(data_dir) -> tuple[dict, Any]:
    """``(manifest, tfds data source)`` of a finished latent set, or a clear error (also for a
    damaged shard: unreadable, or another record count than the manifest's)."""
    data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    if not is_complete(data_dir):
        raise DatasetNotFoundError(
            f"{data_dir} is not a finished latent set. Make it (it resumes) with\n"
            f"    flowjax latents --vae=VAE_WEIGHTS --tfds=IMAGE_SET --split=train "
            f"--resolution=RES --out={data_dir}"
        )
    manifest = read_manifest(data_dir)
    num_shards, num_rows, size = (
        manifest["num_shards"],
        manifest["num_rows"],
        manifest["shard_size"],
    )
    for index in range(num_shards):
        path = shards.shard_path(data_dir, LATENTS_DATASET_NAME, index, num_shards)
        start, stop = shards.shard_bounds(index, num_rows, size)
        count = shards.count_records(path)
        if count != stop - start:
            found = "unreadable" if count is None else f"{count} records, expected {stop - start}"
            raise ValueError(
                f"latent set {data_dir}: shard {os.path.basename(path)} is damaged ({found}); "
                "run the flowjax latents command that made it again (same arguments): "
                "it rewrites damaged shards."
            )
    return manifest, tfds.builder_from_directory(data_dir).as_data_source(SPLIT)


def read_row(source, index: int, data_dir: str, manifest: dict) -> dict:
    """Row ``index`` of an opened latent set; a damaged shard (a checksum the array_record
    reader rejects) becomes a ``ValueError`` naming the file to delete and rewrite."""
    try:
        return source[index]
    except RuntimeError as err:
        num_shards = manifest["num_shards"]
        shard = index // manifest["shard_size"]
        path = shards.shard_path(data_dir, LATENTS_DATASET_NAME, shard, num_shards)
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else "unreadable"
        raise ValueError(
            f"latent set {data_dir}: row {index} cannot be read, shard {os.path.basename(path)} "
            f"is damaged ({reason}); delete that file and run the flowjax latents "
            "command that made the set again (same arguments): it rewrites missing shards."
        ) from err


def _hash_seed(*ints: int) -> int:
    h = hashlib.sha256(np.asarray(ints, np.int64).tobytes()).digest()
    return int.from_bytes(h[:8], "little")


class LatentSource:
    """A latent set as a training source (the contract of :mod:`flowjax.data.sources`).

    Batches ``{"x1": float32 [b, h, w, c], "label": int32 [b]}``; in posterior mode ``x1 =
    mean_y + std_y * eps`` with ``eps`` a pure function of ``(seed, stream position)``, so batch
    ``k`` is a pure function of ``(seed, k)`` and resuming is exact. The order and sharding are
    :class:`~flowjax.data.batch_order.BatchOrder`'s. ``eval_array(n)`` returns the posterior
    means of the first ``n`` rows of the held-out set ``<data_dir>/heldout`` (latents, not
    pixels: decode them to compare images), never training rows.
    """

    kind = "images"

    def __init__(self, data_dir, *, batch_size, seed, shard_index=0, shard_count=1, name=None):
        self.data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
        self.manifest, self._source = open_latents(self.data_dir)
        self.name = name or os.path.basename(self.data_dir.rstrip("/"))
        self.element_shape = tuple(self.manifest["latent_shape"])
        self.num_classes = self.manifest["num_classes"]
        self.metadata = self.manifest["metadata"]
        self.num_examples = len(self._source)
        self._held_out = None  # (manifest, source) of <data_dir>/heldout, opened when needed
        self._seed = int(seed)
        self._order = BatchOrder(
            self.num_examples,
            global_batch_size=batch_size,
            seed=seed,
            shard_index=shard_index,
            shard_count=shard_count,
        )

    def _example(self, index: int, position: int) -> dict[str, np.ndarray]:
        raw = read_row(self._source, index, self.data_dir, self.manifest)
        if "latent" in raw:
            x1 = np.asarray(raw["latent"], np.float32)
        else:
            rng = np.random.default_rng(_hash_seed(self._seed, position))
            eps = rng.standard_normal(self.element_shape, dtype=np.float32)
            x1 = np.asarray(raw["mean"], np.float32) + np.asarray(raw["std"], np.float32) * eps
        out = {"x1": x1}
        if self.num_classes is not None:
            out["label"] = np.asarray(raw["label"], np.int32)
        return out

    def get_batch(self, step: int):
        return self._order.get_batch(self._example, step)

    def iterator(self, start_step: int = 0) -> Iterator[dict]:
        return self._order.iterator(self._example, start_step)

    def held_out(self) -> tuple[dict, Any]:
        """``(manifest, source)`` of the held-out set, checked to match the training set (shape,
        classes, VAE weights and factors); a ``ValueError`` saying how to make it if absent."""
        if self._held_out is None:
            path = held_out_dir(self.data_dir)
            meta = self.metadata
            if not is_complete(path):
                raise ValueError(
                    f"latent set {self.data_dir} has no held-out set {path}: the evaluation's "
                    "reference must not be training rows. Encode images that are not in the "
                    f"training split there: `flowjax latents --vae=VAE "
                    f"--tfds={meta.get('source', 'IMAGE_SET')} --split=validation "
                    f"--resolution={meta.get('resolution', 'RES')} --eval_split=none --out={path}`."
                )
            manifest, source = open_latents(path)
            keys = ("vae_sha256", "scaling_factor", "shift_factor", "image_shape")
            wrong = [
                f"{k}: {manifest['metadata'].get(k)!r} held out, {meta.get(k)!r} in training"
                for k in keys
                if k in manifest["metadata"] and k in meta and manifest["metadata"][k] != meta[k]
            ] + [
                f"{k}: {manifest[k]!r} held out, {self.manifest[k]!r} in training"
                for k in ("latent_shape", "num_classes")
                if manifest[k] != self.manifest[k]
            ]
            if wrong:
                raise ValueError(
                    f"the held-out set {path} does not match {self.data_dir} ({'; '.join(wrong)});"
                    " encode it with the same VAE, resolution and image set."
                )
            self._held_out = manifest, source
        return self._held_out

    def eval_array(self, n: int):
        manifest, source = self.held_out()
        path = held_out_dir(self.data_dir)
        rows = [read_row(source, i, path, manifest) for i in range(min(int(n), len(source)))]
        key = "latent" if "latent" in rows[0] else "mean"
        x = np.stack([np.asarray(r[key], np.float32) for r in rows])
        labels = np.stack([int(r["label"]) for r in rows]) if self.num_classes else None
        return x, labels

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()
