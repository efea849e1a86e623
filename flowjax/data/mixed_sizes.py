"""Training data of mixed image sizes, as padded token batches bucketed by token count.

Two sources (``data.kind``), both in the token layout of :mod:`flowjax.data.tokens`
(``{"x1": tokens [b, N, p^2 C], "mask": [b, N] bool, "positions": [b, N, 2] int32}``, plus
``"label" [b]`` when labelled), evaluated and sampled at one image size ``eval_size``:

- ``digits_mixed`` (:class:`DigitsMixedSource`): scikit-learn's 8x8 digits (the ``train``
  split of :mod:`flowjax.data.digits_arrays`) upsampled bicubically to each of a declared list
  of sizes ``(H, W)`` (multiples of the patch; a non-square size stretches the digit),
  labelled. Held out: the ``test`` split at ``eval_size``. Its feature metric is the digits
  classifier's Fréchet distance after resizing samples to 8x8 (bicubic).
- ``photos_mixed`` (:class:`PhotosMixedSource`): crops of the two photographs scikit-learn
  ships (``load_sample_images``: ``china.jpg``, ``flower.jpg``) of a declared list of crop
  sizes, at random places, flipped with probability 1/2, then brought to a multiple of the
  patch by FiTv2's area rule (:func:`~flowjax.data.tokens.resize_to_area` with side
  ``side``); unlabelled. Training crops come from the left three quarters of each
  photograph, held-out crops (at ``eval_size``) from the right quarter.

Buckets (:func:`size_buckets`)
------------------------------
Each global batch draws all its images from one *bucket* of sizes with similar token counts
and is padded to that bucket's longest size, so a jitted step sees one shape per bucket (a
handful of compilations) and little padding: a size of ``n`` tokens in a bucket of length
``L`` wastes ``1 - n / L`` of its row, and the buckets are formed (largest first) so that no
size wastes more than ``bucket_padding`` (default 0.1). ``bucket_padding=1`` puts every size
in one bucket padded to the longest (no bucketing). The bucket of batch ``k`` is drawn with
probability proportional to its number of sizes and the size of each row uniformly within it,
so over many batches every size is equally likely; :func:`padding_fraction` measures a
batch's wasted slots and :func:`expected_padding` is their mean over batches.

Global batch ``k`` is a pure function of ``(seed, k)`` (drawn once for all rows, every process
taking its rows through :class:`~flowjax.data.base.BatchLayout`), so a resumed run sees exactly
the batches it would have seen, and every process agrees on the bucket (the padded length).
Every configuration error (an empty size list, a size that is not a multiple of the patch, a
size with more tokens than ``max_tokens``) is raised before any data is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from typing import Any, Iterator

import numpy as np

from flowjax.data.base import BatchLayout, FeatureMetric, step_iterator
from flowjax.data.digits import DIGITS_NAME
from flowjax.data.digits_arrays import NUM_CLASSES, load_digits_numpy
from flowjax.data.feature_metrics import feature_metric_for
from flowjax.data.tokens import area_size, pack_images, resize_bicubic, resize_to_area

__all__ = [
    "DIGITS_MIXED_SIZES",
    "PHOTO_CROP_SIZES",
    "Bucket",
    "DigitsMixedSource",
    "MixedSizeSource",
    "PhotosMixedSource",
    "batch_grids",
    "check_sizes",
    "check_token_settings",
    "expected_padding",
    "padding_fraction",
    "size_buckets",
]

Size = tuple[int, int]

#: The default ``digits_mixed`` sizes ``(H, W)``: sides 12-32 px, aspect ratios 1:1, 3:4,
#: 3:5, 2:3, 5:7 and their transposes; with patch 2, 48 to 256 tokens in six buckets of at
#: most 10% padding (2.0% expected), against 52% when every batch is padded to 256 tokens.
DIGITS_MIXED_SIZES: tuple[Size, ...] = (
    (12, 16), (16, 12),
    (16, 16), (12, 20), (20, 12),
    (20, 20), (16, 24), (24, 16),
    (24, 24), (20, 28), (28, 20),
    (28, 28), (24, 32), (32, 24),
    (32, 32),
)  # fmt: skip

#: The default ``photos_mixed`` crop sizes (pixels of the photographs), before the area rule.
PHOTO_CROP_SIZES: tuple[Size, ...] = (
    (256, 256), (192, 256), (256, 192), (160, 320), (320, 160), (24, 24), (16, 32), (32, 16),
)  # fmt: skip

_TRAIN_FRACTION = 0.75  # of each photograph's width; the rest is held out


# ---------------------------------------------------------------------------------------------
# Sizes and buckets
# ---------------------------------------------------------------------------------------------


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _tokens(size: Size, patch: int) -> int:
    return (size[0] // patch) * (size[1] // patch)


def check_sizes(
    sizes: Any, patch: int | None, max_tokens: int | None = None, what: str = "data.sizes"
) -> tuple[Size, ...]:
    """``sizes`` as a tuple of distinct ``(H, W)`` int pairs, in order, or a one-line error:
    an empty list, a size that is not a pair of positive ints, (with ``patch``) a side that is
    not a multiple of the patch, (with ``max_tokens``) more tokens than ``max_tokens``."""
    if sizes is None or isinstance(sizes, (str, bytes)) or len(sizes) == 0:
        raise ValueError(f"{what} is empty; list at least one (height, width), e.g. ((16, 16),)")
    out: list[Size] = []
    for size in sizes:
        if not (isinstance(size, Sequence) and len(size) == 2 and all(map(_is_positive_int, size))):
            raise ValueError(f"{what} holds {size!r}; each size is a (height, width) int pair")
        h, w = int(size[0]), int(size[1])
        if patch is not None and (h % patch or w % patch):
            raise ValueError(
                f"{what} holds {h}x{w}, not a multiple of the patch {patch} per side; use "
                f"sides that are multiples of {patch}"
            )
        if patch is not None and max_tokens is not None and _tokens((h, w), patch) > max_tokens:
            raise ValueError(
                f"{what} holds {h}x{w}, {_tokens((h, w), patch)} tokens at patch {patch}, more "
                f"than data.max_tokens={max_tokens}; drop it or raise data.max_tokens"
            )
        if (h, w) not in out:
            out.append((h, w))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Sizes ``(H, W)`` whose batches are padded to ``length`` tokens (the longest's)."""

    sizes: tuple[Size, ...]
    length: int


