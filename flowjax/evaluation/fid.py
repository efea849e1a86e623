"""Inception FID and Inception Score on pixels, with reference statistics from ``.npz`` or tfds.

FID (Heusel et al. 2017): pool3 features ``f(x) in R^2048`` of the FID InceptionV3
(:mod:`flowjax.models.inception`) for generated images ``x ~ p_g`` and real images ``y ~ p_r``,
Gaussians fitted to each, and the Fréchet distance between them,

.. code-block:: text

    FID = ||mu_g - mu_r||^2 + tr(S_g + S_r - 2 (S_g S_r)^{1/2})

(:func:`flowjax.evaluation.frechet_distance`, float64; ``S`` the unbiased covariance). It is 0
for equal statistics, symmetric, invariant to the order of each set, and biased upwards by
about ``tr(S) F / N`` for ``N`` samples: compare values at equal ``N`` (50 000 in the papers).

Inception Score (Salimans et al. 2016): ``p(y|x) = softmax(logits(x))`` over the 1008 classes
(logits without the ``fc`` bias, as the original code), ``p(y) = mean_x p(y|x)`` within each of
``splits`` (10) consecutive chunks, ``IS = exp(mean_x KL(p(y|x) || p(y)))``; the mean and the
(population) standard deviation over the chunks are reported. ``1 <= IS <= K``. Chunk ``k`` of
``N`` rows is rows ``[k N // splits, (k + 1) N // splits)``, the boundaries of the original code
and torch-fidelity (which also shuffles the rows first, seed 2020, unless told not to).

Images are scored as the published tools score image files: a float sample in ``[-1, 1]`` is
clipped and quantised to the 256 levels of a ``uint8`` image, ``u = clip(floor((x + 1) 127.5 +
1/2), 0, 255)`` (:func:`to_uint8`; round half up, as EDM's and torchvision's image writers), and
the network sees ``u / 127.5 - 1`` (:func:`quantize_images`): pytorch-fid reads such files, and
ADM's evaluator takes ``uint8`` batches. ``uint8`` arrays are taken as they are.

Reference statistics: the common ``.npz`` with ``mu [F]`` and ``sigma [F, F]`` (what
pytorch-fid's ``--save-stats`` and the ADM / guided-diffusion reference batches hold; ADM's
were made with TensorFlow's resize to 299 and so differ slightly from statistics made here), or
computed here from any prepared tfds split (:func:`reference_stats_from_tfds`) and saved::

    flowjax fid-stats --inception=inception_fid.npz --tfds=cifar10 \
        --split=train --out=cifar10_train_stats.npz [--data_dir=...] [--num_examples=50000]

Samples are scored against such a file by ``flowjax score`` (:func:`score_images`).

Across hosts: each process passes its own images; :func:`inception_features` gathers the
features of all processes (in process order) before the statistics are taken.
"""

from __future__ import annotations

import os
import zipfile

import jax
import numpy as np

from flowjax import console
from flowjax.evaluation.frechet import feature_statistics, frechet_distance
from flowjax.models.inception import InceptionV3
from flowjax.weight_files import numpy_file_error, save_npz

__all__ = [
    "check_images",
    "fid_from_features",
    "fid_to_stats",
    "inception_features",
    "inception_score",
    "load_stats",
    "quantize_images",
    "reference_stats_from_tfds",
    "save_stats",
    "score_images",
    "to_uint8",
]


