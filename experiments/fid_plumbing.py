"""The Inception FID machinery on the bundled digits, upsampled to 32x32x3.

Claim tested: the FID path a user runs on CIFAR-10 or ImageNet (images in ``[-1, 1]`` ->
:class:`flowjax.models.inception.InceptionV3` at full width, resized inside to 299x299 ->
pool3 features [N, 2048] -> :func:`flowjax.evaluation.fid.fid_from_features`) runs end to end
on real images and on a trained model's samples, and orders them sensibly:
FID(test, test) = 0, FID(train, test) small, FID(model, test) larger.

Nothing can be downloaded here, so the Inception weights are *random* (seeded He-normal,
:func:`flowjax.models.inception.random_weights`): the numbers only exercise the plumbing and
are not comparable with any published FID. The digits-classifier Fréchet distance (the
trained feature network the digits runs are scored with) is reported on the same sets for
comparison.

Sets (all ``N`` images, the same ``N`` everywhere since FID is biased upwards by ~1/N):

- ``train``: the first ``N`` images of the ``train`` split of tfds ``sklearn_digits``;
- ``test``: the first ``N`` images of the ``test`` split (360 in all);
- ``model``: ``N`` samples of a trained digits run (``--workdir``) with ``--sampler``
  (``heun:32``) on the run's evaluation noise and random class labels, classifier-free
  guidance as configured (scale 2 in ``configs/digits_rf.py``).

Each 8x8x1 set is upsampled to 32x32 (bilinear, ``jax.image.resize``) and repeated to 3
channels before the Inception network; the digits classifier sees the 8x8 originals.

    python -m flowjax.main --config=configs/digits_rf.py --workdir=/tmp/digits \
        --config.train.num_steps=1000                           # ~10-15 min
    python experiments/fid_plumbing.py --workdir=/tmp/digits    # ~15 min at N = 360

Writes ``results/experiments/fid_plumbing.json`` and prints a table. Measured here (N = 360,
a 1000-step run, 2 shared CPU cores): Inception FID (random weights) test/test 0.00,
train/test 2.55, model/test 708.8; digits-classifier FD 0.00, 15.3, 112.2; Inception 2.05 images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

import flowjax
from flowjax.data.tfds_pipeline import load_split_array
from flowjax.evaluation import digits_features, fid
from flowjax.evaluation.frechet import feature_statistics, frechet_distance
from flowjax.models import digits_classifier, inception

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "results", "experiments")


TRAIN_COMMAND = (
    "python -m flowjax.main --config=configs/digits_rf.py --workdir=RUN "
    "--config.train.num_steps=1000"
)


def _command(args: list[str]) -> str:
    """The command line, with the run directory written as ``RUN`` (no machine paths)."""
    out, skip = [], False
    for a in args:
        if skip:
            out.append("RUN")
            skip = False
        elif a == "--workdir":
            out.append(a)
            skip = True
        else:
            out.append("--workdir=RUN" if a.startswith("--workdir=") else a)
    return " ".join(["python experiments/fid_plumbing.py", *out])


def upsample_rgb(x_bhwc: np.ndarray, size: int = 32) -> np.ndarray:
    """``[N, h, w, 1]`` in ``[-1, 1]`` -> ``[N, size, size, 3]`` (bilinear, channel repeat)."""
    n, _, _, c = x_bhwc.shape
    up = jax.image.resize(np.asarray(x_bhwc, np.float32), (n, size, size, c), method="bilinear")
    up = np.clip(np.asarray(up), -1.0, 1.0)
    return np.repeat(up, 3, axis=-1) if c == 1 else up


def model_samples(workdir: str, n: int, spec: str) -> tuple[np.ndarray, dict]:
    """``n`` samples of the run in ``workdir`` with the sampler ``spec`` (``"heun:32"``) on the
    run's evaluation noise and labels, and what was used."""
    from flowjax import solvers
    from flowjax.evaluation.evaluator import Evaluator
    from flowjax.solvers.spec import parse_sampler_spec, sampler_label
    from flowjax.time import grids
    from flowjax.training import load_run

    config, exp, params, step = load_run(workdir, num_samples=n)
    # Keep the run directory read-only: the digits classifier comes from the shared cache.
    config.eval.feature_cache_dir = digits_classifier.default_cache_dir()
    evaluator = Evaluator.for_experiment(config, exp, workdir)
    name, nfe, grid_spec = parse_sampler_spec(spec)
    label = sampler_label(name, nfe, grid_spec)
    if label not in evaluator.samplers:
        solver = solvers.make_solver(name)
        grid = grids.grid_from_spec(grid_spec, solver.num_steps_for_nfe(nfe))
        evaluator.add_sampler(label, solver, grid)
    t0 = time.perf_counter()
    x = np.asarray(evaluator.sample(params, [label])[label], np.float32)
    info = {
        "checkpoint_step": step,
        "sampler": label,
        "cfg_scale": float(config.eval.get("cfg_scale", 1.0)),
        "train_steps": int(config.train.num_steps),
        "sample_seconds": time.perf_counter() - t0,
    }
    return np.clip(x, -1.0, 1.0), info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=None, help="a trained sklearn_digits run")
    parser.add_argument("--sampler", default="heun:32", help="solver:nfe[:grid] for --workdir")
    parser.add_argument("--num_images", type=int, default=360, help="N per set (<= 360)")
    parser.add_argument("--batch_size", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0, help="Inception random-weight seed")
    parser.add_argument("--out", default=os.path.join(RESULTS, "fid_plumbing.json"))
    args = parser.parse_args(argv)
    n = int(args.num_images)
    if not 2 <= n <= 360:
        parser.error(f"--num_images={n}: need 2 <= N <= 360 (the size of the test split)")

    sets = {
        "train": load_split_array("sklearn_digits", "train", max_examples=n)[0],
        "test": load_split_array("sklearn_digits", "test", max_examples=n)[0],
    }
    model_info = None
    if args.workdir:
        sets["model"], model_info = model_samples(args.workdir, n, args.sampler)
        print(f"model samples: {model_info}", flush=True)

    classifier = digits_features.DigitsFeatureExtractor.load_or_train()
    weights = inception.random_weights(args.seed)
    net = inception.InceptionV3.from_weights(weights)

    warm = upsample_rgb(sets["test"][: args.batch_size])
    t0 = time.perf_counter()
    jax.block_until_ready(net(warm)[0])
    compile_seconds = time.perf_counter() - t0

    pool, cls_stats, seconds = {}, {}, 0.0
    for name, x in sets.items():
        t0 = time.perf_counter()
        pool[name], _ = fid.inception_features(net, upsample_rgb(x), batch_size=args.batch_size)
        dt = time.perf_counter() - t0
        seconds += dt
        print(f"{name}: {x.shape[0]} images, {dt:.0f} s ({x.shape[0] / dt:.2f} images/s)")
        cls_stats[name] = classifier.statistics(x)
    images_per_second = sum(v.shape[0] for v in pool.values()) / seconds

    def fid_pair(a: str, b: str) -> float:
        return fid.fid_from_features(pool[a], *feature_statistics(pool[b]))

    def fd_pair(a: str, b: str) -> float:
        return float(frechet_distance(*cls_stats[a], *cls_stats[b]))

    pairs = [("test", "test"), ("train", "test")] + ([("model", "test")] if model_info else [])
    rows = {
        f"{a}_vs_{b}": {"inception_fid_random_weights": fid_pair(a, b), "digits_fd": fd_pair(a, b)}
        for a, b in pairs
    }
    result = {
        "command": _command(sys.argv[1:] if argv is None else list(argv)),
        "training_command": TRAIN_COMMAND if model_info else None,
        "flowjax_version": flowjax.__version__,
        "caveat": (
            "random Inception weights (seeded He-normal): the FID numbers only exercise the "
            "plumbing and are not comparable with published FIDs"
        ),
        "data": "tfds sklearn_digits, 8x8x1 upsampled to 32x32 (bilinear) and repeated to RGB",
        "num_images_per_set": n,
        "inception": {
            "width": "full (2048-d pool3)",
            "resize_to": inception.INPUT_SIZE,
            "weights_seed": args.seed,
            "batch_size": args.batch_size,
            "compile_seconds": compile_seconds,
            "images_per_second_cpu": images_per_second,
            "device": jax.devices()[0].device_kind,
            "cpu_count": os.cpu_count(),
        },
        "model": model_info,
        "distances": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)

    print(f"\nN = {n} per set; Inception weights random (plumbing only)")
    print(f"{'pair':<16} {'Inception FID':>14} {'digits FD':>10}")
    for key, row in rows.items():
        print(f"{key:<16} {row['inception_fid_random_weights']:>14.3f} {row['digits_fd']:>10.3f}")
    print(f"Inception: {images_per_second:.2f} images/s (compile {compile_seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
