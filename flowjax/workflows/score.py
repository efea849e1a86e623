"""Inception FID and IS of samples against reference statistics, after training.

    python -m flowjax.score --samples=RUN/samples/euler_nfe8.npz \
        --inception_weights=inception_fid.npz --fid_stats=cifar10_train_stats.npz
    python -m flowjax.score --workdir=RUN --inception_weights=inception_fid.npz \
        --fid_stats=VIRTUAL_imagenet256_stats.npz [--sampler=euler:8 --sampler=heun:16]

``--samples``: an ``.npz`` of images ``[N, H, W, 1 or 3]``, floats in ``[-1, 1]`` (what
``python -m flowjax.sample`` writes under ``x``) or ``uint8`` in ``[0, 255]`` (an ADM sample
batch, ``arr_0``); ``--key`` names another array. Latents (a latent run's samples) are decoded
by ``--vae_weights`` first. ``--workdir``: a trained run is sampled from its newest checkpoint
(EMA weights, the evaluator's fixed noise) with each of ``--sampler`` (default: the run's
``config.eval.samplers``) and scored as its training evaluation would have been with
``eval.inception_weights`` / ``eval.fid_stats`` set (a latent run decodes with its
``eval.vae_weights``, or ``--vae_weights``); without ``--fid_stats`` the reference is the run's
held-out data, as in training. The samples of each setting are kept as
``RUN/scores/<label>.npz`` (score them again with ``--samples``).

Every image is clipped and quantised to ``uint8`` levels before the network
(:func:`flowjax.evaluation.fid.quantize_images`); FID is against ``mu`` / ``sigma`` of the
statistics file, IS over ``--splits`` consecutive chunks (the evaluator's 10 in ``--workdir``
mode). The report is printed and written as JSON (``--out``; default ``<samples>_scores.json``
beside the samples, ``RUN/scores/scores.json``). Every input (files, keys, shapes, sizes) is
checked before the network runs; a bad one is one ``ERROR:`` line and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from typing import Any

import numpy as np
from absl import app, flags

from flowjax import console, weight_files

FLAGS = flags.FLAGS
IMAGE_KEYS = ("x", "arr_0")  # flowjax.sample's samples, ADM's sample batches


def define_flags() -> None:
    """Define this command's flags (once; called by :func:`run`, not at import)."""
    if "fid_stats" in FLAGS:
        return
    flags.DEFINE_string("samples", None, "Samples .npz (images, or latents with --vae_weights).")
    flags.DEFINE_string(
        "workdir", None, "A trained run to sample and score (instead of --samples)."
    )
    flags.DEFINE_string(
        "inception_weights", None, "flowjax Inception .npz (flowjax.models.inception)."
    )
    flags.DEFINE_string(
        "fid_stats", None, "Reference statistics .npz with mu [F] and sigma [F, F]."
    )
    flags.DEFINE_string("key", None, "Array of the samples .npz to score (default: x or arr_0).")
    flags.DEFINE_string("vae_weights", None, "VAE weights: decode latent samples to pixels first.")
    flags.DEFINE_multi_string("sampler", None, "--workdir: sampler string(s) (default: the run's).")
    flags.DEFINE_integer(
        "num_samples", None, "--workdir: samples per setting (default: the run's)."
    )
    flags.DEFINE_integer("splits", 10, "Inception Score splits.")
    flags.DEFINE_integer("batch_size", 100, "Images per Inception batch.")
    flags.DEFINE_string(
        "out", None, "Report .json (default: <samples>_scores.json / RUN/scores/scores.json)."
    )
    flags.mark_flags_as_required(["inception_weights"])


def load_samples(path: str, key: str | None = None):
    """``(array, key)``: the samples array of an ``.npz`` (``key``, else ``x`` or ``arr_0``)."""
    if not os.path.isfile(path):
        raise ValueError(
            f"samples file {path!r} does not exist; write one with `python -m flowjax.sample "
            "--workdir=RUN ...` (RUN/samples/<label>.npz) or score a run with --workdir=RUN."
        )
    foreign = weight_files.numpy_file_error(path, "an .npz of samples", ".")
    if foreign:
        raise ValueError(foreign)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz of samples ({err}).") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds one .npy array; save the samples with np.savez(x=...).")
    with data:
        found = key or next((k for k in IMAGE_KEYS if k in data.files), None)
        if found not in data.files:
            raise ValueError(
                f"{path} has arrays {data.files}, not {found or 'x or arr_0'!r}; name the "
                "samples' array with --key (flowjax.sample writes 'x', ADM sample batches "
                "'arr_0')."
            )
        try:
            return data[found], found
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}[{found!r}] cannot be read ({err}).") from None


def _check_scale(x, path: str) -> None:
    """Refuse float samples on a [0, 255] scale (they would all clip to white)."""
    if x.dtype.kind == "f" and x.size and float(x.min()) >= 0 and float(x.max()) > 2:
        raise ValueError(
            f"{path}: float samples in [{float(x.min()):.3g}, {float(x.max()):.3g}] look like "
            "[0, 255] pixels; store them as uint8 or as floats in [-1, 1] (x / 127.5 - 1)."
        )


def _load_network_and_stats(inception_weights: str, fid_stats: str | None):
    from flowjax.evaluation import fid  # deferred: --help and flag errors need no jax
    from flowjax.models.inception import InceptionV3

    net = InceptionV3.from_file(os.path.expanduser(inception_weights))
    stats = None
    if fid_stats:
        stats = fid.load_stats(os.path.expanduser(fid_stats), net.feature_dim)
    return net, stats


