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

Training (:class:`PairSource`) reads the pairs in the order of :mod:`flowjax.data.batch_order`
(a fresh permutation per epoch, global batch ``k`` a pure function of ``(seed, k)``), with the
source contract of :class:`flowjax.types.DataSource`.

The package is the format in three modules: :mod:`~flowjax.data.pairs.manifest` (names,
features, manifest), :mod:`~flowjax.data.pairs.writer` (:func:`write_pairs`,
:func:`finalize_pairs`) and :mod:`~flowjax.data.pairs.reader` (:func:`is_complete`,
:func:`load_pairs`, :class:`PairSource`); the resumable shard loop under the writer is
:mod:`flowjax.data.shards`, shared with :mod:`flowjax.data.latents`.

Example::

    def shard_fn(index, start, stop):
        x0 = jax.random.normal(jax.random.fold_in(key, index), (stop - start, 8, 8, 1))
        return {"x0": x0, "x1": solve_teacher_ode(x0)}

    write_pairs("/data/pairs/digits_rk4", shard_fn, num_pairs=100_000, shard_size=4096,
                element_shape=(8, 8, 1), metadata={"teacher": ckpt, "solver": "rk4", "nfe": 40})
    source = PairSource("/data/pairs/digits_rk4", base=digits_source, batch_size=128, seed=0)
    batch = next(source.iterator(0))  # {"x0": [128, 8, 8, 1], "x1": [128, 8, 8, 1]}
"""

from flowjax.data.pairs.manifest import (
    PAIRS_DATASET_NAME,
    PAIRS_MANIFEST,
    PAIRS_SPLIT,
    pair_features,
    read_manifest,
)
from flowjax.data.pairs.reader import IN_MEMORY_BYTES, PairSource, is_complete, load_pairs
from flowjax.data.pairs.writer import finalize_pairs, write_pairs

__all__ = [
    "IN_MEMORY_BYTES",
    "PAIRS_DATASET_NAME",
    "PAIRS_MANIFEST",
    "PAIRS_SPLIT",
    "PairSource",
    "finalize_pairs",
    "is_complete",
    "load_pairs",
    "pair_features",
    "read_manifest",
    "write_pairs",
]
