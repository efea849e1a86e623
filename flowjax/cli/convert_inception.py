"""Convert pytorch-fid's FID InceptionV3 weights to a flowjax .npz.

    flowjax convert-inception --weights=pt_inception-2015-12-05-6726825d.pth \\
        --out=inception_fid.npz

Reads pytorch-fid's ``.pth`` (torch is needed for this step only) and writes the ``.npz`` that
:meth:`flowjax.models.inception.InceptionV3.from_file`, ``flowjax score`` and
``config.eval.inception_weights`` read (:func:`flowjax.workflows.convert.convert_inception`).
"""

from __future__ import annotations

from absl import flags

from flowjax.cli import _command

FLAGS = flags.FLAGS
flags.DEFINE_string("weights", None, "pytorch-fid's pt_inception-2015-12-05-6726825d.pth.")
flags.DEFINE_string("out", None, "The output .npz.")
flags.mark_flags_as_required(["weights", "out"])


def main(argv):
    del argv
    from flowjax.workflows.convert import convert_inception  # deferred: --help needs no jax

    _command.run_converter(["weights"], lambda: convert_inception(FLAGS.weights, FLAGS.out))


def run(argv=None):
    _command.run(main, __name__, argv)
