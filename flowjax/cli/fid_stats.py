"""Inception reference statistics (mu, sigma) of a tfds image split.

    flowjax fid-stats --inception=inception_fid.npz --tfds=cifar10 --split=train \\
        --out=cifar10_train_stats.npz [--data_dir=...] [--num_examples=50000]

Writes the ``.npz`` with ``mu [F]`` and ``sigma [F, F]`` (the FID InceptionV3's pool3
features of every image of the split, or of its first ``--num_examples``) that
``flowjax score --fid_stats`` and ``config.eval.fid_stats`` read
(:func:`flowjax.workflows.score.fid_reference_stats`).
"""

from __future__ import annotations

import sys

from absl import flags

from flowjax import console
from flowjax.cli import _command

FLAGS = flags.FLAGS
flags.DEFINE_string("inception", None, "flowjax Inception .npz (flowjax convert-inception).")
flags.DEFINE_string("tfds", None, "A prepared tfds image set, e.g. cifar10.")
flags.DEFINE_string("split", "train", "The split (or slice) whose statistics to take.")
flags.DEFINE_string("data_dir", None, "tfds data directory (default: tfds's own).")
flags.DEFINE_string("image_key", "image", "The image feature of the data set.")
flags.DEFINE_integer("num_examples", None, "At most this many images (default: the split).")
flags.DEFINE_integer("batch_size", 100, "Images per Inception batch.")
flags.DEFINE_string("out", None, "The statistics .npz to write.")
flags.mark_flags_as_required(["inception", "tfds", "out"])


def main(argv):
    del argv
    console.setup_logging()  # WARNING unless -v, no backend-probe line
    from flowjax.workflows.score import fid_reference_stats  # deferred: --help needs no jax

    try:
        report = fid_reference_stats(
            FLAGS.inception,
            FLAGS.tfds,
            FLAGS.out,
            split=FLAGS.split,
            data_dir=FLAGS.data_dir,
            image_key=FLAGS.image_key,
            num_examples=FLAGS.num_examples,
            batch_size=FLAGS.batch_size,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {report['path']}: {report['dim']}-d statistics")


def run(argv=None):
    _command.run(main, __name__, argv)
