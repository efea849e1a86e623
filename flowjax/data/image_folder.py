"""Images from a folder of PNG / JPEG files, read with Pillow: no tfds builder, no TensorFlow.

Layout and labels
-----------------
Every ``.png``, ``.jpg`` and ``.jpeg`` file (any case) under the folder, at any depth, is an
example; other files and hidden entries (names starting with ``.``) are skipped. Files are
ordered by their path relative to the folder (``/``-separated), so the order is the same on
every machine. With ``class_subfolders=True`` (the default) and images inside subfolders, each
top-level subfolder is a class, labelled ``0 .. K-1`` in the sorted order of the folder names
(torchvision's ``ImageFolder`` convention; images may sit deeper inside a class folder); a
folder of images without subfolders is unlabelled. ``class_subfolders=False`` reads every image
unlabelled.

Splits
------
``"train"`` and ``"test"``: the first ``ceil(eval_fraction * N)`` files of a fixed permutation
(:func:`flowjax.data.base.held_out_split`, the rule of ``data.kind="array"``) are ``"test"``,
the rest ``"train"``, each in path order; ``"all"``: every file. A split may be sliced like a
tfds split (``"train[:1000]"``, ``"all[10:20]"``).

Preprocessing
-------------
Pillow decodes a file and converts it to RGB (``channels=3``; an alpha channel is dropped) or
to 8-bit grey (``channels=1``). :func:`center_crop` (ADM's ``center_crop_arr``, also what
``flowjax latents`` applies) makes it ``R x R``; a random horizontal flip (optional)
is :meth:`BatchOrder.flips` of the stream position, as in the tfds pipeline; pixels are scaled
as there, ``x / 127.5 - 1`` in ``[-1, 1]``.

Order, resumption and sharding are :class:`~flowjax.data.batch_order.BatchOrder`'s: global
batch ``k`` is a pure function of ``(seed, k)``, so ``iterator(start_step=k)`` resumes exactly,
and process ``i`` of ``P`` reads rows ``[i b, (i + 1) b)`` of every global batch.

Every file's header is read when a folder is opened (a file Pillow cannot identify is refused
then, by name); a file that fails to decode later is named in the error too.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from flowjax.data.base import held_out_split
from flowjax.data.batch_order import Batch, BatchOrder
from flowjax.data.tfds_pipeline import open_source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test", "all")
_SPLIT = re.compile(r"^(train|test|all)(?:\[(-?\d*):(-?\d*)\])?$")
# What Pillow raises for a file it cannot identify or decode.
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def center_crop(image: np.ndarray, resolution: int) -> np.ndarray:
    """ADM's ``center_crop_arr`` on a uint8 ``[H, W, C]`` image -> ``[R, R, C]`` uint8.

    Halve with a box filter while the short side is at least ``2 R``, resize with bicubic
    interpolation so that the short side is ``R``, keep the central ``R x R`` (the top-left
    corner at ``((H' - R) // 2, (W' - R) // 2)``). An ``R x R`` image is returned as it is.
    """
    grey = image.ndim == 3 and image.shape[-1] == 1
    pil = Image.fromarray(image[..., 0] if grey else image)
    if pil.size == (resolution, resolution):
        return image
    while min(pil.size) >= 2 * resolution:
        pil = pil.resize(tuple(s // 2 for s in pil.size), resample=Image.BOX)
    scale = resolution / min(pil.size)
    pil = pil.resize(tuple(round(s * scale) for s in pil.size), resample=Image.BICUBIC)
    arr = np.asarray(pil)
    top, left = (arr.shape[0] - resolution) // 2, (arr.shape[1] - resolution) // 2
    arr = arr[top : top + resolution, left : left + resolution]
    return arr[..., None] if grey else arr


def read_image(path: str, channels: int = 3) -> np.ndarray:
    """The image file ``path`` as uint8 ``[H, W, channels]`` (RGB or grey), or a ``ValueError``
    naming the file."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB" if channels == 3 else "L"))
    except _READ_ERRORS as err:
        raise ValueError(f"cannot read image {path!r} ({err}); remove or replace the file") from err
    return arr if channels == 3 else arr[..., None]


@dataclasses.dataclass(frozen=True)
class FolderListing:
    """The images of a folder (see the module docstring).

    Attributes:
      root: the folder.
      files: paths relative to ``root`` (``/``-separated), sorted.
      labels: int32 ``[len(files)]`` class labels, or ``None`` (unlabelled).
      classes: the class folder names, label ``i`` = ``classes[i]``; ``()`` when unlabelled.
      sizes: each file's size in bytes (for the fingerprint).
    """

    root: str
    files: tuple[str, ...]
    labels: np.ndarray | None
    classes: tuple[str, ...]
    sizes: tuple[int, ...]


