"""Encode an image set into a VAE latent data set.

    flowjax latents --vae=sd_vae_ft_ema.npz --tfds=imagenet2012 --split=train \\
        --data_dir=$TFDS --resolution=256 --flip --out=$DATA/imagenet256_sdvae_latents
    # every host of a pod / cluster: add --distributed (each host writes shards s % P == i)

``--tfds`` is a prepared tfds image set, or a folder of images (split ``train`` / ``test``).
Each image is center-cropped to ``--resolution`` as in ADM / DiT and scaled to ``[-1, 1]``;
``--flip`` adds its horizontally flipped copy. The SD-VAE's posterior ``N(mean, std^2)`` is
stored in model space as ``mean`` / ``std`` (``--mode=posterior``: training draws a fresh
latent per step) or as one fixed draw ``latent`` (``--mode=sample``). Beside the training rows
a held-out latent set ``<out>/heldout`` is written from ``--eval_split`` (the evaluator's
reference; never training rows). An interrupted run resumes; other VAE weights are refused.
Every input is checked before anything is encoded, and the throughput is printed at the end
(:mod:`flowjax.workflows.latents`, :mod:`flowjax.data.latents`).
"""

from __future__ import annotations

import sys

from absl import flags

from flowjax import console
from flowjax.cli import _command

FLAGS = flags.FLAGS
flags.DEFINE_string("vae", None, "VAE weights: a flowjax .npz or a diffusers .safetensors.")
flags.DEFINE_string("tfds", None, "A prepared tfds image set, or a folder of images.")
flags.DEFINE_string("split", "train", "The split (or slice, 'train[:1000]') to encode.")
flags.DEFINE_string(
    "eval_split",
    "auto",
    "Held-out split written to OUT/heldout (the evaluator's reference): 'auto' (validation, "
    "else test), a tfds split or slice disjoint from --split, or 'none'.",
)
flags.DEFINE_integer("num_eval_examples", None, "At most this many held-out images.")
flags.DEFINE_string("data_dir", None, "tfds data directory (default: tfds's own).")
flags.DEFINE_integer("resolution", 256, "Square image size R the images are cropped to.")
flags.DEFINE_bool("flip", False, "Also store the horizontally flipped copy of every image.")
flags.DEFINE_enum(
    "mode", "posterior", ["posterior", "sample"], "Store posteriors, or one fixed draw."
)
flags.DEFINE_integer("shard_size", 1024, "Rows per array_record shard (the unit of resumption).")
flags.DEFINE_integer("batch_size", 64, "Images per VAE call.")
flags.DEFINE_integer("num_examples", None, "At most this many training images.")
flags.DEFINE_integer("seed", 0, "Seed of the fixed draws (--mode=sample).")
flags.DEFINE_float("scaling_factor", None, "Override the VAE's latent scaling factor.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
flags.DEFINE_string("out", None, "Directory of the latent data set (created or resumed).")
flags.mark_flags_as_required(["vae", "tfds", "out"])


def main(argv):
    del argv
    console.setup_logging()  # WARNING unless -v, no backend-probe line
    import jax  # deferred: --help and flag errors need no jax

    from flowjax.models.vae import AutoencoderKL
    from flowjax.workflows.latents import encode_image_set

    barrier = None
    if FLAGS.distributed:
        from flowjax.parallel import multihost

        jax.distributed.initialize()
        barrier = multihost.barrier
    overrides = {} if FLAGS.scaling_factor is None else {"scaling_factor": FLAGS.scaling_factor}
    try:
        vae = AutoencoderKL.from_file(FLAGS.vae, **overrides)
        stats = encode_image_set(
            vae,
            FLAGS.tfds,
            FLAGS.out,
            split=FLAGS.split,
            eval_split=FLAGS.eval_split,
            data_dir=FLAGS.data_dir,
            resolution=FLAGS.resolution,
            flip=FLAGS.flip,
            mode=FLAGS.mode,
            shard_size=FLAGS.shard_size,
            batch_size=FLAGS.batch_size,
            seed=FLAGS.seed,
            num_examples=FLAGS.num_examples,
            num_eval_examples=FLAGS.num_eval_examples,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            barrier_fn=barrier,
            vae_path=FLAGS.vae,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
    print(
        f"{FLAGS.out}: encoded {stats['rows']} images (+ {stats['eval_rows']} held out) in "
        f"{stats['seconds']:.1f} s "
        f"({stats['images_per_s']:.2f} images/s on {jax.devices()[0].platform})"
    )


def run(argv=None):
    _command.run(main, __name__, argv)