def check_images(images) -> np.ndarray:
    """``images`` as a numpy array, checked: ``[N, H, W, 1 or 3]``, floats in ``[-1, 1]`` (values
    outside are clipped when scored) or ``uint8`` in ``[0, 255]``."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"FID needs images [N, H, W, 1 or 3] (NHWC) in [-1, 1], got shape {x.shape}; decode "
            "latents to pixels first."
        )
    if x.dtype.kind != "f" and x.dtype != np.uint8:
        raise ValueError(
            f"images must be floats in [-1, 1] or uint8 in [0, 255], got {x.dtype} (x / 127.5 - 1)."
        )
    return x


def _levels(images) -> np.ndarray:
    """The ``uint8`` level of every pixel as float32 (NaN stays NaN)."""
    x = np.asarray(images)
    if x.dtype == np.uint8:
        return x.astype(np.float32)
    return np.clip(np.floor((x.astype(np.float32) + 1) * np.float32(127.5) + 0.5), 0, 255)


def to_uint8(images) -> np.ndarray:
    """Float images in ``[-1, 1]`` as the ``uint8`` pixels of an image file:
    ``clip(floor((x + 1) 127.5 + 1/2), 0, 255)``; ``uint8`` input is returned as it is."""
    levels = _levels(images)
    if np.isnan(levels).any():
        raise ValueError("images hold NaN values: they have no uint8 pixels.")
    return levels.astype(np.uint8)


def quantize_images(images) -> np.ndarray:
    """Float32 images on the 256 ``uint8`` levels of ``[-1, 1]``, ``to_uint8(x) / 127.5 - 1``:
    what writing an image file and reading it back gives (out-of-range values clipped). A NaN
    stays NaN, so a diverged model scores NaN rather than as a flat image."""
    return _levels(images) / np.float32(127.5) - np.float32(1)


def inception_features(
    net: InceptionV3,
    images,
    *,
    batch_size: int = 100,
    gather: bool = True,
    progress: bool | None = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(pool3 [N, F], logits [N, K])`` as float64 numpy, in batches of ``batch_size``.

    Each batch is quantised to ``uint8`` levels first (:func:`quantize_images`). With
    ``gather`` and several JAX processes, every process passes its own ``[n, H, W, C]`` rows
    (the same ``n`` on each) and gets all ``P n`` rows back, process ``0``'s first.
    ``progress`` shows a bar over the batches (``None``: when stderr is a terminal).
    """
    x = check_images(images)
    pools, logits = [], []
    bar = console.progress_bar(
        -(-x.shape[0] // batch_size), desc="inception", unit="batch", enabled=progress
    )
    with bar:
        for lo in range(0, x.shape[0], batch_size):
            chunk = quantize_images(x[lo : lo + batch_size])
            n = chunk.shape[0]
            if n < batch_size and x.shape[0] > batch_size:  # pad: one compiled shape
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
            p, lg = net(chunk)
            pools.append(np.asarray(p, np.float64)[:n])
            logits.append(np.asarray(lg, np.float64)[:n])
            bar.update(1)
    pool3, logit = np.concatenate(pools), np.concatenate(logits)
    if gather and jax.process_count() > 1:
        from jax.experimental import multihost_utils

        pool3 = np.asarray(multihost_utils.process_allgather(pool3, tiled=True))
        logit = np.asarray(multihost_utils.process_allgather(logit, tiled=True))
    return pool3, logit


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """``(mean, std)`` over ``splits`` chunks of ``exp(mean KL(p(y|x) || p(y)))``, float64.

    Chunk ``k`` is rows ``[k N // splits, (k + 1) N // splits)`` and ``p(y)`` is the mean of
    ``p(y|x)`` over that chunk only (the original code's protocol); ``std`` has ``ddof = 0``.
    """
    lg = np.asarray(logits, np.float64)
    if lg.ndim != 2 or int(splits) < 1 or lg.shape[0] < int(splits):
        raise ValueError(
            f"the Inception Score needs logits [N, K] with N >= splits >= 1, got {lg.shape} and "
            f"splits={splits}; score more samples or use fewer splits."
        )
    splits, n = int(splits), lg.shape[0]
    lg = lg - lg.max(axis=1, keepdims=True)
    log_p = lg - np.log(np.sum(np.exp(lg), axis=1, keepdims=True))
    scores = []
    for k in range(splits):
        part = log_p[k * n // splits : (k + 1) * n // splits]
        log_py = np.log(np.mean(np.exp(part), axis=0))
        kl = np.sum(np.exp(part) * (part - log_py), axis=1)
        scores.append(np.exp(np.mean(kl)))
    return float(np.mean(scores)), float(np.std(scores))


def save_stats(path: str | os.PathLike, mu, sigma, **extra) -> str:
    """Write ``mu [F]``, ``sigma [F, F]`` (float64) and ``extra`` scalars to an ``.npz``."""
    arrays = {"mu": np.asarray(mu, np.float64), "sigma": np.asarray(sigma, np.float64)}
    return save_npz(path, {**arrays, **extra}, "stats")


def load_stats(path: str | os.PathLike, feature_dim: int | None = None):
    """``(mu, sigma)`` from an ``.npz`` with keys ``mu`` and ``sigma``; checks the dimension."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"FID reference statistics {path!r} do not exist; compute them from a prepared tfds "
            "split with `flowjax fid-stats --inception=W.npz --tfds=NAME "
            f"--split=train --out={path}`, or use a published .npz with mu and sigma."
        )
    foreign = numpy_file_error(path, "an .npz of FID reference statistics (mu, sigma)", ".")
    if foreign:
        raise ValueError(foreign)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data.files or "sigma" not in data.files:
                raise ValueError(
                    f"{path} has keys {data.files}; FID reference statistics need 'mu' [F] and "
                    "'sigma' [F, F]."
                )
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz ({err}).") from err
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not [F] and [F, F].")
    if feature_dim is not None and mu.size != feature_dim:
        raise ValueError(
            f"{path} holds {mu.size}-d statistics but the Inception network gives {feature_dim}-d "
            "features; use statistics made with the same network."
        )
    return mu, sigma


def fid_from_features(features, mu_ref, sigma_ref) -> float:
    """FID of a feature set ``[N, F]`` against ``(mu_ref, sigma_ref)``: the Fréchet distance
    between ``N(mean, cov)`` of the features and the reference Gaussian."""
    return frechet_distance(*feature_statistics(features), mu_ref, sigma_ref)


def fid_to_stats(net: InceptionV3, images, mu_ref, sigma_ref, *, batch_size: int = 100) -> float:
    """FID of ``images`` (``[N, H, W, C]`` in ``[-1, 1]``, all processes' rows gathered)
    against reference statistics ``(mu_ref, sigma_ref)``."""
    pool3, _ = inception_features(net, images, batch_size=batch_size)
    return fid_from_features(pool3, mu_ref, sigma_ref)


def score_images(
    net: InceptionV3,
    images,
    mu_ref,
    sigma_ref,
    *,
    splits: int = 10,
    batch_size: int = 100,
    progress: bool | None = False,
) -> dict[str, float]:
    """FID against ``(mu_ref, sigma_ref)`` and the Inception Score of ``images`` (all processes'
    rows gathered), from one pass of the network: ``{"fid", "is", "is_std", "num_samples"}``."""
    x = check_images(images)
    if x.shape[0] * jax.process_count() < int(splits):
        raise ValueError(f"{x.shape[0]} images for an Inception Score over splits={splits}.")
    pool3, logits = inception_features(net, x, batch_size=batch_size, progress=progress)
    is_mean, is_std = inception_score(logits, splits)
    return {
        "fid": fid_from_features(pool3, mu_ref, sigma_ref),
        "is": is_mean,
        "is_std": is_std,
        "num_samples": int(pool3.shape[0]),
    }


def reference_stats_from_tfds(
    net: InceptionV3,
    name: str,
    *,
    split: str = "train",
    data_dir: str | None = None,
    image_key: str = "image",
    num_examples: int | None = None,
    batch_size: int = 100,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of the pool3 features of the first ``num_examples`` (default all) images
    of a prepared tfds split (uint8 pixels scaled to ``[-1, 1]``; any fixed-shape image set)."""
    from tqdm import tqdm

    from flowjax.data.tfds_pipeline import open_source

    source = open_source(name, split, data_dir)
    feature = source.dataset_info.features[image_key]
    shape = tuple(feature.shape)
    if (
        len(shape) not in (2, 3)
        or any(d is None for d in shape)
        or (len(shape) == 3 and shape[-1] not in (1, 3))
    ):
        raise ValueError(
            f"{name!r}[{image_key!r}] has shape {shape}; FID statistics need fixed-size images "
            "[H, W, 1 or 3]."
        )
    n = len(source) if num_examples is None else min(int(num_examples), len(source))
    half = np.float32(np.iinfo(np.dtype(feature.np_dtype)).max / 2.0)
    feats = []
    for lo in tqdm(range(0, n, batch_size), disable=not progress, desc="reference features"):
        rows = [source[i] for i in range(lo, min(lo + batch_size, n))]
        x = np.stack([np.asarray(r[image_key]) for r in rows]).astype(np.float32) / half - 1
        feats.append(inception_features(net, x.reshape(*x.shape[:3], -1), gather=False)[0])
    return feature_statistics(np.concatenate(feats))