def folder_name(path: str | os.PathLike) -> str:
    """The name of an image-folder data set: the folder's own name (``~/pets/`` -> ``pets``)."""
    return os.path.basename(os.path.normpath(os.path.expanduser(os.fspath(path))))


def list_images(
    root: str | os.PathLike,
    *,
    class_subfolders: bool = True,
    classes: tuple[str, ...] | None = None,
    num_threads: int = 8,
) -> FolderListing:
    """The images under ``root``, their labels, and a check that Pillow can identify each.

    Args:
      root: the folder.
      class_subfolders: top-level subfolders are classes (module docstring).
      classes: the class names to label with (a held-out folder takes its training folder's);
        ``None``: this folder's own subfolders.
      num_threads: threads reading the file headers.

    Raises:
      FileNotFoundError: no such folder.
      ValueError: not a folder, no files, no PNG / JPEG files, images both at the top level
        and in class folders, a class folder without images, a class unknown to ``classes``,
        or a file Pillow cannot identify (named).
    """
    root = os.path.expanduser(os.fspath(root))
    if not os.path.exists(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist; check data.path")
    if not os.path.isdir(root):
        raise ValueError(f"{root!r} is not a folder; pass a folder of PNG / JPEG images")
    found, others = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, root)
        for name in filenames:
            if name.startswith("."):
                continue
            path = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
            (found if name.lower().endswith(IMAGE_SUFFIXES) else others).append(path)
    if not found and not others:
        raise ValueError(
            f"image folder {root!r} is empty; put PNG / JPEG images in it (or in one subfolder "
            "per class)"
        )
    if not found:
        raise ValueError(
            f"image folder {root!r} holds no PNG / JPEG images ({len(others)} other files, e.g. "
            f"{sorted(others)[0]!r}); image files must end in {', '.join(IMAGE_SUFFIXES)}"
        )
    files = tuple(sorted(found))
    labels, names = None, ()
    nested = [f for f in files if "/" in f]
    if class_subfolders and nested:
        top = [f for f in files if "/" not in f]
        if top:
            raise ValueError(
                f"image folder {root!r} has images at its top level (e.g. {top[0]!r}) besides "
                "class subfolders; move them into a class folder, or set "
                "data.class_subfolders=False to read every image unlabelled"
            )
        folder_of = [f.split("/", 1)[0] for f in files]
        own = tuple(sorted(set(folder_of)))
        empty = sorted(
            d
            for d in os.listdir(root)
            if not d.startswith(".") and os.path.isdir(os.path.join(root, d)) and d not in own
        )
        if empty:
            raise ValueError(
                f"class folder {empty[0]!r} in {root!r} holds no PNG / JPEG images; remove it "
                "or add images"
            )
        names = own if classes is None else tuple(classes)
        unknown = sorted(set(own) - set(names))
        if unknown:
            raise ValueError(
                f"{root!r} has class folders {unknown} that the training folder does not have "
                f"(its classes: {list(names)}); use the same class folder names"
            )
        index = {c: i for i, c in enumerate(names)}
        labels = np.asarray([index[d] for d in folder_of], np.int32)
    elif classes:
        raise ValueError(
            f"{root!r} has no class subfolders but the training folder has classes "
            f"{list(classes)}; hold out images in the same class folders"
        )
    paths = [os.path.join(root, f) for f in files]
    with concurrent.futures.ThreadPoolExecutor(max(1, int(num_threads))) as pool:
        errors = list(pool.map(_header_error, paths))
    bad = [(p, e) for p, e in zip(paths, errors) if e is not None]
    if bad:
        more = f" (and {len(bad) - 1} more unreadable files)" if len(bad) > 1 else ""
        raise ValueError(
            f"cannot read image {bad[0][0]!r} ({bad[0][1]}){more}; remove or replace the file"
        )
    sizes = tuple(os.path.getsize(p) for p in paths)
    return FolderListing(root, files, labels, names, sizes)


def _header_error(path: str) -> str | None:
    """``None`` if Pillow identifies the file (only its header is read), else the reason."""
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 (parsed with the header)
    except _READ_ERRORS as err:
        return str(err)
    return None


