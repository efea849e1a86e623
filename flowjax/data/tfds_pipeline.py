"""One input pipeline for any prepared tfds image data set: tfds data sources + grain, no TF.

Reading uses ``tfds.data_source(name, split=..., data_dir=..., download=False)`` (random access
to array_record files) and grain's ``MapDataset`` API with thread-based prefetch, so nothing here
imports TensorFlow. Any tfds image data set works once it is prepared in the array_record
format: ``mnist``, ``cifar10``, ``imagenet_resized/64x64``, ``downsampled_imagenet/64x64`` ...
A data set that can be prepared offline registers how (:func:`register_local_builder`; the
bundled ``sklearn_digits`` of :mod:`flowjax.data.digits` does), and one with a metric on
learned features registers it (:func:`flowjax.data.feature_metrics.register_feature_metric`);
this module names no data set.

Batches
-------
Each batch is a dict of numpy arrays::

    {"x1": float32 [b, H, W, C] in [-1, 1],   # the data end (t=1) of the flow-matching path
     "label": int32 [b]}                        # absent when the data set has no labels

with ``b = global_batch_size // shard_count`` rows on each process.

Order, resumption and sharding are :class:`flowjax.data.batch_order.BatchOrder`'s: global
batch ``k`` is a pure function of ``(seed, k, B)`` (and the data set), so
``iterator(start_step=k)`` resumes exactly and process ``i`` of ``P`` gets rows
``[i*b, (i+1)*b)`` of every global batch; a random horizontal flip (optional) is a hash of
``(seed, stream position)``.

Example::

    ds = ImageDataset("sklearn_digits", data_dir="/tmp/tfds", global_batch_size=128, seed=0)
    for step, batch in zip(range(start, num_steps), ds.iterator(start_step=start)):
        ...  # batch["x1"]: float32 [128, 8, 8, 1], batch["label"]: int32 [128]
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from flowjax.data.base import check_batch_layout
from flowjax.data.batch_order import Batch, BatchOrder

# grain and tensorflow_datasets (about half a second to import together) are imported by the
# functions that read data, so that commands that read none (sampling a toy run) skip them.


class DatasetNotFoundError(FileNotFoundError):
    """A tfds data set is not prepared (in the array_record format) under the given data_dir."""


def base_name(name: str) -> str:
    """A tfds name without its config and version: ``"imagenet_resized/64x64:0.1.0"`` ->
    ``"imagenet_resized"``."""
    return name.split(":")[0].split("/")[0]


def _data_dir_text(data_dir: str | os.PathLike | None) -> str:
    if data_dir is None:
        return "tfds' default data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    return os.fspath(data_dir)


@dataclasses.dataclass(frozen=True)
class LocalBuilder:
    """A tfds data set this machine can prepare without a download.

    Attributes:
      prepare: ``prepare(data_dir) -> data_dir`` prepares the set (in the array_record format)
        under ``data_dir`` (``None``: its default place) if it is missing, and returns the
        directory it is in.
      instructions: how a user prepares it by hand; ``{data_dir}`` is replaced by the
        directory (as a Python literal).
      define: ``define()`` defines (registers with tfds) the builder class, when the module
        that names the set leaves that to first use; called before the set is read.
    """

    prepare: Callable[[str | os.PathLike | None], str]
    instructions: str
    define: Callable[[], Any] | None = None


_LOCAL_BUILDERS: dict[str, LocalBuilder] = {}


def register_local_builder(name: str, builder: LocalBuilder) -> None:
    """Let ``open_source(name, auto_prepare=True)`` prepare data set ``name`` itself."""
    _LOCAL_BUILDERS[base_name(name)] = builder


def how_to_prepare(name: str, data_dir: str | os.PathLike | None) -> str:
    """The instruction, as text, that prepares data set ``name`` under ``data_dir``."""
    dir_arg = "<your data_dir>" if data_dir is None else os.fspath(data_dir)
    local = _LOCAL_BUILDERS.get(base_name(name))
    if local is not None:
        return local.instructions.format(data_dir=repr(dir_arg))
    return (
        "Prepare it on a machine with internet access, in the array_record format, with\n"
        f"    tfds build {name} --data_dir={dir_arg} --file_format=array_record\n"
        "or in Python\n"
        f"    tfds.builder({name!r}, data_dir={dir_arg!r})"
        ".download_and_prepare(file_format='array_record')\n"
        "and copy the data directory here. The array_record format is required because the "
        "pipeline reads by random access (tfds.data_source); a copy already prepared as "
        "tfrecord can be converted with `tfds convert_format "
        f"--dataset_dir={dir_arg}/{base_name(name)} --out_file_format=array_record`. "
        "Some data sets (e.g. imagenet2012) also need manually downloaded archives: see their "
        "tfds catalogue page."
    )


def open_source(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    auto_prepare: bool = True,
) -> Any:
    """``tfds.data_source(name, split=split, data_dir=data_dir, download=False)``, explained.

    Args:
      name: a tfds name, optionally with config and version (``"cifar10"``,
        ``"imagenet_resized/64x64"``, ``"sklearn_digits:1.0.0"``).
      split: a tfds split, slicing allowed (``"train"``, ``"train[:90%]"``).
      data_dir: the tfds data directory; ``None`` means tfds' default.
      auto_prepare: prepare a data set registered with :func:`register_local_builder` (e.g.
        ``sklearn_digits``) first if it is missing (no download). Others are never downloaded.

    Returns:
      A random-access source: ``len(source)`` and ``source[i] -> dict of numpy arrays``, with
      ``source.dataset_info`` describing the features.

    Raises:
      DatasetNotFoundError: the data set is unknown, missing under ``data_dir`` or prepared
        in a format without random access; the message says how to prepare it.
    """
    import tensorflow_datasets as tfds  # heavy: only reading a data set needs it

    local = _LOCAL_BUILDERS.get(base_name(name))
    if local is not None and local.define is not None:
        local.define()
    if auto_prepare and local is not None:
        data_dir = local.prepare(data_dir)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.DatasetNotFoundError as err:
        reason = (
            "tfds knows no builder of that name (check the spelling against the tfds "
            "catalogue) and found no prepared copy there"
        )
        cause = err
    except NotImplementedError as err:  # tfds' answer when no array_record files are found
        reason = "it is not prepared there, or only in a format without random access (tfrecord)"
        cause = err
    except FileNotFoundError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "a file is missing"
        cause = err
    raise DatasetNotFoundError(
        f"The tfds data set {name!r} (split {split!r}) cannot be read from "
        f"{_data_dir_text(data_dir)}: {reason}.\n" + how_to_prepare(name, data_dir)
    ) from cause


class _ImageSource:
    """A tfds source plus the per-example conversion to ``(x1 float32 [H, W, C], label int32)``."""

    def __init__(self, name, split, data_dir, image_key, label_key, auto_prepare):
        self.name = name
        self.source = open_source(name, split, data_dir, auto_prepare=auto_prepare)
        features = self.source.dataset_info.features
        keys = list(features.keys())
        if image_key not in keys:
            raise ValueError(
                f"{name!r} has no feature {image_key!r}; its features are {keys}. "
                "Pass image_key=<one of them>."
            )
        image_feature = features[image_key]
        shape = tuple(image_feature.shape)
        if len(shape) == 2:
            shape = (*shape, 1)
        if len(shape) != 3 or any(d is None for d in shape):
            raise ValueError(
                f"{name!r}[{image_key!r}] has shape {tuple(image_feature.shape)}; this pipeline "
                "batches images of one fixed shape [H, W, C]. Use a fixed-size variant of the "
                "data set (e.g. 'imagenet_resized/64x64' instead of 'imagenet2012')."
            )
        dtype = np.dtype(image_feature.np_dtype)
        if dtype.kind not in "uif":
            raise ValueError(
                f"{name!r}[{image_key!r}] has dtype {dtype}; this pipeline expects integer "
                "pixels (e.g. uint8 in 0..255), which it scales to [-1, 1], or float latents."
            )
        self.element_shape: tuple[int, int, int] = shape
        self._image_key = image_key
        # Integer pixels: x1 = x / (max/2) - 1. Float features (e.g. pre-computed, pre-scaled
        # autoencoder latents) are used as they are.
        self._half_max = None if dtype.kind == "f" else np.float32(np.iinfo(dtype).max / 2.0)
        self.label_key = label_key if label_key is not None and label_key in keys else None
        self.num_classes: int | None = None
        if self.label_key is not None:
            self.num_classes = getattr(features[self.label_key], "num_classes", None)
        self.num_examples = len(self.source)
        if self.num_examples == 0:
            raise ValueError(f"{name!r} split {split!r} is empty.")

    def example(self, index: int, flip: bool = False) -> dict[str, np.ndarray]:
        """Example ``index``: ``{"x1": float32 [H, W, C] in [-1, 1], "label": int32 []}``."""
        raw = self.source[index]
        image = np.asarray(raw[self._image_key])
        if image.ndim == 2:
            image = image[..., None]
        if image.shape != self.element_shape:
            raise ValueError(
                f"{self.name!r} example {index} has image shape {image.shape}, expected "
                f"{self.element_shape}."
            )
        if flip:
            image = image[:, ::-1]
        x1 = image.astype(np.float32)
        out = {"x1": x1 if self._half_max is None else x1 / self._half_max - np.float32(1.0)}
        if self.label_key is not None:
            out["label"] = np.asarray(raw[self.label_key], dtype=np.int32)
        return out


class ImageDataset:
    """Globally shuffled, host-sharded, exactly resumable training batches of a tfds image set.

    See :mod:`flowjax.data.batch_order` for the order and sharding contract.

    Args:
      name: tfds name (with optional config/version), e.g. ``"sklearn_digits"``, ``"cifar10"``.
      global_batch_size: ``B``, the batch size summed over all processes.
      split: tfds split (slicing allowed).
      data_dir: tfds data directory; ``None`` means tfds' default.
      seed: non-negative int; fixes the per-epoch permutations and the flips.
      shard_index, shard_count: this process's index and the number of processes; ``None``
        means ``jax.process_index()`` / ``jax.process_count()``. ``B`` must be divisible by
        ``shard_count``.
      random_flip: flip each image left-right with probability 1/2.
      image_key, label_key: feature names; ``label_key=None`` (or a data set without that
        feature) leaves ``"label"`` out of the batches.
      num_threads: grain reader threads (loading overlaps compute; threads only, no
        processes).
      prefetch_buffer_size: examples read ahead; default ``2 * b`` (at least 16).
      auto_prepare: prepare a locally buildable data set (:func:`register_local_builder`,
        e.g. ``sklearn_digits``) if it is missing (no download needed).

    Attributes:
      element_shape: ``(H, W, C)`` of one image.
      num_classes: from the label's ``ClassLabel`` feature, else ``None``.
      num_examples: ``N``, examples in the split.
      local_batch_size: ``b = B // shard_count``.
      steps_per_epoch: ``N / B`` as a float (batches run across epoch boundaries).

    Raises:
      DatasetNotFoundError: the data set is not prepared under ``data_dir``.
      ValueError: bad batch size / sharding / seed, or images without one fixed integer shape.
    """

    def __init__(
        self,
        name: str,
        *,
        global_batch_size: int,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        seed: int = 0,
        shard_index: int | None = None,
        shard_count: int | None = None,
        random_flip: bool = False,
        image_key: str = "image",
        label_key: str | None = "label",
        num_threads: int = 8,
        prefetch_buffer_size: int | None = None,
        auto_prepare: bool = True,
    ):
        if shard_index is None or shard_count is None:
            import jax  # only when the caller leaves the process layout to JAX

            shard_index = jax.process_index() if shard_index is None else shard_index
            shard_count = jax.process_count() if shard_count is None else shard_count
        check_batch_layout(
            global_batch_size=global_batch_size,
            seed=seed,
            shard_index=shard_index,
            shard_count=shard_count,
        )
        if num_threads < 1:
            raise ValueError(f"num_threads={num_threads}; pass at least 1.")

        self._images = _ImageSource(name, split, data_dir, image_key, label_key, auto_prepare)
        self.name = name
        self.split = split
        self.seed = int(seed)
        self.global_batch_size = int(global_batch_size)
        self.shard_index = int(shard_index)
        self.shard_count = int(shard_count)
        self.local_batch_size = self.global_batch_size // self.shard_count
        self.random_flip = bool(random_flip)
        self.element_shape = self._images.element_shape
        self.num_classes = self._images.num_classes
        self.num_examples = self._images.num_examples
        self.steps_per_epoch = self.num_examples / self.global_batch_size
        self._order = BatchOrder(
            self.num_examples,
            global_batch_size=self.global_batch_size,
            seed=self.seed,
            shard_index=self.shard_index,
            shard_count=self.shard_count,
            num_threads=num_threads,
            prefetch_buffer_size=prefetch_buffer_size,
        )

    def _example(self, index: int, position: int) -> dict[str, np.ndarray]:
        flip = self.random_flip and self._order.flips(position)
        return self._images.example(index, flip=flip)

    def example_indices(self, step: int) -> np.ndarray:
        """Indices into the split of this process's rows of global batch ``step``: int64 [b]."""
        return self._order.example_indices(step)

    def get_batch(self, step: int) -> Batch:
        """This process's part of global batch ``step``, read synchronously (random access)."""
        return self._order.get_batch(self._example, step)

    def iterator(self, start_step: int = 0, num_steps: int | None = None) -> Iterator[Batch]:
        """Batches ``start_step, start_step + 1, ...`` (endless unless ``num_steps`` is given).

        Examples are read ahead by grain threads while the caller computes. Each batch is
        ``{"x1": float32 [b, H, W, C], "label": int32 [b]}`` as in the module docstring.
        """
        return self._order.iterator(self._example, start_step, num_steps)

    def __iter__(self) -> Iterator[Batch]:
        return self.iterator(0)

    def __repr__(self) -> str:
        return (
            f"ImageDataset({self.name!r}, split={self.split!r}, N={self.num_examples}, "
            f"element_shape={self.element_shape}, B={self.global_batch_size}, "
            f"shard={self.shard_index}/{self.shard_count}, seed={self.seed})"
        )


