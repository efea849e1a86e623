"""Reading reflow pair data sets: :func:`is_complete`, :func:`load_pairs` and :class:`PairSource`.

The layout is described in :mod:`flowjax.data.pairs`; :mod:`~flowjax.data.pairs.writer` writes it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from flowjax.data import shards
from flowjax.data.base import BatchLayout
from flowjax.data.batch_order import Batch, BatchOrder
from flowjax.data.pairs.manifest import (
    PAIRS_DATASET_NAME,
    PAIRS_MANIFEST,
    PAIRS_SPLIT,
    read_manifest,
)
from flowjax.data.tfds_pipeline import DatasetNotFoundError

IN_MEMORY_BYTES = 1 << 30  # PairSource reads smaller pair sets into RAM


def is_complete(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` holds a finished pair data set.

    True when the manifest and the tfds metadata are readable, the metadata describes the
    manifest's ``num_pairs`` in its shards, and every shard file exists. (Record counts are
    checked when the shards are written and by :func:`finalize_pairs`, not here.)
    """
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    return shards.is_complete(out_dir, PAIRS_MANIFEST, PAIRS_DATASET_NAME, "num_pairs")


def _open_complete(data_dir: str) -> tuple[dict, Any]:
    """The manifest and the tfds ``train`` data source of a finished pair directory."""
    import tensorflow_datasets as tfds  # heavy: imported where used

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
    """Reflow pairs as a training source (the contract of :class:`flowjax.types.DataSource`).

    Batches are ``{"x0": float32 [b, ...], "x1": float32 [b, ...], "label": int32 [b]}``
    (``label`` only for conditional pairs), ``b = batch_size // shard_count``; a pair's ``x0``
    and ``x1`` (and label) always stay in the same row. The order is that of
    :class:`~flowjax.data.ImageDataset` (shared through
    :class:`~flowjax.data.batch_order.BatchOrder`): epoch ``e`` is a fresh permutation of
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

      batch_keys: ``("x0", "x1")``, the entries of each batch besides ``label``.

    Raises:
      DatasetNotFoundError: ``data_dir`` is not a finished pair data set.
      ValueError: bad batch/shard/seed arguments, or pairs whose element shape or classes differ
        from ``base``'s.
    """

    batch_keys = ("x0", "x1")

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