def size_buckets(sizes: Sequence[Size], patch: int, max_padding: float = 0.1) -> tuple[Bucket, ...]:
    """Group ``sizes`` so that each wastes at most ``max_padding`` of its bucket's length.

    Greedy from the longest: the longest remaining size opens a bucket of length ``L`` (its
    token count) and takes every remaining size of at least ``(1 - max_padding) L`` tokens.
    Buckets come longest first, sizes in each by decreasing token count. ``max_padding=0``
    gives one bucket per token count, ``max_padding=1`` one bucket for all.
    """
    if not 0.0 <= float(max_padding) <= 1.0:
        raise ValueError(f"data.bucket_padding={max_padding!r} must be in [0, 1] (0.1: 10%)")
    order = sorted(set(sizes), key=lambda s: (-_tokens(s, patch), s))
    buckets, i = [], 0
    while i < len(order):
        length, j = _tokens(order[i], patch), i
        while j < len(order) and length - _tokens(order[j], patch) <= max_padding * length:
            j += 1
        buckets.append(Bucket(tuple(order[i:j]), length))
        i = j
    return tuple(buckets)


def padding_fraction(mask) -> float:
    """The wasted token slots of a batch: ``1 - (valid tokens) / (all slots)``, from its
    ``mask [B, N]`` (a :class:`~flowjax.data.tokens.TokenBatch`'s or a batch dict's)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty [B, N] array, got shape {mask.shape}")
    return 1.0 - float(np.count_nonzero(mask)) / mask.size


def expected_padding(buckets: Sequence[Bucket], patch: int) -> float:
    """The mean :func:`padding_fraction` over batches when every size is equally likely:
    ``mean over sizes of 1 - n(size) / L(its bucket)``."""
    wasted = [1.0 - _tokens(s, patch) / b.length for b in buckets for s in b.sizes]
    return float(np.mean(wasted))


def batch_grids(mask, positions) -> np.ndarray:
    """Each row's token grid ``(h, w)`` ``[B, 2]`` read from a batch's ``mask`` and
    ``positions`` (one plus the largest valid row and column), e.g. to unpack a batch or a
    network's output on it with :func:`~flowjax.data.tokens.unpack_tokens`."""
    mask, positions = np.asarray(mask, bool), np.asarray(positions)
    if positions.shape != (*mask.shape, 2) or mask.ndim != 2:
        raise ValueError(
            f"mask must be [B, N] and positions [B, N, 2]; got {mask.shape} and {positions.shape}"
        )
    valid = np.where(mask[..., None], positions, -1)
    return (valid.max(axis=1) + 1).astype(np.int32)


