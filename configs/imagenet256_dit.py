"""DiT-XL/2 (SiT recipe) on ImageNet 256x256, sharded over a TPU pod slice or GPU hosts.

    # on every host of a TPU pod slice (jax.distributed finds the cluster by itself)
    python -m flowjax.main --config=configs/imagenet256_dit.py --workdir=gs://BUCKET/dit_xl2 \
        --distributed --config.data.data_dir=gs://BUCKET/tfds
    # GPU hosts: --coordinator_address=HOST0:1234 --num_processes=N --process_id=i instead

Variants: ``imagenet256_dit.py`` / ``imagenet256_dit.py:latents`` (default) trains in the
SD-VAE latent space: ``data.path``, a latent set of 32x32x4 posteriors (mean, std; already
multiplied by 0.18215; a fresh draw per step) of the center-cropped 256x256 images with
``label`` (1000 classes), made once (resumable, split across hosts) with

    python -m flowjax.main ... --config.data.path=gs://BUCKET/imagenet256_sdvae_latents \
        --config.eval.vae_weights=sd_vae_ft_ema.npz \
        --config.eval.inception_weights=inception_fid.npz \
        --config.eval.fid_stats=VIRTUAL_imagenet256_stats.npz
    python -m flowjax.latents --vae=sd_vae_ft_ema.npz --tfds=imagenet2012 --split=train \
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
(``--config.mesh.fsdp=8 --config.mesh.tensor=2`` etc.). The rule table is below, as data.
Per-device bytes of parameters + optimizer state and the model FLOPs per step are logged at
start; tokens/s and MFU every ``log_every`` steps.
"""

import ml_collections
from ml_collections import config_dict

from flowjax.config_files import data_section, sibling


def dit_recipe(
    c: ml_collections.ConfigDict,
    *,
    variant: str,
    dtype: str,
    batch_size: int,
    eval_every: int,
    num_eval_samples: int,
) -> None:
    """The SiT/DiT recipe and its Inception-FID evaluation, set on ``c`` in place.

    A class-conditional DiT (``variant``, activations in ``dtype``, float32 parameters, no
    learned sigma, raw t into the time embedder) with class dropout 0.1; AdamW 1e-4 constant,
    no weight decay or clipping, EMA 0.9999, 400K steps of ``batch_size``; evaluation every
    ``eval_every`` steps with Euler 50 and Heun 100 at CFG scale 1.5 on ``num_eval_samples``
    samples, and the optional VAE (decode latent samples), Inception weights (FID on pixels)
    and reference statistics. ``configs/cifar10_dit.py`` uses it too.
    """
    c.model = dict(
        name="dit",
        variant=variant,
        mlp_ratio=4.0,
        learn_sigma=False,
        time_scale=1.0,
        conditional=True,
        dtype=dtype,
        param_dtype="float32",
        remat=False,
    )
    c.objective.label_dropout = 0.1  # linear path, uniform t, L2: the toy defaults
    c.optim.update(
        dict(lr=1e-4, weight_decay=0.0, warmup_steps=0, schedule="constant", grad_clip=0.0)
    )
    c.optim.mu_dtype = config_dict.placeholder(str)  # "bfloat16": Adam's first moment in bf16
    c.train.update(
        dict(
            batch_size=batch_size,
            num_steps=400_000,
            ema_decay=0.9999,
            log_every=100,
            eval_every=eval_every,
            checkpoint_every=10_000,
        )
    )
    c.eval.update(
        dict(samplers=("euler:50", "heun:100"), num_samples=num_eval_samples, cfg_scale=1.5)
    )
    c.eval.num_kernel_samples = num_eval_samples
    c.eval.vae_weights = config_dict.placeholder(str)  # decode latent samples (flowjax.models.vae)
    c.eval.inception_weights = config_dict.placeholder(str)  # Inception FID on decoded pixels
    c.eval.fid_stats = config_dict.placeholder(str)  # reference (mu, sigma) .npz


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "latents"
    if variant not in ("latents", "pixels"):
        raise ValueError(f"unknown variant {variant!r}; use 'latents' or 'pixels'")
    c = sibling(__file__, "toy2d_rf").get_config()  # the field set every job has; overridden below
    if variant == "latents":  # flips are stored in the latent set (--flip), not drawn
        c.data = data_section("latents", "imagenet256_sdvae_latents")
    else:
        c.data = data_section(
            "tfds", "imagenet256_pixels", split="train", eval_split="validation", random_flip=True
        )
    dit_recipe(
        c,
        variant="XL/2" if variant == "latents" else "XL/8",
        dtype="bfloat16",
        batch_size=256,
        eval_every=50_000,
        num_eval_samples=1024,
    )
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    c.sharding.rules = (
        ("batch", ("data", "fsdp")),
        ("layers", None),  # the stacked depth axis of scanned blocks
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("modulation", "tensor"),
        ("kv", None),
        ("patch", None),
        ("freq", None),
        ("vocab", None),
        ("length", None),
        ("act_embed", None),
    )
    return c
