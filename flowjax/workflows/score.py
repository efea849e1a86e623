"""Inception FID and IS after training: the jobs behind ``flowjax score`` and ``flowjax fid-stats``.

- :func:`score_file`: the samples of an ``.npz`` (images ``[N, H, W, 1 or 3]``, floats in
  ``[-1, 1]`` as ``flowjax sample`` writes them under ``x``, or ``uint8`` as an ADM sample
  batch's ``arr_0``; latents decoded by a VAE first) against reference statistics.
- :func:`score_run`: a trained run sampled from its newest checkpoint (EMA weights, the
  evaluator's fixed noise) with each sampler string (default: the run's
  ``config.eval.samplers``) and scored as its training evaluation would have been with
  ``eval.inception_weights`` / ``eval.fid_stats`` set; without statistics the reference is the
  run's held-out data, as in training. The samples of each setting are kept as
  ``RUN/scores/<label>.npz`` (to score again with :func:`score_file`).
- :func:`fid_reference_stats`: ``mu`` / ``sigma`` of a prepared tfds image split, saved as the
  ``.npz`` the two above read.

Every image is clipped and quantised to ``uint8`` levels before the network
(:func:`flowjax.evaluation.fid.quantize_images`); FID is against ``mu`` / ``sigma`` of the
statistics file, IS over ``splits`` consecutive chunks (the evaluator's 10 for a run). Every
input (files, keys, shapes, sizes) is checked before the network runs; a bad one raises a
``ValueError`` with one line saying what to do. Reports are written as JSON.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from flowjax import data as data_lib
from flowjax import weight_files
from flowjax.evaluation import fid
from flowjax.evaluation.evaluator import Evaluator, to_pixels
from flowjax.evaluation.metrics import IS_SPLITS
from flowjax.models.inception import InceptionV3
from flowjax.models.vae import AutoencoderKL
from flowjax.solvers.spec import parse_eval_spec
from flowjax.training.experiment import load_run

IMAGE_KEYS = ("x", "arr_0")  # flowjax sample's samples, ADM's sample batches


def load_samples(path: str, key: str | None = None):
    """``(array, key)``: the samples array of an ``.npz`` (``key``, else ``x`` or ``arr_0``)."""
    if not os.path.isfile(path):
        raise ValueError(
            f"samples file {path!r} does not exist; write one with `flowjax sample "
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
                "samples' array with --key (flowjax sample writes 'x', ADM sample batches "
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
    if int(splits) < 1 or int(batch_size) < 1:
        raise ValueError(f"--splits={splits} and --batch_size={batch_size} must be >= 1.")
    if not fid_stats:
        raise ValueError("scoring a samples file needs --fid_stats=STATS.npz (mu and sigma).")
    samples = os.path.expanduser(samples)
    x, found = load_samples(samples, key)
    vae = None
    if vae_weights:
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


def fid_reference_stats(
    inception_weights: str,
    name: str,
    out: str,
    *,
    split: str = "train",
    data_dir: str | None = None,
    image_key: str = "image",
    num_examples: int | None = None,
    batch_size: int = 100,
    progress: bool = True,
) -> dict[str, Any]:
    """Inception statistics ``mu [F]``, ``sigma [F, F]`` of a prepared tfds image split, saved
    to ``out`` (:func:`flowjax.evaluation.fid.save_stats`); returns ``{"path", "dim"}``."""
    net = InceptionV3.from_file(os.path.expanduser(inception_weights))
    mu, sigma = fid.reference_stats_from_tfds(
        net,
        name,
        split=split,
        data_dir=data_dir,
        image_key=image_key,
        num_examples=num_examples,
        batch_size=batch_size,
        progress=progress,
    )
    return {"path": fid.save_stats(out, mu, sigma), "dim": int(mu.size)}
