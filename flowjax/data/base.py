"""The data-source contract (:class:`DataSource`) and the one batch layout (:class:`BatchLayout`).

A training source yields, for global batch ``k = start_step, start_step + 1, ...``, this
process's rows of that batch. With ``B`` the global batch size and ``P`` processes, process
``i`` holds rows ``[i b, (i + 1) b)`` of each global batch, ``b = B / P``; the row ``r`` of
its part of batch ``k`` is the stream position ``k B + i b + r``. :class:`BatchLayout` is
that arithmetic, written once and used by every source in :mod:`flowjax.data` (toy, array,
array file, pairs, tfds images). Batch ``k`` is a pure function of the seed and ``k``, so a
resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import numpy as np


def check_batch_layout(
    *, global_batch_size: Any, seed: Any, shard_index: Any, shard_count: Any
) -> None:
    """Raise a ``ValueError`` a user can act on unless the batch/process layout is valid."""
    if not isinstance(global_batch_size, (int, np.integer)) or global_batch_size <= 0:
        raise ValueError(f"global_batch_size={global_batch_size!r}; pass a positive int.")
    if shard_count <= 0 or not 0 <= shard_index < shard_count:
        raise ValueError(
            f"shard_index={shard_index}, shard_count={shard_count}; need "
            "0 <= shard_index < shard_count (e.g. jax.process_index(), jax.process_count())."
        )
    if global_batch_size % shard_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by "
            f"shard_count={shard_count}; choose a global batch size that is a multiple of the "
            "number of processes."
        )
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}; pass a non-negative int.")


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """Global batch ``k`` -> this process's rows: ``B`` rows over ``P`` processes.

    Attributes:
      global_batch_size: ``B``.
      shard_index, shard_count: this process ``i`` and the number of processes ``P``.
      local_batch_size: ``b = B / P`` (property).
      offset: ``i b``, the first global row this process holds (property).
    """

    global_batch_size: int
    shard_index: int = 0
    shard_count: int = 1
    seed: int = 0

    def __post_init__(self):
        check_batch_layout(
            global_batch_size=self.global_batch_size,
            seed=self.seed,
            shard_index=self.shard_index,
            shard_count=self.shard_count,
        )

    @property
    def local_batch_size(self) -> int:
        return int(self.global_batch_size) // int(self.shard_count)

    @property
    def offset(self) -> int:
        return int(self.shard_index) * self.local_batch_size

    @property
    def rows(self) -> slice:
        """This process's rows of a global batch: ``[offset, offset + b)``."""
        return slice(self.offset, self.offset + self.local_batch_size)

    def position(self, step: int, row: int) -> int:
        """The stream position of this process's row ``row`` of global batch ``step``."""
        return int(step) * int(self.global_batch_size) + self.offset + int(row)

    def local(self, global_rows: Any) -> Any:
        """This process's part of the rows of one global batch (leading axis ``B``)."""
        return global_rows[self.offset : self.offset + self.local_batch_size]


def held_out_split(n: int, eval_fraction: float, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``(held_out, train)`` of a data set of ``n`` examples that holds out a fraction.

    The first ``ceil(eval_fraction * n)`` entries of a fixed permutation (numpy's default
    generator, seed 0: the same for every run seed) are held out, the rest train; both in
    permutation order. ``what`` names the data in the error (e.g. ``"rows in 'x.npz'"``).

    Raises:
      ValueError: ``eval_fraction`` outside ``(0, 1)`` or leaving no training example.
    """
    eval_fraction = float(eval_fraction)
    n_eval = math.ceil(eval_fraction * n)
    if not 0.0 < eval_fraction < 1.0 or n - n_eval < 1:
        raise ValueError(
            f"data.eval_fraction={eval_fraction} must be in (0, 1) and leave training "
            f"examples ({n} {what}); or give data.eval_path"
        )
    perm = np.random.default_rng(0).permutation(n)
    return perm[:n_eval], perm[n_eval:]


def step_iterator(get_batch: Callable[[int], dict], start_step: int = 0) -> Iterator[dict]:
    """``get_batch(start_step), get_batch(start_step + 1), ...`` (random-access sources)."""
    step = int(start_step)
    while True:
        yield get_batch(step)
        step += 1


@runtime_checkable
class FeatureMetric(Protocol):
    """A distance from generated samples to a data set's held-out examples on learned features.

    ``name`` is the metric's prefix (scores are logged as ``<name>_<sampler label>``);
    ``metric(samples)`` takes samples ``[n, *element_shape]`` in the data's range (images in
    ``[-1, 1]``, the t=1 end of the path) and returns a float (lower is closer).
    """

    name: str

    def __call__(self, samples: np.ndarray) -> float: ...


# What building a model needs; ``iterator`` and ``eval_array`` are needed only once training or
# evaluation reads data (a shape-only stand-in builds an experiment without them).
_REQUIRED = ("kind", "name", "element_shape", "num_classes")


def check_source(source: Any) -> Any:
    """``source`` if it describes its data (:class:`DataSource`'s ``kind``, ``name``,
    ``element_shape``, ``num_classes``), else a clear error naming what is missing."""
    missing = [m for m in _REQUIRED if not hasattr(source, m)]
    if missing:
        raise TypeError(
            f"{type(source).__name__} is not a data source: it lacks {missing}; see "
            "flowjax.data.DataSource for the members a source needs"
        )
    return source


def device_batch_fn(source: Any) -> Callable[[Any], dict] | None:
    """The source's optional ``device_batch(step)``, or ``None``."""
    fn = getattr(source, "device_batch", None)
    return fn if callable(fn) else None


def fingerprint_of(source: Any) -> str | None:
    """The source's optional ``fingerprint()``, or ``None``."""
    fn = getattr(source, "fingerprint", None)
    return fn() if callable(fn) else None


def batch_keys_of(source: Any) -> tuple[str, ...]:
    """The source's optional ``batch_keys``, or ``("x1",)``."""
    return tuple(getattr(source, "batch_keys", ("x1",)))


def has_eval_data(source: Any) -> bool:
    """False for sources that declare ``has_eval_data = False`` (shape-only stand-ins)."""
    return bool(getattr(source, "has_eval_data", True))


def unavailable_reason(source: Any) -> str | None:
    """Why ``source`` has no examples (its optional ``reason``), or ``None``."""
    reason = getattr(source, "reason", None)
    return str(reason) if reason else None


def feature_metric(source: Any, cache_dir: str) -> FeatureMetric | None:
    """The source's optional feature metric (``feature_metric(cache_dir)``), else its ``base``'s,
    else ``None``. A source without examples (:func:`has_eval_data` False) has none."""
    while source is not None and has_eval_data(source):
        fn = getattr(source, "feature_metric", None)
        if callable(fn):
            return fn(cache_dir)
        source = getattr(source, "base", None)
    return None
