"""Training data sources built from the ``data`` config section.

Every source follows :class:`flowjax.types.DataSource` (``kind``, ``name``,
``element_shape``, ``num_classes``, ``iterator(start_step)``, ``eval_array(n)``, optional
``device_batch``, ``fingerprint`` and ``feature_metric``) and splits each global batch over
the processes with the one :class:`flowjax.data.base.BatchLayout`. Batch ``k`` is a pure
function of the seed and ``k``, so a resumed run sees exactly the batches an uninterrupted run
would have seen.

Config fields:
- ``kind="toy2d"``: ``name`` (see :func:`flowjax.data.toy2d.sample_toy`).
- ``kind="tfds"``: ``name`` (any prepared tfds image data set; ``sklearn_digits`` prepares
  itself), ``data_dir``, ``split``, ``eval_split``, ``random_flip``.
- ``kind="array"``: your own data in a file (:class:`ArrayFileSource`): ``path`` (``.npz``
  with ``x`` and optional integer ``label``, or ``.npy`` holding ``x``), and held-out data
  from ``eval_path`` (a second such file) or else the ``eval_fraction`` of the rows (default
  0.1) that a fixed permutation puts first. Its name is the file's stem (``moons.npz`` ->
  ``moons``); ``data.name`` is not used.
- ``kind="image_folder"``: a folder of PNG / JPEG images of any sizes read with Pillow
  (:class:`flowjax.data.ImageFolderSource`): ``path``, ``resolution`` (center-cropped to
  ``resolution x resolution`` as ADM does), ``channels`` (3 RGB, 1 grey), ``class_subfolders``
  (top-level subfolders are classes), ``random_flip``, and held-out images from ``eval_path``
  (a second folder) or else the ``eval_fraction`` of the files (default 0.1). Its name is the
  folder's.
- ``kind="digits_mixed"`` / ``kind="photos_mixed"``: images of mixed sizes as padded token
  batches, bucketed by token count (:mod:`flowjax.data.mixed_sizes`): ``sizes`` (digits) or
  ``crop_sizes`` and ``side`` (photos), ``patch_size`` (the model's), ``max_tokens``,
  ``eval_size`` (the size evaluated and sampled at) and ``bucket_padding``.
- ``kind="mixed_latents"``: a latent set of mixed sizes in ``path``
  (:class:`flowjax.data.MixedLatentSource`, written by :func:`flowjax.data.write_mixed_latents`),
  with ``name``, ``patch_size``, ``max_tokens``, ``eval_size`` and ``bucket_padding``.
- ``pairs_dir`` (any kind): train on the reflow pairs ``{"x0", "x1"[, "label"]}`` stored there
  (written by ``flowjax reflow``; :class:`flowjax.data.PairSource`); the data set
  described by the other fields is the one the pairs imitate, used for evaluation.

Every run records :func:`describe_source` of its data (name, kind, element shape, classes, a
content fingerprint, where it came from) in ``config.json`` under ``dataset``, so the sampling
CLI can tell whether the config rebuilds the data the model was trained on.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from typing import Any, Callable, Iterator

import jax
import numpy as np

from flowjax import weight_files
from flowjax.data import toy2d
from flowjax.data.base import (
    BatchLayout,
    FeatureMetric,
    fingerprint_of,
    held_out_split,
    step_iterator,
)
from flowjax.data.feature_metrics import feature_metric_for
from flowjax.data.image_folder import ImageFolderSource, folder_name
from flowjax.data.mixed_latents import MixedLatentSource
from flowjax.data.mixed_sizes import DigitsMixedSource, PhotosMixedSource
from flowjax.data.pairs import PairSource
from flowjax.data.tfds_pipeline import ImageDataset, load_split_array
from flowjax.registry import Registry, registrar


class ToySource:
    """2-D toy data: global batch ``k`` is ``sample_toy(name, fold_in(key, k), B)``."""

    kind = "points"
    num_classes = None
    element_shape = (2,)

    def __init__(
        self, name: str, *, batch_size: int, seed: int, shard_index: int = 0, shard_count: int = 1
    ):
        self.layout = BatchLayout(batch_size, shard_index, shard_count)
        toy2d.sample_toy(name, jax.random.PRNGKey(0), 1)  # validates the name
        self.name = name
        self.batch_size = batch_size
        self._key = jax.random.PRNGKey(seed)
        self._eval_key = jax.random.fold_in(jax.random.PRNGKey(seed), 2**31 - 1)
        key, layout = self._key, self.layout

        def batch(step):
            return layout.local(toy2d.sample_toy(name, jax.random.fold_in(key, step), batch_size))

        self._batch = jax.jit(batch)

    def get_batch(self, step: int) -> dict:
        """This process's rows of global batch ``step`` (a device array)."""
        return {"x1": self._batch(step)}

    def device_batch(self, step) -> dict:
        """The whole global batch ``step`` as a pure, traceable function of ``step``.

        The training loop fuses it into the jitted step (no per-step dispatch or transfer);
        its rows equal the concatenation of every process's :meth:`get_batch`.
        """
        return {
            "x1": toy2d.sample_toy(self.name, jax.random.fold_in(self._key, step), self.batch_size)
        }

    def iterator(self, start_step: int = 0) -> Iterator[dict]:
        return step_iterator(self.get_batch, start_step)

    def eval_array(self, n: int) -> tuple[np.ndarray, None]:
        return np.asarray(toy2d.sample_toy(self.name, self._eval_key, n)), None

    def fingerprint(self) -> str:
        """The generator's identity (its samples are a pure function of name, key and n)."""
        return _sha256_text(f"toy2d:{self.name}")