def _to_unit(image: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1] (``x / 127.5 - 1``, as every image source)."""
    return image.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def check_token_settings(patch_size, max_tokens, eval_size, bucket_padding) -> Size | None:
    """Refuse (one line) a patch that is not a positive int, a ``max_tokens`` that is not one
    (or None), a ``bucket_padding`` outside ``[0, 1]`` or an ``eval_size`` (None: decided by
    the data) that is not a multiple of the patch; returns ``eval_size`` as an int pair."""
    if not _is_positive_int(patch_size):
        raise ValueError(f"data.patch_size={patch_size!r} must be a positive int (the model's)")
    if max_tokens is not None and not _is_positive_int(max_tokens):
        raise ValueError(f"data.max_tokens={max_tokens!r} must be a positive int or None")
    if not 0.0 <= float(bucket_padding) <= 1.0:
        raise ValueError(f"data.bucket_padding={bucket_padding!r} must be in [0, 1] (0.1: 10%)")
    if eval_size is None:
        return None
    return check_sizes([eval_size], int(patch_size), None, "data.eval_size")[0]


# ---------------------------------------------------------------------------------------------
# The sources
# ---------------------------------------------------------------------------------------------


class MixedSizeSource:
    """Batch ``k``: one bucket, a recipe per row, an example index per row and three uniforms
    per row (crop place, flip), all drawn from ``(seed, k)``. A recipe is what a subclass
    makes one training image from (a size, a crop size, a stored example), numbered ``0 ..
    R - 1`` with the image size it gives in ``out_sizes``; :meth:`_example` makes it (float32,
    in the model's range) with its label (or None).
    """

    kind = "images"
    batch_keys = ("x1", "mask", "positions")

    def _setup(self, out_sizes, patch, bucket_padding, seed, layout, num_examples):
        self.patch_size, self.layout, self.seed = int(patch), layout, int(seed)
        self.num_examples = int(num_examples)
        out = np.asarray(out_sizes, np.int64).reshape(-1, 2)
        unique, first, inverse = np.unique(out, axis=0, return_index=True, return_inverse=True)
        self.sizes = tuple(tuple(int(v) for v in unique[i]) for i in np.argsort(first))
        self.buckets = size_buckets(self.sizes, self.patch_size, bucket_padding)
        bucket_of = {s: i for i, b in enumerate(self.buckets) for s in b.sizes}
        of_unique = np.asarray([bucket_of[tuple(int(v) for v in u)] for u in unique])
        of_recipe = of_unique[inverse.reshape(-1)]
        self._bucket_recipes = [np.flatnonzero(of_recipe == b) for b in range(len(self.buckets))]
        counts = np.asarray([len(r) for r in self._bucket_recipes], np.float64)
        self._bucket_p = counts / counts.sum()

    def plan(self, step: int) -> tuple[Bucket, np.ndarray, np.ndarray, np.ndarray]:
        """Global batch ``step``: its bucket, each row's recipe and example index (``[B]``
        ints) and three uniforms ``[B, 3]``."""
        rng = np.random.default_rng([self.seed, 0x6D69786564, int(step)])
        b = int(rng.choice(len(self.buckets), p=self._bucket_p))
        n = self.layout.global_batch_size
        recipes = self._bucket_recipes[b][rng.integers(len(self._bucket_recipes[b]), size=n)]
        examples = rng.integers(self.num_examples, size=n)
        return self.buckets[b], recipes, examples, rng.random((n, 3))

    def get_batch(self, step: int) -> dict:
        """This process's rows of global batch ``step`` (numpy), padded to its bucket."""
        bucket, recipes, examples, uniforms = self.plan(step)
        images, labels = [], []
        for r in range(self.layout.offset, self.layout.offset + self.layout.local_batch_size):
            image, label = self._example(int(recipes[r]), int(examples[r]), uniforms[r])
            images.append(image)
            labels.append(label)
        packed = pack_images(images, self.patch_size, max_tokens=bucket.length, pad_to_max=True)
        batch = {"x1": packed.tokens, "mask": packed.mask, "positions": packed.positions}
        if self.num_classes is not None:
            batch["label"] = np.asarray(labels, np.int32)
        return batch

    def iterator(self, start_step: int = 0) -> Iterator[dict]:
        return step_iterator(self.get_batch, start_step)

    def fingerprint(self) -> str:
        """The data's identity: name, patch, buckets and the subclass's :meth:`_identity`."""
        text = repr((self.name, self.patch_size, self.buckets, self._identity()))
        return hashlib.sha256(text.encode()).hexdigest()

    def _identity(self) -> Any:
        raise NotImplementedError


