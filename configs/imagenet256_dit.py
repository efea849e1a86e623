"""DiT-XL/2 (SiT recipe) on ImageNet 256x256, sharded over a TPU pod slice or GPU hosts.

    # on every host of a TPU pod slice (jax.distributed finds the cluster by itself)
    flowjax train --config=configs/imagenet256_dit.py --workdir=gs://BUCKET/dit_xl2 \
        --distributed --config.data.data_dir=gs://BUCKET/tfds
    # GPU hosts: --coordinator_address=HOST0:1234 --num_processes=N --process_id=i instead

Variants: ``imagenet256_dit.py`` / ``imagenet256_dit.py:latents`` (default) trains in the
SD-VAE latent space: ``data.path``, a latent set of 32x32x4 posteriors (mean, std; already
multiplied by 0.18215; a fresh draw per step) of the center-cropped 256x256 images with
``label`` (1000 classes), made once (resumable, split across hosts) with

    flowjax train ... --config.data.path=gs://BUCKET/imagenet256_sdvae_latents \
        --config.eval.vae_weights=sd_vae_ft_ema.npz \
        --config.eval.inception_weights=inception_fid.npz \
        --config.eval.fid_stats=VIRTUAL_imagenet256_stats.npz
    flowjax latents --vae=sd_vae_ft_ema.npz --tfds=imagenet2012 --split=train \
        --data_dir=gs://BUCKET/tfds --resolution=256 --flip --out=gs://BUCKET/imagenet256_sdvae_latents

(the first line is the training run, the second the one-off encoding; see
docs/maths/fid_and_latents.md). Evaluation decodes the samples with the VAE and reports Inception
FID (``fid_<sampler>``) against ``eval.fid_stats``, or against the held-out latents' decoded
images when no statistics file is given.
``imagenet256_dit.py:pixels`` trains on pixels of a user-prepared fixed-size 256x256x3
uint8 tfds data set with DiT-XL/8 (1024 tokens; XL/2 on pixels would be 16384 tokens).

The recipe (SiT/DiT): linear path, velocity prediction, uniform t, raw t in [0, 1] into the
time embedder, AdamW lr 1e-4 constant, no weight decay, global batch 256, EMA 0.9999, class
dropout 0.1 (CFG), horizontal flips; 7M steps in the papers (400K for their ablations).
Mixed precision (bf16 matmuls, f32 master weights) is on; per-block remat is off (turn it on,
``--config.model.remat=True``, when activations do not fit).

Sharding: the batch over ``data x fsdp``, weights FSDP over ``fsdp`` (the default mesh puts
all devices there: ZeRO-3), attention heads / MLP width over ``tensor``
(``--config.mesh.fsdp=8 --config.mesh.tensor=2`` etc.). The rule table is data:
``dit_rules()`` in ``configs/common.py``, with the recipe (``dit_recipe``).
Per-device bytes of parameters + optimizer state and the model FLOPs per step are logged at
start; tokens/s and MFU every ``log_every`` steps.
"""

import ml_collections

from flowjax.config_files import data_section, sibling

common = sibling(__file__, "common")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "latents"
    if variant not in ("latents", "pixels"):
        raise ValueError(f"unknown variant {variant!r}; use 'latents' or 'pixels'")
    if variant == "latents":  # flips are stored in the latent set (--flip), not drawn
        data = data_section("latents", "imagenet256_sdvae_latents")
    else:
        data = data_section(
            "tfds", "imagenet256_pixels", split="train", eval_split="validation", random_flip=True
        )
    c = common.base_config(data)
    common.dit_recipe(
        c,
        variant="XL/2" if variant == "latents" else "XL/8",
        dtype="bfloat16",
        batch_size=256,
        eval_every=50_000,
        num_eval_samples=1024,
    )
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    c.sharding.rules = common.dit_rules()
    return c
