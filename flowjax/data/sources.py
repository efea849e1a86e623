"""Training data sources built from the ``data`` config section.

A source has ``kind`` (``"points"`` or ``"images"``), ``name``, ``element_shape``,
``num_classes`` (``None`` if unlabelled), ``iterator(start_step)`` yielding this process's
part of global batch ``start_step, start_step + 1, ...`` as a dict ``{"x1": [b, ...],
"label": [b]}`` (``label`` only for labelled data), and ``eval_array(n)`` returning held-out
data ``(x [n, ...], labels or None)``. Batch ``k`` is a pure function of the seed and ``k``, so a
resumed run sees exactly the batches an uninterrupted run would have seen.

Config fields:
- ``kind="toy2d"``: ``name`` (see :func:`flowjax.data.toy2d.sample_toy`).
- ``kind="tfds"``: ``name`` (any prepared tfds image data set; ``sklearn_digits`` prepares
  itself), ``data_dir``, ``split``, ``eval_split``, ``random_flip``.
- ``pairs_dir`` (any kind): train on the reflow pairs ``{"x0", "x1"[, "label"]}`` stored there
  (written by ``python -m flowjax.reflow``; :class:`flowjax.data.PairSource`); the data set
  described by the other fields is the one the pairs imitate, used for evaluation.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import jax
import numpy as np

from flowjax.data import toy2d
from flowjax.data.tfds_pipeline import ImageDataset, load_split_array


class ToySource:
    """2-D toy data: global batch ``k`` is ``sample_toy(name, fold_in(key, k), B)``."""

    kind = "points"
    num_classes = None
    element_shape = (2,)

    def __init__(
        self, name: str, *, batch_size: int, seed: int, shard_index: int = 0, shard_count: int = 1
    ):
        if batch_size % shard_count:
            raise ValueError(f"batch_size={batch_size} is not divisible by {shard_count} processes")
        toy2d.sample_toy(name, jax.random.PRNGKey(0), 1)  # validates the name
        self.name = name
        self.batch_size = batch_size
        self.local = batch_size // shard_count
        self.offset = shard_index * self.local
        self._key = jax.random.PRNGKey(seed)
        self._eval_key = jax.random.fold_in(jax.random.PRNGKey(seed), 2**31 - 1)
        lo, hi = self.offset, self.offset + self.local
        key = self._key

        def batch(step):
            return toy2d.sample_toy(name, jax.random.fold_in(key, step), batch_size)[lo:hi]

        self._batch = jax.jit(batch)

    def get_batch(self, step: int) -> dict:
        """This process's rows of global batch ``step`` (a device array)."""
        return {"x1": self._batch(step)}

    def device_batch(self, step) -> dict:
        """The whole global batch ``step`` as a pure, traceable function of ``step``.

        The training loop fuses it into the jitted step (no per-step dispatch or transfer);
        its rows equal the concatenation of every process's :meth:`get_batch`.
        """
        return {
            "x1": toy2d.sample_toy(self.name, jax.random.fold_in(self._key, step), self.batch_size)
        }

    def iterator(self, start_step: int = 0) -> Iterator[dict]:
        step = start_step
        while True:
            yield self.get_batch(step)
            step += 1

    def eval_array(self, n: int) -> tuple[np.ndarray, None]:
        return np.asarray(toy2d.sample_toy(self.name, self._eval_key, n)), None


class TfdsImageSource:
    """Images from a tfds data set through :class:`~flowjax.data.ImageDataset` (grain)."""

    kind = "images"

    def __init__(
        self,
        name: str,
        *,
        batch_size: int,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
        data_dir: str | None = None,
        split: str = "train",
        eval_split: str = "test",
        random_flip: bool = False,
    ):
        self.name = name
        self.data_dir = os.path.expanduser(data_dir) if data_dir else None
        self.eval_split = eval_split
        self.dataset = ImageDataset(
            name,
            global_batch_size=batch_size,
            split=split,
            data_dir=self.data_dir,
            seed=seed,
            shard_index=shard_index,
            shard_count=shard_count,
            random_flip=random_flip,
        )
        self.element_shape = tuple(self.dataset.element_shape)
        self.num_classes = self.dataset.num_classes

    def iterator(self, start_step: int = 0) -> Iterator[dict]:
        return self.dataset.iterator(start_step)

    def eval_array(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        return load_split_array(self.name, self.eval_split, self.data_dir, max_examples=n)


class ArraySource:
    """In-memory training examples (a dict of arrays with one leading axis) in random batches.

    Global batch ``k`` is the rows ``randint(fold_in(key, k), [B], 0, n)`` (with replacement),
    a pure function of the seed and ``k``, so a resumed run sees the same batches; this process
    gets its slice of each. ``kind``, ``name``, ``element_shape``, ``num_classes`` and
    ``eval_array`` come from ``base``, the data set the model was trained on, so evaluation
    still scores samples against held-out real data. Used for fine-tunes on generated data
    (BOSS straightening tuples).
    """

    def __init__(
        self,
        arrays: dict,
        *,
        base: Any,
        batch_size: int,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
    ):
        if not arrays:
            raise ValueError("ArraySource needs at least one array")
        sizes = {k: np.shape(v)[0] for k, v in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all arrays need the same number of rows; got {sizes}")
        if batch_size % shard_count:
            raise ValueError(f"batch_size={batch_size} is not divisible by {shard_count} processes")
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.num_examples = next(iter(sizes.values()))
        self.base = base
        self.kind, self.name = base.kind, base.name
        self.element_shape, self.num_classes = tuple(base.element_shape), base.num_classes
        self.batch_size = batch_size
        self.local = batch_size // shard_count
        self.offset = shard_index * self.local
        self._key = jax.random.fold_in(jax.random.PRNGKey(seed), 7)

    def rows(self, step: int) -> np.ndarray:
        key = jax.random.fold_in(self._key, step)
        rows = np.asarray(jax.random.randint(key, (self.batch_size,), 0, self.num_examples))
        return rows[self.offset : self.offset + self.local]

    def get_batch(self, step: int) -> dict:
        rows = self.rows(step)
        return {k: v[rows] for k, v in self.arrays.items()}

    def iterator(self, start_step: int = 0) -> Iterator[dict]:
        step = start_step
        while True:
            yield self.get_batch(step)
            step += 1

    def eval_array(self, n: int):
        return self.base.eval_array(n)


def make_source(
    cfg: Any,
    *,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    pairs: bool = True,
):
    """Build the training source described by ``cfg`` (the ``data`` config section).

    ``pairs=False`` ignores ``cfg.pairs_dir`` (the real data set behind a pair data set)."""
    kind = cfg.get("kind", "toy2d")
    common = dict(
        batch_size=batch_size, seed=seed, shard_index=shard_index, shard_count=shard_count
    )
    pairs_dir = cfg.get("pairs_dir", None) if pairs else None
    if pairs_dir:
        from flowjax.data.pairs import PairSource

        base = make_source(cfg, pairs=False, **common)
        return PairSource(os.path.expanduser(pairs_dir), base=base, **common)
    if kind == "toy2d":
        return ToySource(cfg.name, **common)
    if kind == "tfds":
        return TfdsImageSource(
            cfg.name,
            data_dir=cfg.get("data_dir", None),
            split=cfg.get("split", "train"),
            eval_split=cfg.get("eval_split", "test"),
            random_flip=bool(cfg.get("random_flip", False)),
            **common,
        )
    raise ValueError(f"unknown data kind {kind!r}; choose 'toy2d' or 'tfds'")
