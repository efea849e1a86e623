"""Latent sets of mixed sizes (one latent ``[h_i, w_i, C]`` per image) and their training source.

FiTv2 trains on VAE latents of images kept near their own sizes and aspect ratios (the area
rule of :mod:`flowjax.data.tokens`); such latents have one size per image. A *mixed latent
set* stores them in a directory of plain NumPy files, written by :func:`write_mixed_latents`
and read (memory-mapped) by :func:`read_mixed_latents`:

- ``mixed_latents.json``: ``{"format": "flowjax.mixed_latents", "version": 1, "channels": C,
  "num_examples": n, "num_classes": K or null}``;
- ``values.npy``: float32 ``[sum_i h_i w_i C]``, latent ``i`` flattened row-major
  (``[h_i, w_i, C]``) at ``values[offset_i : offset_i + h_i w_i C]``;
- ``index.npy``: int64 ``[n, 3]``, the rows ``(offset_i, h_i, w_i)``;
- ``label.npy``: int32 ``[n]`` class labels in ``[0, K)`` (labelled sets only).

The latents are stored in model space (what the network trains on: e.g. an SD-VAE posterior
mean or one draw of it, multiplied by the scaling factor 0.18215); a flipped copy of an image
is one more example. A set is written into a fresh directory and renamed into place, so a
reader never sees a partial set. The held-out examples are a set of their own in
``<dir>/heldout``.

:class:`MixedLatentSource` (``data.kind="mixed_latents"``, ``data.path=DIR``) trains on such a
set in the token layout, bucketed by token count exactly like the sources of
:mod:`flowjax.data.mixed_sizes` (here every stored example is equally likely: a bucket is
drawn with probability proportional to its number of examples), and evaluates at one size,
``data.eval_size`` (default: the most common size of the held-out set), on the held-out latents
of that size.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

from flowjax.data.base import BatchLayout
from flowjax.data.mixed_sizes import MixedSizeSource, Size, check_sizes, check_token_settings

__all__ = ["MixedLatentSource", "MixedLatents", "read_mixed_latents", "write_mixed_latents"]

MANIFEST = "mixed_latents.json"
HELD_OUT = "heldout"
_FORMAT, _VERSION = "flowjax.mixed_latents", 1
_HOW = "write one with flowjax.data.write_mixed_latents(path, latents, labels)"


def write_mixed_latents(
    path: str, latents: Sequence, labels: Sequence | None = None, num_classes: int | None = None
) -> str:
    """Write ``latents`` (a sequence of ``[h_i, w_i, C]`` arrays, one ``C``) and optional
    integer ``labels`` ``[n]`` as a mixed latent set at ``path`` (a directory that must not
    exist yet); returns ``path``. ``num_classes`` defaults to ``max(labels) + 1``. Everything
    is checked before anything is written: an empty sequence, a latent that is not a finite
    non-empty ``[h, w, C]`` array, mixed channel counts, labels that are not one non-negative
    int per latent below ``num_classes``."""
    path = os.path.expanduser(str(path))
    if os.path.exists(path):
        raise FileExistsError(f"{path!r} exists; write a mixed latent set to a new directory")
    if len(latents) == 0:
        raise ValueError("latents is empty; pass a sequence of [h, w, C] arrays")
    arrays = [np.asarray(z, np.float32) for z in latents]
    channels = arrays[0].shape[-1] if arrays[0].ndim == 3 else None
    for i, z in enumerate(arrays):
        if z.ndim != 3 or min(z.shape) < 1 or z.shape[-1] != channels:
            raise ValueError(
                f"latent {i} has shape {z.shape}; every latent must be a non-empty [h, w, C] "
                f"array with the C={channels} of latent 0"
            )
        if not np.isfinite(z).all():
            raise ValueError(f"latent {i} has NaN or infinite values; clean the latents first")
    label_array = None
    if labels is not None:
        label_array = np.asarray(labels)
        if (
            not np.issubdtype(label_array.dtype, np.integer)
            or label_array.shape != (len(arrays),)
            or label_array.min() < 0
        ):
            raise ValueError(
                f"labels have shape {label_array.shape} and dtype {label_array.dtype}; pass "
                f"one non-negative int per latent ({len(arrays)})"
            )
        num_classes = int(label_array.max()) + 1 if num_classes is None else int(num_classes)
        if label_array.max() >= num_classes:
            raise ValueError(f"labels reach {label_array.max()}, not below {num_classes=}")
    elif num_classes is not None:
        raise ValueError("num_classes is given without labels; pass the labels too")
    sizes = np.asarray([z.shape[:2] for z in arrays], np.int64)
    lengths = sizes[:, 0] * sizes[:, 1] * channels
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    temporary = f"{path}.partial-{os.getpid()}"
    os.makedirs(temporary)
    try:
        np.save(os.path.join(temporary, "values.npy"), np.concatenate([z.ravel() for z in arrays]))
        np.save(os.path.join(temporary, "index.npy"), np.column_stack([offsets, sizes]))
        if label_array is not None:
            np.save(os.path.join(temporary, "label.npy"), label_array.astype(np.int32))
        manifest = dict(
            format=_FORMAT,
            version=_VERSION,
            channels=int(channels),
            num_examples=len(arrays),
            num_classes=num_classes,
        )
        with open(os.path.join(temporary, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return path


@dataclasses.dataclass(frozen=True)
class MixedLatents:
    """A mixed latent set opened by :func:`read_mixed_latents` (``values`` memory-mapped)."""

    path: str
    values: np.ndarray  # float32 [total]
    index: np.ndarray  # int64 [n, 3]: (offset, h, w)
    labels: np.ndarray | None  # int32 [n]
    channels: int
    num_classes: int | None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def sizes(self) -> np.ndarray:
        """Each latent's ``(h, w)``: ``[n, 2]``."""
        return self.index[:, 1:3]

    def latent(self, i: int) -> np.ndarray:
        """Latent ``i`` as float32 ``[h_i, w_i, C]``."""
        offset, h, w = (int(v) for v in self.index[i])
        return np.asarray(self.values[offset : offset + h * w * self.channels]).reshape(h, w, -1)