def _write(report: dict[str, Any], path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return path


def score_file(
    samples: str,
    inception_weights: str,
    fid_stats: str,
    *,
    key: str | None = None,
    vae_weights: str | None = None,
    splits: int = 10,
    batch_size: int = 100,
    out: str | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """FID and IS of the samples in an ``.npz``; every input is checked before the network
    runs. Returns the report written to ``out``."""
    from flowjax.evaluation import fid  # deferred: --help and flag errors need no jax
    from flowjax.training.evaluate import to_pixels

    if int(splits) < 1 or int(batch_size) < 1:
        raise ValueError(f"--splits={splits} and --batch_size={batch_size} must be >= 1.")
    if not fid_stats:
        raise ValueError("scoring a samples file needs --fid_stats=STATS.npz (mu and sigma).")
    samples = os.path.expanduser(samples)
    x, found = load_samples(samples, key)
    vae = None
    if vae_weights:
        from flowjax.models.vae import AutoencoderKL  # deferred, as above

        vae = AutoencoderKL.from_file(os.path.expanduser(vae_weights))
        if x.ndim != 4 or x.shape[-1] != vae.latent_channels or x.dtype.kind != "f":
            raise ValueError(
                f"{samples}[{found!r}] has shape {x.shape} ({x.dtype}); this VAE decodes "
                f"float latents [N, h, w, {vae.latent_channels}]."
            )
    else:
        if x.ndim == 4 and x.shape[-1] not in (1, 3):
            raise ValueError(
                f"{samples}[{found!r}] has shape {x.shape}: {x.shape[-1]}-channel samples are "
                "latents, not images; decode them with --vae_weights=VAE.npz."
            )
        try:
            fid.check_images(x)
        except ValueError as err:
            raise ValueError(f"{samples}[{found!r}]: {err}") from None
        _check_scale(x, samples)
    if x.shape[0] < int(splits):
        raise ValueError(
            f"{samples}[{found!r}] holds {x.shape[0]} samples, fewer than --splits={splits}."
        )
    net, (mu, sigma) = _load_network_and_stats(inception_weights, fid_stats)
    pixels = to_pixels(x, vae) if vae is not None else x
    scores = fid.score_images(
        net, pixels, mu, sigma, splits=splits, batch_size=batch_size, progress=progress
    )
    report = {
        "samples": samples,
        "key": found,
        "inception_weights": inception_weights,
        "fid_stats": fid_stats,
        "vae_weights": vae_weights,
        "splits": int(splits),
        **scores,
    }
    path = out or os.path.splitext(samples)[0] + "_scores.json"
    report["report"] = _write(report, os.path.expanduser(path))
    return report


def score_run(
    workdir: str,
    inception_weights: str,
    fid_stats: str | None = None,
    *,
    vae_weights: str | None = None,
    samplers: list[str] | None = None,
    num_samples: int | None = None,
    out: str | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Sample a trained run with its evaluator (``samplers``, default the run's own) and score
    every setting with Inception FID (``fid_<label>``) and IS (``is_<label>``) as the training
    evaluation does when ``eval.inception_weights`` / ``eval.fid_stats`` are set."""
    from flowjax import data as data_lib  # deferred: --help and flag errors need no jax
    from flowjax.training.evaluate import IS_SPLITS, Evaluator, parse_eval_spec
    from flowjax.training.experiment import load_run

    for spec in samplers or ():
        parse_eval_spec(spec)  # a clear error before anything loads
    workdir = os.path.abspath(os.path.expanduser(workdir))
    config, exp, params, step = load_run(workdir, num_samples=num_samples)
    if exp.data.kind != "images":
        raise ValueError(
            f"{workdir} trains on {exp.data.kind}; Inception FID / IS need image samples."
        )
    with config.unlocked():
        config.eval.inception_weights = inception_weights
        config.eval.fid_stats = fid_stats
        if vae_weights:
            config.eval.vae_weights = vae_weights
        if samplers:
            config.eval.samplers = tuple(samplers)
    unavailable = data_lib.unavailable_reason(exp.data)
    if not fid_stats and unavailable:
        raise ValueError(
            f"{workdir}: no reference without --fid_stats ({unavailable}); give "
            "--fid_stats=STATS.npz."
        )
    evaluator = Evaluator.for_experiment(config, exp, workdir)  # loads and checks the files
    metrics, samples = evaluator(params, progress=progress, desc="score")
    path = os.path.expanduser(out or os.path.join(workdir, "scores", "scores.json"))
    files = []
    for label, x in samples.items():  # to score again later: --samples=<label>.npz
        arrays = {"x": x} if evaluator.labels is None else {"x": x, "label": evaluator.labels}
        files.append(os.path.join(os.path.dirname(os.path.abspath(path)), f"{label}.npz"))
        os.makedirs(os.path.dirname(files[-1]), exist_ok=True)
        np.savez(files[-1], **{k: np.asarray(v) for k, v in arrays.items()})
    report = {
        "workdir": workdir,
        "checkpoint_step": step,
        "inception_weights": inception_weights,
        "fid_stats": fid_stats or "held-out data of the run",
        "vae_weights": config.eval.get("vae_weights", None),
        "num_samples": int(config.eval.num_samples),
        "is_splits": min(IS_SPLITS, int(config.eval.num_samples)),
        "metrics": {k: v for k, v in metrics.items() if k.startswith(("fid_", "is_"))},
        "samples": files,
    }
    report["report"] = _write(report, path)
    return report


def main(argv):
    del argv
    console.setup_logging()
    if (FLAGS.samples is None) == (FLAGS.workdir is None):
        print("ERROR: give one of --samples=S.npz or --workdir=RUN", file=sys.stderr)
        sys.exit(2)
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


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
