"""Encode a prepared tfds image set, or a folder of images (:mod:`flowjax.data.image_folder`,
split ``train`` / ``test``), into a tfds latent set: the job behind ``flowjax latents``.

Each image is preprocessed as in ADM / DiT (``center_crop_arr``): halved with a box filter
while its short side is at least twice the target resolution ``R``, resized with bicubic
interpolation so the short side is ``R``, center-cropped to ``R x R``; scaled to ``[-1, 1]``.
``--flip`` adds the horizontally flipped copy of every image (row ``2i + 1``). The SD-VAE
(:mod:`flowjax.models.vae`) gives the posterior ``N(mean, std^2)``; stored in model space
(``scaling_factor`` applied) as ``mean``/``std`` (``--mode=posterior``: training draws a fresh
latent per step) or one fixed draw ``latent`` (``--mode=sample``). See
:mod:`flowjax.data.latents` for the layout, resumption and the multi-host split::

    flowjax latents --vae=sd_vae_ft_ema.npz --tfds=imagenet2012 --split=train \
        --data_dir=$TFDS --resolution=256 --flip --out=$DATA/imagenet256_sdvae_latents
    # every host of a pod / cluster: add --distributed (each host writes shards s % P == i)

Beside the training rows it writes a *held-out* latent set, ``<out>/heldout`` (see
:mod:`flowjax.data.latents`): the posteriors of ``--eval_split`` (default ``auto``: the image
set's ``validation`` split, else its ``test`` split; any tfds split or slice disjoint from
``--split``; ``none``: no held-out set), unflipped, at most ``--num_eval_examples`` images. The
evaluator's reference (FID without ``eval.fid_stats``, sliced-Wasserstein) is read from it, so
it is never made of training rows. The manifest records the VAE's parameter fingerprint
(:meth:`flowjax.models.vae.AutoencoderKL.fingerprint`), so resuming with other weights, even
under the same file name, is refused.

The command checks its inputs (weights, image set, splits, resolution) before encoding
anything, and prints the throughput (images/s) at the end.
"""

from __future__ import annotations

import os
import time
import types

import numpy as np
import tensorflow_datasets as tfds

from flowjax.data import latents as latent_data
from flowjax.data.image_folder import center_crop, open_images
from flowjax.models.vae import AutoencoderKL