def read_mixed_latents(path: str) -> MixedLatents:
    """Open the mixed latent set at ``path``; a one-line error when it is missing or its files
    disagree (format, index shape, an example past the end of ``values``, labels)."""
    path = os.path.expanduser(str(path))
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise FileNotFoundError(f"no mixed latent set at {path!r} (no {MANIFEST}); {_HOW}")
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != _FORMAT or manifest.get("version") != _VERSION:
        raise ValueError(f"{manifest_path} is not a {_FORMAT} version {_VERSION} manifest; {_HOW}")
    values = np.load(os.path.join(path, "values.npy"), mmap_mode="r")
    index = np.load(os.path.join(path, "index.npy"))
    n, channels = int(manifest["num_examples"]), int(manifest["channels"])
    ends = index[:, 0] + index[:, 1] * index[:, 2] * channels if index.ndim == 2 else None
    if index.shape != (n, 3) or values.ndim != 1 or (n and int(ends.max()) > values.shape[0]):
        raise ValueError(
            f"{path!r}: index.npy {index.shape} and values.npy {values.shape} do not hold "
            f"{n} latents of {channels} channels; write the set again"
        )
    labels = None
    if manifest.get("num_classes") is not None:
        labels = np.load(os.path.join(path, "label.npy"))
        if labels.shape != (n,):
            raise ValueError(f"{path!r}: label.npy has shape {labels.shape}, not ({n},)")
    return MixedLatents(path, values, index, labels, channels, manifest.get("num_classes"))


class MixedLatentSource(MixedSizeSource):
    """Training batches from a mixed latent set (see the module docstring).

    Args:
      path: the set's directory (with its held-out set in ``<path>/heldout``).
      patch_size, max_tokens, bucket_padding: as :class:`~flowjax.data.DigitsMixedSource`;
        every stored size must be a multiple of the patch with at most ``max_tokens`` tokens.
      eval_size: the latent size evaluated and sampled at (None: the held-out set's most
        common size); the held-out set must hold latents of that size.
      name: the data set's name (default: the directory's name).
      batch_size, seed, shard_index, shard_count: the batch layout, as every source.
    """

    def __init__(
        self,
        path: str,
        *,
        batch_size: int,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
        patch_size: int = 2,
        max_tokens: int | None = None,
        eval_size: Size | None = None,
        bucket_padding: float = 0.1,
        name: str | None = None,
    ):
        eval_size = check_token_settings(patch_size, max_tokens, eval_size, bucket_padding)
        layout = BatchLayout(batch_size, shard_index, shard_count, seed)
        self.path = os.path.expanduser(str(path))
        self.name = name or os.path.basename(os.path.normpath(self.path))
        self.data = read_mixed_latents(self.path)
        distinct = sorted({(int(h), int(w)) for h, w in self.data.sizes})
        check_sizes(distinct, int(patch_size), max_tokens, f"the latents in {self.path!r}")
        self.held = read_mixed_latents(os.path.join(self.path, HELD_OUT))
        if self.held.channels != self.data.channels:
            raise ValueError(f"{self.path!r}: the held-out latents have other channels")
        held_sizes = collections.Counter((int(h), int(w)) for h, w in self.held.sizes)
        if eval_size is None:
            eval_size = held_sizes.most_common(1)[0][0]
        self._eval_rows = [i for i, s in enumerate(self.held.sizes) if tuple(s) == eval_size]
        if not self._eval_rows:
            raise ValueError(
                f"data.eval_size={eval_size} but the held-out latents have the sizes "
                f"{sorted(held_sizes)}; choose one of them"
            )
        self.element_shape = (*eval_size, self.data.channels)
        self.num_classes = self.data.num_classes
        self._setup(self.data.sizes, patch_size, bucket_padding, seed, layout, len(self.data))

    def _example(self, recipe: int, index: int, uniforms) -> tuple[np.ndarray, int | None]:
        labels = self.data.labels
        return self.data.latent(recipe), None if labels is None else int(labels[recipe])

    def eval_array(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The first ``min(n, ...)`` held-out latents of size ``eval_size`` and their labels."""
        rows = self._eval_rows[: int(n)]
        x = np.stack([self.held.latent(i) for i in rows]).astype(np.float32)
        labels = self.held.labels
        return x, None if labels is None else np.asarray(labels)[rows].astype(np.int32)

    def _identity(self) -> Any:
        h = hashlib.sha256()
        for part in (self.data, self.held):
            h.update(np.ascontiguousarray(part.index).tobytes())
            if part.labels is not None:
                h.update(np.ascontiguousarray(part.labels).tobytes())
        return h.hexdigest()