def load_split_array(
    name: str,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    max_examples: int | None = None,
    *,
    image_key: str = "image",
    label_key: str | None = "label",
    num_threads: int = 8,
    auto_prepare: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A whole (held-out) split as arrays, in the data set's stored order.

    Args:
      name, split, data_dir, image_key, label_key, auto_prepare: as for :class:`ImageDataset`.
      max_examples: keep only the first ``max_examples`` examples.
      num_threads: grain reader threads.

    Returns:
      ``(x1, labels)``: ``x1`` float32 ``[N, H, W, C]`` in ``[-1, 1]``; ``labels`` int32 ``[N]``,
      or ``None`` when the data set has no labels (or ``label_key=None``).

    Raises:
      DatasetNotFoundError: the data set is not prepared under ``data_dir``.
    """
    images = _ImageSource(name, split, data_dir, image_key, label_key, auto_prepare)
    n = images.num_examples
    if max_examples is not None:
        if max_examples < 0:
            raise ValueError(f"max_examples={max_examples}; pass a non-negative int or None.")
        n = min(n, int(max_examples))
    x1 = np.empty((n, *images.element_shape), np.float32)
    labels = np.empty((n,), np.int32) if images.label_key is not None else None
    import grain  # heavy: only reading data needs it

    examples = grain.MapDataset.range(n).map(images.example)
    read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=64)
    for i, ex in enumerate(examples.to_iter_dataset(read_options)):
        x1[i] = ex["x1"]
        if labels is not None:
            labels[i] = ex["label"]
    return x1, labels
