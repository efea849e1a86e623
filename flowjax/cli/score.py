"""Inception FID and IS of a samples file or of a trained run.

    flowjax score --samples=RUN/samples/euler_nfe8.npz \
        --inception_weights=inception_fid.npz --fid_stats=cifar10_train_stats.npz
    flowjax score --workdir=RUN --inception_weights=inception_fid.npz \
        --fid_stats=VIRTUAL_imagenet256_stats.npz [--sampler=euler:8 --sampler=heun:16]

``--samples``: an ``.npz`` of images ``[N, H, W, 1 or 3]``, floats in ``[-1, 1]`` (what
``flowjax sample`` writes under ``x``) or ``uint8`` in ``[0, 255]`` (an ADM sample batch,
``arr_0``); ``--key`` names another array. Latents (a latent run's samples) are decoded by
``--vae_weights`` first. ``--workdir``: a trained run is sampled from its newest checkpoint
(EMA weights, the evaluator's fixed noise) with each of ``--sampler`` (default: the run's
``config.eval.samplers``) and scored as its training evaluation would have been with
``eval.inception_weights`` / ``eval.fid_stats`` set (a latent run decodes with its
``eval.vae_weights``, or ``--vae_weights``); without ``--fid_stats`` the reference is the run's
held-out data, as in training. The samples of each setting are kept as
``RUN/scores/<label>.npz`` (score them again with ``--samples``).

Every image is clipped and quantised to ``uint8`` levels before the network; FID is against
``mu`` / ``sigma`` of the statistics file (``flowjax fid-stats`` makes one), IS over
``--splits`` consecutive chunks (the evaluator's 10 in ``--workdir`` mode). The report is
printed and written as JSON (``--out``; default ``<samples>_scores.json`` beside the samples,
``RUN/scores/scores.json``). Every input (files, keys, shapes, sizes) is checked before the
network runs; a bad one is one ``ERROR:`` line and exit code 2
(:mod:`flowjax.workflows.score`).
"""

from __future__ import annotations

import sys

from absl import flags

from flowjax import console
from flowjax.cli import _command

FLAGS = flags.FLAGS
flags.DEFINE_string("samples", None, "Samples .npz (images, or latents with --vae_weights).")
flags.DEFINE_string("workdir", None, "A trained run to sample and score (instead of --samples).")
flags.DEFINE_string(
    "inception_weights", None, "flowjax Inception .npz (flowjax convert-inception makes one)."
)
flags.DEFINE_string("fid_stats", None, "Reference statistics .npz with mu [F] and sigma [F, F].")
flags.DEFINE_string("key", None, "Array of the samples .npz to score (default: x or arr_0).")
flags.DEFINE_string("vae_weights", None, "VAE weights: decode latent samples to pixels first.")
flags.DEFINE_multi_string("sampler", None, "--workdir: sampler string(s) (default: the run's).")
flags.DEFINE_integer("num_samples", None, "--workdir: samples per setting (default: the run's).")
flags.DEFINE_integer("splits", 10, "Inception Score splits.")
flags.DEFINE_integer("batch_size", 100, "Images per Inception batch.")
flags.DEFINE_string(
    "out", None, "Report .json (default: <samples>_scores.json / RUN/scores/scores.json)."
)
flags.mark_flags_as_required(["inception_weights"])


def main(argv):
    del argv
    console.setup_logging()
    if (FLAGS.samples is None) == (FLAGS.workdir is None):
        print("ERROR: give one of --samples=S.npz or --workdir=RUN", file=sys.stderr)
        sys.exit(2)
    from flowjax.workflows.score import score_file, score_run  # deferred: --help needs no jax

    try:
        if FLAGS.samples is not None:
            report = score_file(
                FLAGS.samples,
                FLAGS.inception_weights,
                FLAGS.fid_stats,
                key=FLAGS.key,
                vae_weights=FLAGS.vae_weights,
                splits=FLAGS.splits,
                batch_size=FLAGS.batch_size,
                out=FLAGS.out,
            )
            print(
                f"{report['samples']}[{report['key']}]: N={report['num_samples']} "
                f"FID={report['fid']:.4f} IS={report['is']:.4f} (std {report['is_std']:.3g}, "
                f"{report['splits']} splits)"
            )
        else:
            report = score_run(
                FLAGS.workdir,
                FLAGS.inception_weights,
                FLAGS.fid_stats,
                vae_weights=FLAGS.vae_weights,
                samplers=FLAGS.sampler,
                num_samples=FLAGS.num_samples,
                out=FLAGS.out,
            )
            for name, value in report["metrics"].items():
                print(f"{name}={value:.4f}")
    except (ValueError, FileNotFoundError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {report['report']}")


def run(argv=None):
    _command.run(main, __name__, argv)
