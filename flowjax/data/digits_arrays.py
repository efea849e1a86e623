"""The UCI handwritten digits shipped with scikit-learn, as uint8 arrays with a fixed split.

This module is the single definition of the split and the pixel scaling; the tfds builder
(:mod:`flowjax.data.digits`) and the digits feature classifier both use it.

- 1797 grey images of 8x8 pixels, intensities 0..16 in the source, stored here as
  ``uint8(round(x * 255 / 16))`` with a trailing channel axis: ``[N, 8, 8, 1]``.
- Split: a fixed permutation ``np.random.RandomState(0).permutation(1797)``; its first 360
  indices form ``test`` and the remaining 1437 form ``train`` (each kept in scikit-learn's
  order). scikit-learn's own order cycles through the classes, so a strided split would not
  be class-balanced.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "test")
NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
_NUM_TEST = 360


def load_digits_numpy(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 [N, 8, 8, 1], labels int64 [N])`` of one split."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; the digits data set has splits {SPLITS}")
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.random.RandomState(0).permutation(len(labels))[:_NUM_TEST]] = True
    keep = is_test if split == "test" else ~is_test
    return images[keep], labels[keep]