class LatentEncoder:
    """Checks the settings against the image set and the VAE, then makes shards of rows."""

    def __init__(
        self,
        vae: AutoencoderKL,
        source,
        *,
        resolution,
        flip,
        mode,
        batch_size,
        seed,
        image_key="image",
        label_key="label",
        name="images",
    ):
        self.vae, self.source = vae, source
        self.resolution, self.flip, self.mode = int(resolution), bool(flip), mode
        self.batch_size, self.seed = int(batch_size), int(seed)
        features = source.dataset_info.features
        if image_key not in features:
            raise ValueError(
                f"{name!r} has no feature {image_key!r}; its features: {list(features)}."
            )
        shape = tuple(features[image_key].shape)
        channels = shape[-1] if len(shape) == 3 else 1
        if len(shape) not in (2, 3) or channels != vae.config.in_channels:
            raise ValueError(
                f"{name!r}[{image_key!r}] has shape {shape}; this VAE encodes images "
                f"[H, W, {vae.config.in_channels}]. Use an RGB image set."
            )
        if np.dtype(features[image_key].np_dtype) != np.uint8:
            raise ValueError(f"{name!r}[{image_key!r}] must be uint8 pixels.")
        self.latent_shape = vae.latent_shape((self.resolution, self.resolution, channels))
        self.image_key = image_key
        self.label_key = label_key if label_key in features else None
        self.num_classes = (
            getattr(features[self.label_key], "num_classes", None) if self.label_key else None
        )
        self.num_images = len(source)
        if self.num_images == 0:
            raise ValueError(f"{name!r} has no images in this split; choose a split with images.")
        self.num_rows = self.num_images * (2 if self.flip else 1)

    def pixels(self, row: int) -> tuple[np.ndarray, int | None]:
        index, flipped = (row // 2, row % 2 == 1) if self.flip else (row, False)
        raw = self.source[index]
        img = np.asarray(raw[self.image_key])
        img = img[..., None] if img.ndim == 2 else img
        img = center_crop(img, self.resolution)
        if flipped:
            img = img[:, ::-1]
        label = int(raw[self.label_key]) if self.label_key else None
        return img.astype(np.float32) / 127.5 - 1.0, label

    def __call__(self, index: int, start: int, stop: int) -> dict[str, np.ndarray]:
        rows = [self.pixels(r) for r in range(start, stop)]
        x = np.stack([r[0] for r in rows])
        means, stds = [], []
        for lo in range(0, len(x), self.batch_size):
            chunk = x[lo : lo + self.batch_size]
            n = len(chunk)
            if n < self.batch_size:  # one compiled shape
                chunk = np.concatenate(
                    [chunk, np.zeros((self.batch_size - n, *x.shape[1:]), x.dtype)]
                )
            mean, std = self.vae.encode_moments(chunk)
            means.append(np.asarray(mean)[:n])
            stds.append(np.asarray(std)[:n])
        mean, std = np.concatenate(means), np.concatenate(stds)
        mean_y = np.asarray(self.vae.scale(mean), np.float32)
        std_y = (std * self.vae.config.scaling_factor).astype(np.float32)
        if self.mode == "posterior":
            out = {"mean": mean_y, "std": std_y}
        else:
            rng = np.random.default_rng([self.seed, index])
            out = {"latent": mean_y + std_y * rng.standard_normal(mean_y.shape, np.float32)}
        if self.label_key:
            out["label"] = np.asarray([r[1] for r in rows], np.int64)
        return out


HELD_OUT_SPLITS = ("validation", "test")  # what eval_split="auto" looks for, in this order


def _row_ranges(spec: str, lengths) -> list[tuple[str, int, int]]:
    """``(split name, start, stop)`` of the rows a tfds split spec selects (absolute indices);
    ``lengths(name)`` gives a split's size."""
    try:
        instruction = tfds.core.ReadInstruction.from_spec(spec)
        names = {piece.split("[")[0].strip() for piece in spec.split("+")}  # "train[:9]+test"
        infos = {n: types.SimpleNamespace(num_examples=lengths(n)) for n in names}
        pieces = instruction.to_absolute(infos)
    except (ValueError, AssertionError, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"split {spec!r} is not a tfds split spec ({reason}).") from err
    ends = lambda a: a.to if a.to is not None else infos[a.splitname].num_examples
    return [(a.splitname, a.from_ or 0, ends(a)) for a in pieces]


def held_out_split(name: str, split: str, eval_split: str | None, data_dir=None) -> str | None:
    """The split to encode as the held-out set: ``eval_split`` (``"auto"``: the first of
    ``validation`` / ``test`` the image set has; ``None`` / ``"none"``: no held-out set),
    refused if it shares rows with ``split``."""
    if eval_split is None or eval_split == "none":
        return None
    if eval_split == "auto":
        for candidate in HELD_OUT_SPLITS:
            try:
                open_images(name, candidate, data_dir)
                eval_split = candidate
                break
            except (ValueError, FileNotFoundError, KeyError):
                continue
        else:
            raise ValueError(
                f"{name!r} has no 'validation' or 'test' split to hold out for evaluation; pass "
                "a disjoint slice (e.g. --split='train[:-10000]' --eval_split='train[-10000:]'), "
                "or --eval_split=none for no held-out set (then give eval.fid_stats)."
            )
    sizes: dict[str, int] = {}

    def lengths(split_name):
        if split_name not in sizes:
            sizes[split_name] = len(open_images(name, split_name, data_dir))
        return sizes[split_name]

    for a, a0, a1 in _row_ranges(split, lengths):
        for b, b0, b1 in _row_ranges(eval_split, lengths):
            if a == b and max(a0, b0) < min(a1, b1):
                raise ValueError(
                    f"eval_split={eval_split!r} shares rows {max(a0, b0)}..{min(a1, b1) - 1} of "
                    f"{a!r} with split={split!r}; the held-out rows must not be training rows: "
                    "use disjoint slices or another split."
                )
    return eval_split


def _write_set(enc: LatentEncoder, out_dir, metadata, **kw) -> int:
    """Write (or finish) the latent set of ``enc``'s rows; returns the rows encoded now."""
    calls = []

    def shard_fn(index, start, stop):
        calls.append(stop - start)
        return enc(index, start, stop)

    latent_data.write_latents(
        out_dir,
        shard_fn,
        num_rows=enc.num_rows,
        latent_shape=enc.latent_shape,
        num_classes=enc.num_classes,
        mode=enc.mode,
        metadata=metadata,
        **kw,
    )
    return sum(calls)


def encode_image_set(
    vae: AutoencoderKL,
    name: str,
    out_dir: str,
    *,
    split: str = "train",
    eval_split: str | None = "auto",
    data_dir: str | None = None,
    resolution: int = 256,
    flip: bool = False,
    mode: str = "posterior",
    shard_size: int = 1024,
    batch_size: int = 64,
    seed: int = 0,
    num_examples: int | None = None,
    num_eval_examples: int | None = None,
    progress: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    barrier_fn=None,
    vae_path: str | None = None,
) -> dict:
    """Encode ``name``/``split`` into ``out_dir`` and ``eval_split`` (see
    :func:`held_out_split`; unflipped, posterior mode, at most ``num_eval_examples`` images)
    into ``out_dir/heldout``; returns ``{"rows", "eval_rows", "seconds", "images_per_s"}``
    (for the rows this process encoded now). Every setting, split and both image sets are
    checked before anything is encoded."""
    if mode not in latent_data.MODES:
        raise ValueError(f"mode={mode!r}; choose 'posterior' or 'sample'.")
    train_split = split
    if split and num_examples is not None:
        split = f"{split}[:{int(num_examples)}]"
    common = dict(resolution=resolution, batch_size=batch_size, seed=seed, name=name)
    enc = LatentEncoder(vae, open_images(name, split, data_dir), flip=flip, mode=mode, **common)
    eval_split = held_out_split(name, train_split, eval_split, data_dir)
    if eval_split and num_eval_examples is not None:
        eval_split = f"{eval_split}[:{int(num_eval_examples)}]"
    held = None
    if eval_split:
        source = open_images(name, eval_split, data_dir)
        held = LatentEncoder(vae, source, flip=False, mode="posterior", **common)
    metadata = {
        "source": name,
        "split": split,
        "resolution": int(resolution),
        "flip": bool(flip),
        "seed": int(seed),
        "vae": os.path.basename(vae_path) if vae_path else None,
        "vae_sha256": vae.fingerprint(),
        "scaling_factor": vae.config.scaling_factor,
        "shift_factor": vae.config.shift_factor,
        "image_shape": [int(resolution), int(resolution), vae.config.in_channels],
    }
    kw = dict(
        shard_size=shard_size,
        progress=progress,
        process_index=process_index,
        process_count=process_count,
        barrier_fn=barrier_fn,
    )
    t0 = time.perf_counter()
    rows = _write_set(enc, out_dir, metadata, **kw)
    eval_rows = 0
    if held is not None:
        held_meta = {**metadata, "split": eval_split, "flip": False, "held_out_from": split}
        eval_rows = _write_set(held, latent_data.held_out_dir(out_dir), held_meta, **kw)
    seconds = time.perf_counter() - t0
    return {
        "rows": rows,
        "eval_rows": eval_rows,
        "seconds": seconds,
        "images_per_s": (rows + eval_rows) / max(seconds, 1e-9),
    }
