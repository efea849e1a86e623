"""``python -m flowjax.latents``: encode a prepared tfds image set into a tfds latent set.

Each image is preprocessed as in ADM / DiT (``center_crop_arr``): halved with a box filter
while its short side is at least twice the target resolution ``R``, resized with bicubic
interpolation so the short side is ``R``, center-cropped to ``R x R``; scaled to ``[-1, 1]``.
``--flip`` adds the horizontally flipped copy of every image (row ``2i + 1``). The SD-VAE
(:mod:`flowjax.models.vae`) gives the posterior ``N(mean, std^2)``; stored in model space
(``scaling_factor`` applied) as ``mean``/``std`` (``--mode=posterior``: training draws a fresh
latent per step) or one fixed draw ``latent`` (``--mode=sample``). See
:mod:`flowjax.data.latents` for the layout, resumption and the multi-host split::

    python -m flowjax.latents --vae=sd_vae_ft_ema.npz --tfds=imagenet2012 --split=train \
        --data_dir=$TFDS --resolution=256 --flip --out=$DATA/imagenet256_sdvae_latents
    # every host of a pod / cluster: add --distributed (each host writes shards s % P == i)

The command checks its inputs (weights, image set, resolution) before encoding anything, and
prints the throughput (images/s) at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np

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


def encode_image_set(
    vae: AutoencoderKL,
    name: str,
    out_dir: str,
    *,
    split: str = "train",
    data_dir: str | None = None,
    resolution: int = 256,
    flip: bool = False,
    mode: str = "posterior",
    shard_size: int = 1024,
    batch_size: int = 64,
    seed: int = 0,
    num_examples: int | None = None,
    progress: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    barrier_fn=None,
    vae_path: str | None = None,
) -> dict:
    """Encode ``name``/``split`` into ``out_dir``; returns ``{"rows", "seconds",
    "images_per_s"}`` (for the rows this process encoded now)."""
    if mode not in latent_data.MODES:
        raise ValueError(f"mode={mode!r}; choose 'posterior' or 'sample'.")
    if split and num_examples is not None:
        split = f"{split}[:{int(num_examples)}]"
    source = open_images(name, split, data_dir)  # a tfds name or a folder of images
    enc = LatentEncoder(
        vae,
        source,
        resolution=resolution,
        flip=flip,
        mode=mode,
        batch_size=batch_size,
        seed=seed,
        name=name,
    )
    metadata = {
        "source": name,
        "split": split,
        "resolution": int(resolution),
        "flip": bool(flip),
        "seed": int(seed),
        "vae": os.path.basename(vae_path) if vae_path else None,
        "scaling_factor": vae.config.scaling_factor,
        "shift_factor": vae.config.shift_factor,
        "image_shape": [int(resolution), int(resolution), vae.config.in_channels],
    }
    calls = []

    def shard_fn(index, start, stop):
        calls.append(stop - start)
        return enc(index, start, stop)

    t0 = time.perf_counter()
    latent_data.write_latents(
        out_dir,
        shard_fn,
        num_rows=enc.num_rows,
        shard_size=shard_size,
        latent_shape=enc.latent_shape,
        num_classes=enc.num_classes,
        mode=mode,
        metadata=metadata,
        progress=progress,
        process_index=process_index,
        process_count=process_count,
        barrier_fn=barrier_fn,
    )
    seconds = time.perf_counter() - t0
    rows = sum(calls)
    return {"rows": rows, "seconds": seconds, "images_per_s": rows / max(seconds, 1e-9)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m flowjax.latents", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--vae", required=True, help="VAE weights: flowjax .npz or diffusers .safetensors"
    )
    p.add_argument("--tfds", required=True, help="prepared tfds image set or an image folder")
    p.add_argument("--split", default="train")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--flip", action="store_true", help="also store horizontally flipped copies")
    p.add_argument("--mode", choices=latent_data.MODES, default="posterior")
    p.add_argument("--shard_size", type=int, default=1024)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_examples", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scaling_factor", type=float, default=None)
    p.add_argument("--distributed", action="store_true", help="jax.distributed.initialize()")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    barrier = None
    if args.distributed:
        from flowjax.parallel import multihost

        jax.distributed.initialize()
        barrier = multihost.barrier
    overrides = {} if args.scaling_factor is None else {"scaling_factor": args.scaling_factor}
    try:
        vae = AutoencoderKL.from_file(args.vae, **overrides)
        stats = encode_image_set(
            vae,
            args.tfds,
            args.out,
            split=args.split,
            data_dir=args.data_dir,
            resolution=args.resolution,
            flip=args.flip,
            mode=args.mode,
            shard_size=args.shard_size,
            batch_size=args.batch_size,
            seed=args.seed,
            num_examples=args.num_examples,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            barrier_fn=barrier,
            vae_path=args.vae,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: encoded {stats['rows']} images in {stats['seconds']:.1f} s "
        f"({stats['images_per_s']:.2f} images/s on {jax.devices()[0].platform})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