class TfdsImageSource:
    """Images from a tfds data set through :class:`~flowjax.data.ImageDataset` (grain)."""

    kind = "images"

    def __init__(
        self,
        name: str,
        *,
        batch_size: int,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
        data_dir: str | None = None,
        split: str = "train",
        eval_split: str = "test",
        random_flip: bool = False,
    ):
        self.name = name
        self.data_dir = os.path.expanduser(data_dir) if data_dir else None
        self.eval_split = eval_split
        self.dataset = ImageDataset(
            name,
            global_batch_size=batch_size,
            split=split,
            data_dir=self.data_dir,
            seed=seed,
            shard_index=shard_index,
            shard_count=shard_count,
            random_flip=random_flip,
        )
        self.element_shape = tuple(self.dataset.element_shape)
        self.num_classes = self.dataset.num_classes

    def iterator(self, start_step: int = 0) -> Iterator[dict]:
        return self.dataset.iterator(start_step)

    def eval_array(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        return load_split_array(self.name, self.eval_split, self.data_dir, max_examples=n)

    def fingerprint(self) -> str:
        """The data set's identity: tfds name and splits (not the bytes: they are not read)."""
        return _sha256_text(f"tfds:{self.name}:{self.dataset.split}:{self.eval_split}")

    def feature_metric(self, cache_dir: str) -> FeatureMetric | None:
        """The metric registered for this tfds name (:func:`register_feature_metric`), if any."""
        return feature_metric_for(self.name, cache_dir)


class ArraySource:
    """In-memory training examples (a dict of arrays with one leading axis) in random batches.

    Global batch ``k`` is the rows ``randint(fold_in(key, k), [B], 0, n)`` (with replacement),
    a pure function of the seed and ``k``, so a resumed run sees the same batches; this process
    gets its slice of each. ``kind``, ``name``, ``element_shape``, ``num_classes`` and
    ``eval_array`` come from ``base``, the data set the model was trained on, so evaluation
    still scores samples against held-out real data. Used for fine-tunes on generated data
    (BOSS straightening tuples).
    """

    def __init__(
        self,
        arrays: dict,
        *,
        base: Any,
        batch_size: int,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
    ):
        if not arrays:
            raise ValueError("ArraySource needs at least one array")
        sizes = {k: np.shape(v)[0] for k, v in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all arrays need the same number of rows; got {sizes}")
        self.layout = BatchLayout(batch_size, shard_index, shard_count)
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.num_examples = next(iter(sizes.values()))
        self.base = base
        self.kind, self.name = base.kind, base.name
        self.element_shape, self.num_classes = tuple(base.element_shape), base.num_classes
        self.batch_size = batch_size
        self._key = jax.random.fold_in(jax.random.PRNGKey(seed), 7)

    def rows(self, step: int) -> np.ndarray:
        key = jax.random.fold_in(self._key, step)
        rows = np.asarray(jax.random.randint(key, (self.batch_size,), 0, self.num_examples))
        return self.layout.local(rows)

    def get_batch(self, step: int) -> dict:
        rows = self.rows(step)
        return {k: v[rows] for k, v in self.arrays.items()}

    def iterator(self, start_step: int = 0) -> Iterator[dict]:
        return step_iterator(self.get_batch, start_step)

    def eval_array(self, n: int):
        return self.base.eval_array(n)

    def fingerprint(self) -> str:
        """sha256 of the training arrays (and the base data set's fingerprint)."""
        return _sha256_arrays(self.arrays, extra=fingerprint_of(self.base) or "")


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256_arrays(arrays: dict, extra: str = "") -> str:
    """sha256 over ``(key, dtype, shape, bytes)`` of each array, in key order."""
    h = hashlib.sha256(extra.encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_array_file(path: str) -> dict[str, np.ndarray]:
    """``{"x": float32 [n, ...], "label": int32 [n] (if present)}`` from a ``.npz`` / ``.npy``.

    Raises a one-line error for a missing file, another extension, an ``.npz`` without ``x``,
    non-numeric or non-finite ``x``, and labels that are not non-negative integers, one per row.
    """
    path = os.path.expanduser(str(path))
    if not path.endswith((".npz", ".npy")):
        raise ValueError(f"data file {path!r} must be a .npz (keys x, label) or a .npy (x)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path!r} does not exist; check data.path")
    how = "; save it with np.savez(path, x=x, label=label) or np.save(path, x)"
    foreign = weight_files.numpy_file_error(path, "a NumPy " + path[-4:] + " file", how)
    if foreign:
        raise ValueError(f"data file {foreign}")
    try:
        if path.endswith(".npy"):
            files, arrays = ["x"], {"x": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as f:
                files, arrays = f.files, {k: f[k] for k in ("x", "label") if k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"data file {path} cannot be read ({err}){how}") from None
    if "x" not in arrays:
        raise ValueError(
            f"data file {path!r} has arrays {files}; store the examples under 'x' "
            "(and optional integer class labels under 'label')"
        )
    x = arrays["x"]
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or x.ndim not in (2, 4):
        raise ValueError(
            f"x in {path!r} has shape {x.shape} and dtype {x.dtype}; it must be numeric, "
            "[n, d] points or [n, H, W, C] images"
        )
    x = x.astype(np.float32)
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise ValueError(f"x in {path!r} has {bad} NaN or infinite values; clean the data first")
    out = {"x": x}
    if "label" in arrays:
        label = arrays["label"]
        if (
            not np.issubdtype(label.dtype, np.integer)
            or label.shape != (x.shape[0],)
            or (label.size and label.min() < 0)
        ):
            raise ValueError(
                f"label in {path!r} has shape {label.shape} and dtype {label.dtype}; it must be "
                f"non-negative integers, one per row of x ({x.shape[0]})"
            )
        out["label"] = label.astype(np.int32)
    return out


def array_file_name(path: str) -> str:
    """The name of an array-file data set: the file's stem (``~/moons.npz`` -> ``moons``)."""
    return os.path.splitext(os.path.basename(os.path.expanduser(path)))[0]


class ArrayFileSource:
    """Your own data from a ``.npz`` / ``.npy`` file (:func:`load_array_file`).

    ``kind`` is ``"points"`` for ``x`` of shape ``[n, d]`` and ``"images"`` for ``[n, H, W, C]``
    (scaled to [-1, 1] by you); ``name`` is the file's stem. Held out for evaluation: the rows
    of ``eval_path`` if given, else the first ``ceil(eval_fraction * n)`` rows of a fixed
    permutation (seed 0, the same for every run seed), never trained on. Training batches are
    random rows of the rest, with replacement (:class:`ArraySource`: batch ``k`` is a pure
    function of the seed and ``k``). ``num_classes`` is ``max(label) + 1`` over both parts.
    ``fingerprint()`` is the sha256 of the arrays (float32 ``x``, int32 ``label``) of both
    parts and of how they were split.
    """

    def __init__(
        self,
        path: str,
        *,
        batch_size: int,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
        eval_path: str | None = None,
        eval_fraction: float = 0.1,
    ):
        self.path = os.path.expanduser(str(path))
        self.eval_path = os.path.expanduser(str(eval_path)) if eval_path else None
        data = load_array_file(self.path)
        n = data["x"].shape[0]
        if self.eval_path:
            held = load_array_file(self.eval_path)
            if held["x"].shape[1:] != data["x"].shape[1:] or set(held) != set(data):
                raise ValueError(
                    f"eval data {self.eval_path!r} (x {held['x'].shape}, keys {sorted(held)}) "
                    f"does not match {self.path!r} (x {data['x'].shape}, keys {sorted(data)})"
                )
            train, split = data, f"eval_path:{os.path.basename(self.eval_path)}"
        else:
            held_rows, train_rows = held_out_split(n, eval_fraction, f"rows in {self.path!r}")
            held = {k: v[held_rows] for k, v in data.items()}
            train = {k: v[train_rows] for k, v in data.items()}
            split = f"eval_fraction:{float(eval_fraction)!r}"
        self.name = array_file_name(self.path)
        self.kind = "points" if data["x"].ndim == 2 else "images"
        self.element_shape = tuple(int(d) for d in data["x"].shape[1:])
        labels = [a["label"] for a in (train, held) if "label" in a]
        self.num_classes = int(max(int(a.max()) for a in labels)) + 1 if labels else None
        self.num_examples, self.num_eval_examples = train["x"].shape[0], held["x"].shape[0]
        self._held = held
        self._fingerprint = _sha256_arrays(
            {f"train/{k}": v for k, v in train.items()} | {f"eval/{k}": v for k, v in held.items()},
            extra=split,
        )
        self._train = ArraySource(
            {"x1" if k == "x" else k: v for k, v in train.items()},
            base=self,
            batch_size=batch_size,
            seed=seed,
            shard_index=shard_index,
            shard_count=shard_count,
        )

    def iterator(self, start_step: int = 0) -> Iterator[dict]:
        return self._train.iterator(start_step)

    def eval_array(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The first ``min(n, num_eval_examples)`` held-out rows."""
        return self._held["x"][:n], (self._held["label"][:n] if "label" in self._held else None)

    def fingerprint(self) -> str:
        return self._fingerprint


class RecordedShapeSource:
    """A stand-in for data that cannot be rebuilt: the recorded kind, name, shape and classes,
    enough to rebuild the model, and no examples (``has_eval_data = False``); ``reason`` says
    why."""

    has_eval_data = False

    def __init__(self, record: dict, reason: str):
        self.kind = record["kind"]
        self.name = record["name"]
        self.element_shape = tuple(int(d) for d in record["element_shape"])
        nc = record.get("num_classes", None)
        self.num_classes = int(nc) if nc is not None else None
        self.reason = reason

    def iterator(self, start_step: int = 0) -> Iterator[dict]:
        raise ValueError(f"no training data: {self.reason}")

    def eval_array(self, n: int):
        raise ValueError(f"no held-out data: {self.reason}")


def describe_source(source: Any, *, from_config: bool) -> dict:
    """What a run records about its data: ``name``, ``kind``, ``element_shape``,
    ``num_classes``, ``fingerprint`` (sha256 from the source's ``fingerprint()``, ``None`` if it
    has none), ``path`` / ``eval_path`` (file data), and ``built_from`` (``"config"`` or
    ``"code"``: passed to ``train_and_evaluate(data=...)``)."""
    record = {
        "name": str(source.name),
        "kind": str(source.kind),
        "element_shape": [int(d) for d in source.element_shape],
        "num_classes": None if source.num_classes is None else int(source.num_classes),
        "fingerprint": fingerprint_of(source),
        "built_from": "config" if from_config else "code",
    }
    for key in ("path", "eval_path"):
        if getattr(source, key, None):
            record[key] = os.path.abspath(getattr(source, key))
    return record


def _stated(cfg: Any, *keys: str) -> dict:
    """The ``keys`` a data section states (not None): the source's own defaults hold the rest."""
    return {k: cfg[k] for k in keys if cfg.get(k, None) is not None}


def _toy_source(cfg: Any, common: dict):
    return ToySource(cfg.name, **common)


def _array_source(cfg: Any, common: dict):
    if not cfg.get("path", None):
        raise ValueError("data.kind='array' needs data.path=FILE (.npz with x[, label], or .npy)")
    return ArrayFileSource(cfg.path, **_stated(cfg, "eval_path", "eval_fraction"), **common)


def _latent_source(cfg: Any, common: dict):
    from flowjax.data.latents import LatentSource  # a latent set written by flowjax.latents

    if not cfg.get("path", None):
        raise ValueError(
            "data.kind='latents' needs data.path=DIR, a latent set made with "
            "`flowjax latents --vae=W --tfds=NAME --resolution=R --out=DIR`"
        )
    return LatentSource(cfg.path, **_stated(cfg, "name"), **common)


def _image_folder_source(cfg: Any, common: dict):
    if not cfg.get("path", None) or not cfg.get("resolution", None):
        raise ValueError(
            "data.kind='image_folder' needs data.path=DIR (PNG / JPEG images, optionally one "
            "subfolder per class) and data.resolution=R (the side of the square training images)"
        )
    options = _stated(
        cfg, "eval_path", "eval_fraction", "channels", "class_subfolders", "random_flip"
    )
    return ImageFolderSource(cfg.path, resolution=cfg.resolution, **options, **common)


_MIXED_FIELDS = ("patch_size", "max_tokens", "eval_size", "bucket_padding")


def _digits_mixed_source(cfg: Any, common: dict):
    return DigitsMixedSource(**_stated(cfg, "sizes", *_MIXED_FIELDS), **common)


def _photos_mixed_source(cfg: Any, common: dict):
    return PhotosMixedSource(**_stated(cfg, "crop_sizes", "side", *_MIXED_FIELDS), **common)


def _mixed_latent_source(cfg: Any, common: dict):
    if not cfg.get("path", None):
        raise ValueError(
            "data.kind='mixed_latents' needs data.path=DIR, a mixed latent set written with "
            "flowjax.data.write_mixed_latents (and its held-out set in DIR/heldout)"
        )
    return MixedLatentSource(cfg.path, **_stated(cfg, "name", *_MIXED_FIELDS), **common)


def _tfds_source(cfg: Any, common: dict):
    options = _stated(cfg, "data_dir", "split", "eval_split", "random_flip")
    return TfdsImageSource(cfg.name, **options, **common)


#: Data sources by ``data.kind``; each entry is ``builder(data section, common) -> source``
#: with ``common`` = batch_size, seed, shard_index, shard_count.
SOURCES: Registry[Callable[[Any, dict], Any]] = Registry(
    "data kind",
    {
        "toy2d": _toy_source,
        "array": _array_source,
        "latents": _latent_source,
        "tfds": _tfds_source,
        "image_folder": _image_folder_source,
        "digits_mixed": _digits_mixed_source,
        "photos_mixed": _photos_mixed_source,
        "mixed_latents": _mixed_latent_source,
    },
)
register_source = registrar(
    SOURCES,
    "register_source",
    "``builder(data section, common) -> DataSource``, common = batch_size, seed, shard_index, "
    "shard_count",
)


#: Data kinds named after their ``data.path`` (the config's ``data.name`` is not used).
NAMED_BY_PATH: dict[str, Callable[[str], str]] = {
    "array": array_file_name,
    "image_folder": folder_name,
}


def data_name(cfg: Any) -> str:
    """The name of the data a ``data`` section describes: the file's stem of an array, the
    folder's name of an image folder (:data:`NAMED_BY_PATH`), else ``cfg.name``; what a run
    records as ``data.name``."""
    name_of = NAMED_BY_PATH.get(cfg.get("kind", "toy2d"))
    path = cfg.get("path", None)
    return name_of(path) if name_of is not None and path else cfg.get("name", None)


def make_source(
    cfg: Any,
    *,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    pairs: bool = True,
):
    """Build the training source described by ``cfg`` (the ``data`` config section).

    ``cfg.kind`` picks the builder in :data:`SOURCES` (default ``"toy2d"``); ``pairs=False``
    ignores ``cfg.pairs_dir`` (the real data set behind a pair data set)."""
    build = SOURCES[cfg.get("kind", "toy2d")]
    common = dict(
        batch_size=batch_size, seed=seed, shard_index=shard_index, shard_count=shard_count
    )
    pairs_dir = cfg.get("pairs_dir", None) if pairs else None
    if pairs_dir:
        base = make_source(cfg, pairs=False, **common)
        return PairSource(os.path.expanduser(pairs_dir), base=base, **common)
    return build(cfg, common)
