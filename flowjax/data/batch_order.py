"""The order of training batches every reader shares: epochs, resumption, host sharding, flips.

:class:`BatchOrder` serves any random-access set of ``N`` examples; the tfds image pipeline
(:class:`flowjax.data.tfds_pipeline.ImageDataset`), image folders, pair sets and latent sets
read their batches through it, so they order, shard and resume alike.

Order, resumption and sharding
------------------------------
The training stream is an endless sequence of example indices. Epoch ``e`` occupies stream
positions ``[e*N, (e+1)*N)`` and is a permutation of all ``N`` examples, a fresh one for
every epoch: numpy's Philox permutation keyed by ``(shuffle_seed, e)`` (the user's seed is
first hashed into ``shuffle_seed``, so nearby seeds do not share epochs; computed once per
epoch, vectorised). Global batch ``k`` is stream
positions ``[k*B, (k+1)*B)``, ``B = global_batch_size``; batches run across epoch boundaries,
so no example is dropped and none repeats within an epoch. A random horizontal flip (optional)
is a hash of ``(seed, stream position)``.

So global batch ``k`` is a pure function of ``(seed, k, B)`` (and the data set). Hence

- ``iterator(start_step=k)`` yields exactly the batches ``k, k+1, ...`` that
  ``iterator(0)`` yields at those positions: resume after preemption by passing the restored
  step, no iterator state to checkpoint;
- process ``i`` of ``P`` (``shard_index=i, shard_count=P``) gets rows ``[i*b, (i+1)*b)`` of
  every global batch, so concatenating the processes' batches in process order gives the
  single-process global batch (what ``jax.make_array_from_process_local_data`` expects).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from flowjax.data.base import BatchLayout

if TYPE_CHECKING:
    import grain

# grain (about half a second to import with tensorflow_datasets) is imported by the methods
# that read data, so that commands that read none (sampling a toy run) skip it.

__all__ = ["Batch", "BatchOrder"]

Batch = dict[str, np.ndarray]
_MASK64 = (1 << 64) - 1


def _flip_bit(key: int, position: int) -> bool:
    """The top bit of a splitmix64 hash of ``(key, position)``: a fair coin per stream position."""
    z = (key + (position + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return bool((z ^ (z >> 31)) >> 63)


def _stack(examples: list[dict[str, np.ndarray]]) -> Batch:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class BatchOrder:
    """The order of the module docstring, for any random-access set of ``N`` examples.

    Maps (global batch ``k``, row) to a stream position and the stream position to an example
    index (a fresh Philox permutation per epoch), and reads this process's rows of the batches
    with grain threads. The readers in :mod:`flowjax.data` (:class:`flowjax.data.ImageDataset`,
    :class:`flowjax.data.PairSource`) share it, so they order, shard and resume alike.

    Args:
      num_examples: ``N >= 1``.
      global_batch_size, seed, shard_index, shard_count: as for
        :class:`flowjax.data.ImageDataset` (explicit ints here).
      num_threads: grain reader threads.
      prefetch_buffer_size: examples read ahead; default ``2 * b`` (at least 16).

    Attributes:
      local_batch_size: ``b = B // shard_count``.
      position_key: a 32-bit key derived from ``seed`` (independent of the shuffle) for
        per-position randomness such as :class:`flowjax.data.ImageDataset`'s flips.
      max_steps: the number of global batches the stream holds (effectively endless).
    """

    def __init__(
        self,
        num_examples: int,
        *,
        global_batch_size: int,
        seed: int,
        shard_index: int,
        shard_count: int,
        num_threads: int = 8,
        prefetch_buffer_size: int | None = None,
    ):
        self.layout = BatchLayout(global_batch_size, shard_index, shard_count, seed)
        if num_examples < 1:
            raise ValueError(f"num_examples={num_examples}; the data set is empty.")
        if num_threads < 1:
            raise ValueError(f"num_threads={num_threads}; pass at least 1.")
        self.num_examples = int(num_examples)
        self.seed = int(seed)
        self.global_batch_size = int(global_batch_size)
        self.shard_index = int(shard_index)
        self.shard_count = int(shard_count)
        self.local_batch_size = self.layout.local_batch_size
        import grain  # heavy: only reading data needs it

        self.read_options = grain.ReadOptions(
            num_threads=int(num_threads),
            prefetch_buffer_size=int(prefetch_buffer_size or max(2 * self.local_batch_size, 16)),
        )
        shuffle_seed, self.position_key = (
            int(s) for s in np.random.SeedSequence(self.seed).generate_state(2, np.uint32)
        )
        self._shuffle_seed = shuffle_seed
        self._epochs: dict[int, np.ndarray] = {}  # the last two epochs' permutations
        self._lock = threading.Lock()
        self.max_steps = (sys.maxsize - 1) // self.global_batch_size

    def check_step(self, step: Any, what: str = "step") -> int:
        if not isinstance(step, (int, np.integer)) or not 0 <= step < self.max_steps:
            raise ValueError(f"{what}={step!r}; pass an int in [0, {self.max_steps}).")
        return int(step)

    def position(self, step: int, row: int) -> int:
        """The stream position of this process's row ``row`` of global batch ``step``."""
        return self.layout.position(step, row)

    def flips(self, position: int) -> bool:
        """Whether a random horizontal flip mirrors the example at stream position ``position``:
        a fair coin, a hash of ``(position_key, position)`` (the image readers share it)."""
        return _flip_bit(self.position_key, position)

    def epoch_permutation(self, epoch: int) -> np.ndarray:
        """The example indices of epoch ``epoch``, in stream order (a permutation of ``N``).

        A Philox permutation keyed by ``(shuffle_seed, epoch)``: a pure function of the seed
        and the epoch, vectorised (milliseconds for a million examples) and cached.
        """
        with self._lock:  # grain reads from several threads
            perm = self._epochs.get(epoch)
            if perm is None:
                bits = np.random.Philox(key=[self._shuffle_seed, epoch])
                perm = np.random.Generator(bits).permutation(self.num_examples)
                if len(self._epochs) >= 2:
                    self._epochs.pop(min(self._epochs))
                self._epochs[epoch] = perm
            return perm

    def example_index(self, position: int) -> int:
        """The example at stream position ``position``."""
        epoch, offset = divmod(int(position), self.num_examples)
        return int(self.epoch_permutation(epoch)[offset])

    def example_indices(self, step: int) -> np.ndarray:
        """Indices of this process's rows of global batch ``step``: int64 [b]."""
        step = self.check_step(step)
        positions = self.position(step, 0) + np.arange(self.local_batch_size)
        epochs, offsets = np.divmod(positions, self.num_examples)
        out = np.empty(self.local_batch_size, np.int64)
        for epoch in np.unique(epochs):
            rows = epochs == epoch
            out[rows] = self.epoch_permutation(int(epoch))[offsets[rows]]
        return out

    def _local(self, example_fn: Callable[[int, int], dict]) -> grain.MapDataset:
        """Local position ``q`` (the ``q``-th row this process sees) -> ``example_fn(i, p)``."""

        def local_example(q: int) -> dict:
            position = self.position(*divmod(int(q), self.local_batch_size))
            return example_fn(self.example_index(position), position)

        import grain  # heavy: only reading data needs it

        return grain.MapDataset.range(self.max_steps * self.local_batch_size).map(local_example)

    def get_batch(self, example_fn: Callable[[int, int], dict], step: int) -> Batch:
        """This process's rows of global batch ``step``, read synchronously.

        ``example_fn(index, position)`` returns one example (a dict of numpy arrays) given its
        index in the data set and its stream position.
        """
        start = self.position(self.check_step(step), 0)
        indices = self.example_indices(step)
        return _stack([example_fn(int(i), start + r) for r, i in enumerate(indices)])

    def iterator(
        self,
        example_fn: Callable[[int, int], dict],
        start_step: int = 0,
        num_steps: int | None = None,
    ) -> Iterator[Batch]:
        """Batches ``start_step, start_step + 1, ...`` of ``example_fn``'s examples, read ahead by
        grain threads (endless unless ``num_steps`` is given)."""
        start = self.check_step(start_step, "start_step")
        stop = self.max_steps
        if num_steps is not None:
            if not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
                raise ValueError(f"num_steps={num_steps!r}; pass a non-negative int or None.")
            stop = min(stop, start + int(num_steps))
        b = self.local_batch_size
        local = self._local(example_fn)[start * b : stop * b]
        batches = local.to_iter_dataset(self.read_options).batch(
            b, drop_remainder=True, batch_fn=_stack
        )
        return iter(batches)