class DigitsMixedSource(MixedSizeSource):
    """The 8x8 digits upsampled (bicubic) to mixed sizes, labelled (see the module docstring).

    Args:
      sizes: the training sizes ``(H, W)`` in pixels, each a multiple of ``patch_size`` with at
        most ``max_tokens`` tokens (default :data:`DIGITS_MIXED_SIZES`).
      patch_size: the model's patch; max_tokens: the longest sequence allowed (None: any).
      eval_size: the size the run evaluates and samples at (``element_shape`` and
        ``eval_array``).
      bucket_padding: the largest fraction of a row that padding may take (:func:`size_buckets`).
      batch_size, seed, shard_index, shard_count: the batch layout, as every source.
    """

    name = "digits_mixed"
    num_classes = NUM_CLASSES

    def __init__(
        self,
        *,
        batch_size: int,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
        sizes: Sequence[Size] = DIGITS_MIXED_SIZES,
        patch_size: int = 2,
        max_tokens: int | None = 256,
        eval_size: Size = (16, 16),
        bucket_padding: float = 0.1,
    ):
        eval_size = check_token_settings(patch_size, max_tokens, eval_size, bucket_padding)
        sizes = check_sizes(sizes, int(patch_size), max_tokens)
        layout = BatchLayout(batch_size, shard_index, shard_count, seed)
        self.element_shape = (*eval_size, 1)
        self._train, self._test = load_digits_numpy("train"), load_digits_numpy("test")
        self._cache: dict[tuple[str, Size], np.ndarray] = {}
        self.recipes = sizes
        self._setup(sizes, patch_size, bucket_padding, seed, layout, len(self._train[1]))

    def upsampled(self, split: str, size: Size) -> np.ndarray:
        """Every digit of ``split`` resized bicubically to ``size``: uint8 ``[n, H, W, 1]``."""
        if (split, size) not in self._cache:
            images = self._train[0] if split == "train" else self._test[0]
            self._cache[split, size] = np.stack([resize_bicubic(im, *size) for im in images])
        return self._cache[split, size]

    def _example(self, recipe: int, index: int, uniforms) -> tuple[np.ndarray, int]:
        image = self.upsampled("train", self.recipes[recipe])[index]
        return _to_unit(image), int(self._train[1][index])

    def _identity(self) -> Any:
        return self.recipes

    def eval_array(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``min(n, 360)`` ``test`` digits at ``eval_size`` (in [-1, 1]) and labels."""
        images = self.upsampled("test", self.element_shape[:2])[:n]
        return _to_unit(images), self._test[1][:n].astype(np.int32)

    def feature_metric(self, cache_dir: str) -> FeatureMetric | None:
        """The digits classifier's Fréchet distance (``fd``), on samples resized to 8x8."""
        base = feature_metric_for(DIGITS_NAME, cache_dir)
        return None if base is None else ResizedFeatureMetric(base, (8, 8))


class ResizedFeatureMetric:
    """A :class:`~flowjax.data.base.FeatureMetric` of samples resized (bicubic) to ``size``
    first, under the same name."""

    def __init__(self, metric: FeatureMetric, size: Size):
        self.metric, self.size, self.name = metric, tuple(size), metric.name

    def __call__(self, samples) -> float:
        samples = np.asarray(samples, np.float32)
        return self.metric(np.stack([resize_bicubic(im, *self.size) for im in samples]))


def _photographs() -> tuple[list[np.ndarray], tuple[str, ...]]:
    """The bundled RGB photographs (uint8 ``[H, W, 3]``) and their names; nothing downloaded."""
    from sklearn.datasets import load_sample_images  # bundled with scikit-learn

    bunch = load_sample_images()
    photos = [np.asarray(im, np.uint8) for im in bunch.images]
    names = [f"sklearn:{name.rsplit('/', 1)[-1]}" for name in bunch.filenames]
    return photos, tuple(names)


class PhotosMixedSource(MixedSizeSource):
    """Crops of the bundled photographs at mixed sizes, brought to multiples of the patch by
    FiTv2's area rule; unlabelled (see the module docstring).

    Args:
      crop_sizes: crop sizes ``(H, W)`` in the photographs' pixels (default
        :data:`PHOTO_CROP_SIZES`); crop ``(H, W)`` trains at ``area_size(H, W, side, patch)``.
      side: the area rule's side ``S`` (at most ``(S / patch)^2`` tokens for crops of area
        ``>= S^2``).
      patch_size, max_tokens, eval_size, bucket_padding and the batch layout: as
        :class:`DigitsMixedSource`.
    """

    name = "photos_mixed"
    num_classes = None

    def __init__(
        self,
        *,
        batch_size: int,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
        crop_sizes: Sequence[Size] = PHOTO_CROP_SIZES,
        side: int = 32,
        patch_size: int = 2,
        max_tokens: int | None = None,
        eval_size: Size = (32, 32),
        bucket_padding: float = 0.1,
    ):
        eval_size = check_token_settings(patch_size, max_tokens, eval_size, bucket_padding)
        if not _is_positive_int(side):
            raise ValueError(f"data.side={side!r} must be a positive int (the area rule's side)")
        crops = check_sizes(crop_sizes, None, None, "data.crop_sizes")
        out_size = {c: area_size(*c, side, patch_size) for c in crops}
        check_sizes(list(out_size.values()), int(patch_size), max_tokens, "the trained sizes")
        layout = BatchLayout(batch_size, shard_index, shard_count, seed)
        self.side, self.element_shape = int(side), (*eval_size, 3)
        photos, self._names = _photographs()
        cut = [int(_TRAIN_FRACTION * p.shape[1]) for p in photos]
        self._train = [p[:, :c] for p, c in zip(photos, cut)]
        self._held = [p[:, c:] for p, c in zip(photos, cut)]
        room = (min(p.shape[0] for p in self._train), min(p.shape[1] for p in self._train))
        for h, w in crops:
            if h > room[0] or w > room[1]:
                raise ValueError(
                    f"data.crop_sizes holds {h}x{w}, larger than the training part of the "
                    f"smallest photograph ({room[0]}x{room[1]}); use smaller crops"
                )
        self.recipes = crops
        out_sizes = [out_size[c] for c in crops]
        self._setup(out_sizes, patch_size, bucket_padding, seed, layout, len(photos))

    def _example(self, recipe: int, index: int, uniforms) -> tuple[np.ndarray, None]:
        photo, (h, w) = self._train[index], self.recipes[recipe]
        top = int(uniforms[0] * (photo.shape[0] - h + 1))
        left = int(uniforms[1] * (photo.shape[1] - w + 1))
        image = photo[top : top + h, left : left + w]
        if uniforms[2] < 0.5:
            image = image[:, ::-1]
        image = resize_to_area(np.ascontiguousarray(image), self.side, self.patch_size)
        return _to_unit(image), None

    def eval_array(self, n: int) -> tuple[np.ndarray, None]:
        """``n`` held-out crops at ``eval_size`` (in [-1, 1]): from the right quarter of the
        photographs in turn, the largest crop of ``eval_size``'s aspect ratio that fits, at
        places drawn with a fixed seed, resized bicubically."""
        eh, ew = self.element_shape[:2]
        rng = np.random.default_rng(0)
        images = []
        for i in range(int(n)):
            photo = self._held[i % len(self._held)]
            k = min(photo.shape[0] / eh, photo.shape[1] / ew)
            h, w = max(1, math.floor(k * eh)), max(1, math.floor(k * ew))
            top = int(rng.integers(photo.shape[0] - h + 1))
            left = int(rng.integers(photo.shape[1] - w + 1))
            crop = np.ascontiguousarray(photo[top : top + h, left : left + w])
            images.append(_to_unit(resize_bicubic(crop, eh, ew)))
        return np.stack(images) if images else np.zeros((0, eh, ew, 3), np.float32), None

    def _identity(self) -> Any:
        return (self.recipes, self.side, self._names)