def split_rows(n: int, split: str, eval_fraction: float, what: str) -> np.ndarray:
    """The indices (into a listing of ``n`` files) of ``split`` (module docstring), sorted."""
    match = _SPLIT.match(str(split))
    if match is None:
        raise ValueError(
            f"split {split!r}; an image folder has the splits 'train', 'test' (the held-out "
            "data.eval_fraction) and 'all', optionally sliced like 'train[:1000]'"
        )
    name, lo, hi = match.groups()
    if name == "all":
        rows = np.arange(n)
    else:
        held, train = held_out_split(n, eval_fraction, what)
        rows = np.sort(held if name == "test" else train)
    if match.group(2) is not None or match.group(3) is not None:
        rows = rows[slice(int(lo) if lo else None, int(hi) if hi else None)]
    return rows


@dataclasses.dataclass(frozen=True)
class Feature:
    """What a reader of a tfds random-access source looks at in one feature."""

    shape: tuple
    np_dtype: Any
    num_classes: int | None = None


@dataclasses.dataclass(frozen=True)
class FolderInfo:
    """The ``dataset_info`` of an :class:`ImageFolder`: ``features`` like tfds' feature dict."""

    features: dict[str, Feature]


class ImageFolder:
    """One split of a folder of images, with the random access of ``tfds.data_source``.

    ``len(folder)``; ``folder[i] -> {"image": uint8 [H, W, C], "label": int64 []}`` (the
    file's own size; ``label`` only with classes); ``folder.dataset_info.features`` gives the
    image feature (``shape (None, None, C)``, uint8) and the label's ``num_classes``. So the
    latent builder (``flowjax latents``) reads a folder as it reads a tfds split.

    Args:
      root: the folder.
      split: ``"train"``, ``"test"`` or ``"all"``, optionally sliced (module docstring).
      channels: 3 (RGB) or 1 (grey).
      class_subfolders, classes, num_threads: as for :func:`list_images`.
      eval_fraction: the fraction of the files held out as ``"test"``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "all",
        *,
        channels: int = 3,
        class_subfolders: bool = True,
        classes: tuple[str, ...] | None = None,
        eval_fraction: float = 0.1,
        num_threads: int = 8,
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels={channels!r}; image folders give 3 (RGB) or 1 (grey)")
        listing = list_images(
            root, class_subfolders=class_subfolders, classes=classes, num_threads=num_threads
        )
        rows = split_rows(len(listing.files), split, eval_fraction, f"images in {listing.root!r}")
        if not len(rows):
            raise ValueError(f"split {split!r} of image folder {listing.root!r} has no images")
        self.root, self.split, self.channels = listing.root, split, int(channels)
        self.classes = listing.classes
        self.num_classes = len(self.classes) if self.classes else None
        self.files = tuple(listing.files[i] for i in rows)
        self.sizes = tuple(listing.sizes[i] for i in rows)
        self.labels = None if listing.labels is None else listing.labels[rows]
        features = {"image": Feature((None, None, self.channels), np.uint8)}
        if self.num_classes is not None:
            features["label"] = Feature((), np.int64, self.num_classes)
        self.dataset_info = FolderInfo(features)

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> str:
        return os.path.join(self.root, self.files[index])

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as uint8 ``[H, W, channels]``."""
        return read_image(self.path(index), self.channels)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        out = {"image": self.image(index)}
        if self.labels is not None:
            out["label"] = np.int64(self.labels[index])
        return out

    def identity(self) -> str:
        """The split's file list, sizes, labels and channels as text (for fingerprints)."""
        labels = [None] * len(self) if self.labels is None else self.labels.tolist()
        rows = "\n".join(f"{f}\t{s}\t{c}" for f, s, c in zip(self.files, self.sizes, labels))
        return f"channels={self.channels};classes={list(self.classes)}\n{rows}"


def open_images(name: str, split: str = "train", data_dir: str | None = None) -> Any:
    """A random-access image source: an :class:`ImageFolder` when ``name`` is a folder, else
    the prepared tfds data set ``name`` (:func:`~flowjax.data.tfds_pipeline.open_source`)."""
    if os.path.isdir(os.path.expanduser(name)):
        return ImageFolder(name, split)
    return open_source(name, split, data_dir)


