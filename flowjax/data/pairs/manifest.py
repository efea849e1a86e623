"""The reflow pair format: names, the record features and the manifest of a pair directory.

:mod:`flowjax.data.pairs` describes the layout; :mod:`~flowjax.data.pairs.writer` writes it and
:mod:`~flowjax.data.pairs.reader` reads it, both through these definitions.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from flowjax.data import shards

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

PAIRS_DATASET_NAME = "reflow_pairs"
PAIRS_MANIFEST = "pairs_manifest.json"
PAIRS_SPLIT = shards.SPLIT
_FORMAT = "flowjax.reflow_pairs"
_FORMAT_VERSION = 1


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
    import tensorflow_datasets as tfds  # heavy: imported where used

    shape = _check_element_shape(element_shape)
    num_classes = _check_num_classes(num_classes)
    tensor = lambda: tfds.features.Tensor(
        shape=shape, dtype=np.float32, encoding=tfds.features.Encoding.BYTES
    )
    features = {"x0": tensor(), "x1": tensor()}
    if num_classes is not None:
        features["label"] = tfds.features.ClassLabel(num_classes=num_classes)
    return tfds.features.FeaturesDict(features)


def make_manifest(num_pairs, shard_size, element_shape, num_classes, metadata) -> dict:
    """The manifest of a generation: its settings and the caller's JSON ``metadata``."""
    return {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "num_pairs": num_pairs,
        "shard_size": shard_size,
        "num_shards": math.ceil(num_pairs / shard_size),
        "element_shape": list(element_shape),
        "num_classes": num_classes,
        "metadata": shards.json_metadata(metadata),
    }


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The contents of ``<out_dir>/pairs_manifest.json``.

    Keys: ``num_pairs``, ``shard_size``, ``num_shards``, ``element_shape`` (a list),
    ``num_classes`` (``None`` if unconditional), ``metadata`` (what the caller passed to
    :func:`write_pairs`), ``format``, ``format_version``.

    Raises:
      FileNotFoundError: there is no manifest (not a pair directory, or nothing written yet).
    """
    return shards.read_json(out_dir, PAIRS_MANIFEST)
