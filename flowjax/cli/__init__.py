"""Every flowjax command line, and the ``flowjax`` console script that runs them.

One shape: each command is a module of this package with absl flags (defined at import, each
with a one-line explanation), a ``main(argv)`` that turns the flags into a call of a job in
:mod:`flowjax.workflows` (or of :func:`flowjax.training.train_and_evaluate`), and
``run(argv=None)``. A command imports jax and the job inside ``main``, so ``--help`` and flag
errors answer without loading them; a bad flag or input is one ``ERROR:`` line and exit 2.

    flowjax train --config=toy2d_rf --workdir=runs/toy
    flowjax sample --workdir=runs/toy --solver=dpm++2m --nfe=8
    flowjax --help                      # the commands; flowjax COMMAND --help: its flags

``python -m flowjax.cli COMMAND ...`` is the same without the console script, and
``python -m flowjax.main | sample | reflow | calibrate | search | latents | score`` (and
``python -m flowjax.evaluation.lpips``) still run their command.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: name -> (module, one line); the line is the first line of the module's docstring (tested).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("flowjax.cli.train", "Train (or resume) a run described by a config; evaluate it."),
    "sample": ("flowjax.cli.sample", "Sample a trained run with one sampler and score it."),
    "reflow": ("flowjax.cli.reflow", "Write (noise, sample) pairs of a teacher run for reflow."),
    "calibrate": (
        "flowjax.cli.calibrate",
        "Learn a step grid or bespoke coefficients for a run and store them.",
    ),
    "search": ("flowjax.cli.search", "Reward-guided particle search on a trained run."),
    "latents": ("flowjax.cli.latents", "Encode an image set into a VAE latent data set."),
    "score": ("flowjax.cli.score", "Inception FID and IS of a samples file or of a trained run."),
    "fid-stats": (
        "flowjax.cli.fid_stats",
        "Inception reference statistics (mu, sigma) of a tfds image split.",
    ),
    "convert-vae": (
        "flowjax.cli.convert_vae",
        "Convert a diffusers AutoencoderKL file to a flowjax VAE .npz.",
    ),
    "convert-inception": (
        "flowjax.cli.convert_inception",
        "Convert pytorch-fid's FID InceptionV3 weights to a flowjax .npz.",
    ),
    "convert-lpips": (
        "flowjax.cli.convert_lpips",
        "Convert torchvision VGG16 + lpips v0.1 weights to a flowjax LPIPS .npz.",
    ),
}

PROG = "flowjax"


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        f"usage: {PROG} COMMAND [flags]   ({PROG} COMMAND --help lists a command's flags)",
        "",
        "Flow-matching generative models in JAX (noise at t = 0, data at t = 1).",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {line}" for name, (_, line) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def run(argv: Sequence[str] | None = None) -> None:
    """The ``flowjax`` console script: ``flowjax COMMAND [flags]`` runs ``COMMAND``'s module."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    name = argv[1]
    if name not in COMMANDS:
        print(
            f"ERROR: unknown command {name!r}; choose one of {list(COMMANDS)} "
            f"({PROG} --help describes them)",
            file=sys.stderr,
        )
        sys.exit(2)
    module = importlib.import_module(COMMANDS[name][0])  # only the command asked for
    module.run([f"{PROG} {name}", *argv[2:]])
