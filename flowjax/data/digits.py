"""scikit-learn's handwritten digits as a real tfds data set, prepared offline without TensorFlow.

:class:`SklearnDigits` is an ordinary ``tfds.core.GeneratorBasedBuilder`` registered under the
name ``"sklearn_digits"`` (defined on first use, see :func:`builder_class`; importing
:mod:`flowjax.data` registers :func:`prepare_digits` with the generic pipeline, which defines
the builder and prepares the set when it is missing).
Its examples come from :func:`flowjax.data.digits_arrays.load_digits_numpy`, which fixes the
split and the pixel scaling; nothing is downloaded, so the data set can be prepared on any
machine::

    import tensorflow_datasets as tfds
    from flowjax.data import prepare_digits

    data_dir = prepare_digits("/tmp/tfds")        # ~1 s the first time, instant afterwards
    source = tfds.data_source("sklearn_digits", split="train", data_dir=data_dir)
    source[0]  # {"image": uint8 [8, 8, 1], "label": int64 []}

The records are written in the array_record format (random access, readable by
``tfds.data_source`` + grain) and in :func:`load_digits_numpy`'s order (shuffling at write
time is disabled), so ``source[i]`` is example ``i`` of ``load_digits_numpy(split)``.

Features: ``image`` is a ``tfds.features.Tensor`` of shape ``(8, 8, 1)`` and dtype uint8
(``tfds.features.Image`` would need TensorFlow to encode PNGs); ``label`` is a
``ClassLabel`` with 10 classes, the digit itself.
"""

from __future__ import annotations

import functools
import os
from typing import ClassVar

import numpy as np

from flowjax.data.digits_arrays import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    SPLITS,
    load_digits_numpy,
)
from flowjax.data.tfds_pipeline import LocalBuilder, register_local_builder

DIGITS_NAME = "sklearn_digits"

_DESCRIPTION = """\
The 1797 8x8 grey images of handwritten digits bundled with scikit-learn (a copy of the test
part of the UCI "Optical Recognition of Handwritten Digits" data set). Pixel intensities 0..16
are stored as uint8 round(x * 255 / 16). Split: a fixed permutation with seed 0; 360 test
images, 1437 train images.
"""

_CITATION = """\
@misc{alpaydin1998optdigits,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {Optical Recognition of Handwritten Digits},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi = {10.24432/C50P49}
}
"""


@functools.cache
def builder_class() -> type:
    """:class:`SklearnDigits`, defined (and so registered with tfds) on first use.

    tensorflow_datasets takes a while to import, and most commands never read this set, so
    neither this module nor :mod:`flowjax.data` imports it; ``flowjax.data.SklearnDigits``
    and the pipeline's :func:`~flowjax.data.tfds_pipeline.open_source` call this.
    """
    import tensorflow_datasets as tfds  # heavy and optional: only this builder needs it

    class SklearnDigits(tfds.core.GeneratorBasedBuilder):
        """tfds builder ``sklearn_digits``: 8x8x1 uint8 digit images with labels 0..9.

        Splits ``train`` (1437 examples) and ``test`` (360). Example keys are the indices
        ``0..N-1`` within a split, and records are stored in that order.
        """

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}

        def _info(self) -> tfds.core.DatasetInfo:
            # DatasetInfo is built directly (not with `dataset_info_from_configs`, which looks for
            # metadata files beside the module).
            return tfds.core.DatasetInfo(
                builder=self,
                description=_DESCRIPTION,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
                        "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                    }
                ),
                supervised_keys=("image", "label"),
                homepage="https://archive.ics.uci.edu/dataset/80",
                citation=_CITATION,
                disable_shuffling=True,
            )

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing to download: the images ship with scikit-learn
            return {split: self._generate_examples(split) for split in SPLITS}

        def _generate_examples(self, split: str):
            images, labels = load_digits_numpy(split)
            for index, (image, label) in enumerate(zip(images, labels)):
                yield index, {"image": image, "label": int(label)}

    return SklearnDigits


def __getattr__(name: str):
    if name == "SklearnDigits":
        return builder_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def prepare_digits(data_dir: str | os.PathLike | None = None) -> str:
    """Write ``sklearn_digits`` as array_record files under ``data_dir`` unless already there.

    Idempotent: when the data set is already prepared this only reads its metadata (a few
    milliseconds). Needs no network and no TensorFlow.

    Args:
      data_dir: the tfds data directory (the data set goes to
        ``<data_dir>/sklearn_digits/1.0.0``). ``None`` means tfds' default
        (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).

    Returns:
      The data directory as a string, ready for ``tfds.data_source(..., data_dir=...)``.

    With several processes sharing one directory (multi-host), call this on one process and
    wait at a barrier before the others read, or give each host its own local directory.
    """
    builder = builder_class()(data_dir=data_dir, file_format="array_record")
    root = os.fspath(data_dir) if data_dir is not None else os.fspath(builder.data_dir_root)
    if builder.is_prepared():
        file_format = builder.info.file_format
        if file_format is not None and file_format.file_suffix != "array_record":
            raise ValueError(
                f"{builder.data_dir} holds {DIGITS_NAME} in the {file_format.file_suffix} "
                "format, which has no random access; delete that directory and call "
                "prepare_digits again to write array_record files."
            )
        return root
    try:
        builder.download_and_prepare()
    except Exception:
        # Another process may have finished preparing the same directory first.
        if not builder_class()(data_dir=data_dir, file_format="array_record").is_prepared():
            raise
    return root


# The generic pipeline prepares this set itself when it is missing (it needs no download).
register_local_builder(
    DIGITS_NAME,
    LocalBuilder(
        prepare=prepare_digits,
        define=builder_class,
        instructions=(
            "Prepare it (offline, about a second) with `flowjax.data.prepare_digits({data_dir})`, "
            "or pass auto_prepare=True to let the pipeline do it."
        ),
    ),
)
