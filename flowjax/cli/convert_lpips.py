"""Convert torchvision VGG16 + lpips v0.1 weights to a flowjax LPIPS .npz.

    flowjax convert-lpips --vgg=vgg16-397923af.pth --lin=vgg.pth --out=lpips_vgg16.npz

Reads torchvision's ImageNet VGG16 state dict and the lpips package's
``weights/v0.1/vgg.pth`` (torch is needed for this step only) and writes the ``.npz`` that
:meth:`flowjax.evaluation.LPIPS.from_file` reads; then
``--config.objective.reflow.lpips_weights=lpips_vgg16.npz`` enables the LPIPS-Huber loss
(:func:`flowjax.workflows.convert.convert_lpips`).
"""

from __future__ import annotations

from absl import flags

from flowjax.cli import _command

FLAGS = flags.FLAGS
flags.DEFINE_string("vgg", None, "torchvision's vgg16 state dict (vgg16-397923af.pth).")
flags.DEFINE_string("lin", None, "The lpips package's weights/v0.1/vgg.pth.")
flags.DEFINE_string("out", None, "The output .npz.")
flags.mark_flags_as_required(["vgg", "lin", "out"])


def main(argv):
    del argv
    from flowjax.workflows.convert import convert_lpips  # deferred: --help needs no jax

    _command.run_converter(["vgg", "lin"], lambda: convert_lpips(FLAGS.vgg, FLAGS.lin, FLAGS.out))


def run(argv=None):
    _command.run(main, __name__, argv)
