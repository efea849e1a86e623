"""Convert a diffusers AutoencoderKL file to a flowjax VAE .npz.

    flowjax convert-vae --weights=diffusion_pytorch_model.safetensors \\
        [--config=config.json] --out=sd_vae_ft_ema.npz

Reads the weights (``.safetensors`` with numpy; a ``.bin`` needs torch for this step only) and
the VAE's diffusers ``config.json`` (default: the one beside ``--weights``), checks the tensors
against it and writes the ``.npz`` that :meth:`flowjax.models.vae.AutoencoderKL.from_file`
reads (:func:`flowjax.workflows.convert.convert_vae`).
"""

from __future__ import annotations

from absl import flags

from flowjax.cli import _command

FLAGS = flags.FLAGS
flags.DEFINE_string("weights", None, "diffusion_pytorch_model.safetensors (or .bin).")
flags.DEFINE_string(
    "config", None, "The VAE's diffusers config.json (default: the one beside --weights)."
)
flags.DEFINE_float("scaling_factor", None, "Override the config's latent scaling factor.")
flags.DEFINE_string("out", None, "The output .npz.")
flags.mark_flags_as_required(["weights", "out"])


def main(argv):
    del argv
    from flowjax.workflows.convert import convert_vae  # deferred: --help needs no jax

    _command.run_converter(
        ["weights"],
        lambda: convert_vae(
            FLAGS.weights, FLAGS.out, config=FLAGS.config, scaling_factor=FLAGS.scaling_factor
        ),
    )


def run(argv=None):
    _command.run(main, __name__, argv)