class ImageFolderSource:
    """A folder of images as a training source (:class:`~flowjax.types.DataSource`).

    Trains on the folder's ``"train"`` split and holds out its ``"test"`` split
    (``eval_fraction`` of the files), or trains on all of ``path`` and holds out all of
    ``eval_path`` (whose class folders must be the training folder's). Batches are
    ``{"x1": float32 [b, R, R, C] in [-1, 1], "label": int32 [b]}`` (``label`` with classes).
    ``fingerprint()`` is the sha256 of both splits' file lists with each file's size and label,
    and of the preprocessing (not of every byte: that would read the whole set at each start).

    Args:
      path: the folder.
      resolution: ``R``, the side of the square training images.
      batch_size, seed, shard_index, shard_count: the global batch, the order's seed and this
        process's place (:class:`~flowjax.data.batch_order.BatchOrder`).
      eval_path, eval_fraction: the held-out images (see above).
      channels: 3 (RGB) or 1 (grey).
      class_subfolders: top-level subfolders are classes.
      random_flip: mirror each training example left-right with probability 1/2.
      num_threads: grain reader threads (and header-check threads).

    Raises:
      ValueError: a bad resolution, an empty or unreadable folder (the file named), fewer
        training images than the global batch, mismatched class folders.
    """

    kind = "images"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        resolution: int,
        batch_size: int,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
        eval_path: str | os.PathLike | None = None,
        eval_fraction: float = 0.1,
        channels: int = 3,
        class_subfolders: bool = True,
        random_flip: bool = False,
        num_threads: int = 8,
    ):
        if not isinstance(resolution, (int, np.integer)) or resolution < 1:
            raise ValueError(
                f"data.resolution={resolution!r}; give the side of the square training images "
                "in pixels (e.g. 64)"
            )
        self.path = os.path.expanduser(os.fspath(path))
        self.eval_path = os.path.expanduser(os.fspath(eval_path)) if eval_path else None
        common = dict(channels=channels, class_subfolders=class_subfolders, num_threads=num_threads)
        if self.eval_path:
            self.train = ImageFolder(self.path, "all", **common)
            self.held = ImageFolder(self.eval_path, "all", classes=self.train.classes, **common)
        else:
            self.train = ImageFolder(self.path, "train", eval_fraction=eval_fraction, **common)
            self.held = ImageFolder(self.path, "test", eval_fraction=eval_fraction, **common)
        self.name = folder_name(self.path)
        self.resolution = int(resolution)
        self.element_shape = (self.resolution, self.resolution, int(channels))
        self.num_classes = self.train.num_classes
        self.num_examples, self.num_eval_examples = len(self.train), len(self.held)
        self.random_flip = bool(random_flip)
        self.num_threads = int(num_threads)
        self._order = BatchOrder(
            self.num_examples,
            global_batch_size=batch_size,
            seed=seed,
            shard_index=shard_index,
            shard_count=shard_count,
            num_threads=num_threads,
        )
        if self.num_examples < batch_size:
            raise ValueError(
                f"image folder {self.path!r} has {self.num_examples} training images, fewer "
                f"than the global batch size {batch_size}; lower train.batch_size or add images"
            )
        held_rule = "eval_path" if self.eval_path else f"eval_fraction={float(eval_fraction)!r}"
        text = (
            f"image_folder;resolution={self.resolution};held={held_rule}\n"
            f"{self.train.identity()}\n--held--\n{self.held.identity()}"
        )
        self._fingerprint = hashlib.sha256(text.encode()).hexdigest()

    def _pixels(self, folder: ImageFolder, index: int, flip: bool) -> dict[str, np.ndarray]:
        image = center_crop(folder.image(index), self.resolution)
        if flip:
            image = image[:, ::-1]
        out = {"x1": image.astype(np.float32) / np.float32(127.5) - np.float32(1.0)}
        if folder.labels is not None:
            out["label"] = np.asarray(folder.labels[index], np.int32)
        return out

    def _example(self, index: int, position: int) -> dict[str, np.ndarray]:
        flip = self.random_flip and self._order.flips(position)
        return self._pixels(self.train, index, flip)

    def example_indices(self, step: int) -> np.ndarray:
        """Indices into :attr:`train` of this process's rows of global batch ``step``."""
        return self._order.example_indices(step)

    def get_batch(self, step: int) -> Batch:
        """This process's part of global batch ``step``, read synchronously."""
        return self._order.get_batch(self._example, step)

    def iterator(self, start_step: int = 0, num_steps: int | None = None) -> Iterator[Batch]:
        """Batches ``start_step, start_step + 1, ...`` read ahead by grain threads."""
        return self._order.iterator(self._example, start_step, num_steps)

    def eval_array(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The first ``min(n, num_eval_examples)`` held-out images (path order, not flipped)."""
        n = min(int(n), self.num_eval_examples)
        x1 = np.empty((n, *self.element_shape), np.float32)
        labels = np.empty((n,), np.int32) if self.num_classes is not None else None
        import grain  # heavy: only reading data needs it

        read = grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=64)
        examples = grain.MapDataset.range(n).map(lambda i: self._pixels(self.held, i, False))
        for i, ex in enumerate(examples.to_iter_dataset(read)):
            x1[i] = ex["x1"]
            if labels is not None:
                labels[i] = ex["label"]
        return x1, labels

    def fingerprint(self) -> str:
        return self._fingerprint
