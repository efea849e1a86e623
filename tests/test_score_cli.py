"""``python -m flowjax.score``: FID and IS of a samples ``.npz`` (float or uint8 images, or
latents decoded by a VAE) or of a trained run against a statistics file, with a tiny random
Inception network; every bad input is one line before the network runs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from flowjax.evaluation import fid as F
from flowjax.evaluation.evaluator import to_pixels
from flowjax.models import inception as I
from flowjax.models import vae as V
from flowjax.workflows import score

TINY_VAE = dataclasses.replace(V.SD_VAE_CONFIG, block_out_channels=(8, 16, 16), norm_num_groups=4)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n, seed, size=16):
    """Smooth random colour images in [-1, 1] (not on uint8 levels)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, (n, 4, 4, 3))
    return np.tanh(1.5 * np.repeat(np.repeat(coarse, size // 4, 1), size // 4, 2)).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inception weights, the reference statistics of 20 images, and 20 sample images (one
    batch shape: one compiled network)."""
    d = tmp_path_factory.mktemp("score")
    weights = I.save_weights(d / "inception.npz", I.random_weights(0, 16, 63))
    net = I.InceptionV3.from_file(weights)
    reference = _images(20, 0)
    stats = F.save_stats(
        d / "ref.npz", *F.feature_statistics(F.inception_features(net, reference)[0])
    )
    samples = _images(20, 1)
    np.savez(d / "samples.npz", x=samples, label=np.arange(20))
    return {"dir": d, "weights": str(weights), "stats": str(stats), "net": net, "x": samples}


def test_samples_file_scores_as_the_library_and_uint8_batches_agree(files):
    d, net, x = files["dir"], files["net"], files["x"]
    report = score.score_file(
        str(d / "samples.npz"), files["weights"], files["stats"], splits=4, progress=False
    )
    pool3, logits = F.inception_features(net, x)
    assert report["fid"] == pytest.approx(
        F.fid_from_features(pool3, *F.load_stats(files["stats"])), rel=1e-9
    )
    assert (report["is"], report["is_std"]) == pytest.approx(F.inception_score(logits, 4), 1e-9)
    assert report["num_samples"] == 20 and report["key"] == "x" and report["fid"] > 0
    assert json.loads(open(d / "samples_scores.json").read())["fid"] == report["fid"]
    # An ADM-style uint8 batch of the same images gives the same numbers.
    np.savez(d / "adm.npz", arr_0=F.to_uint8(x))
    adm = score.score_file(str(d / "adm.npz"), files["weights"], files["stats"], splits=4)
    assert adm["key"] == "arr_0"
    assert (adm["fid"], adm["is"]) == pytest.approx((report["fid"], report["is"]), rel=1e-9)


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", "does not exist; write one with `flowjax sample"),
        ("no_key", r"has arrays \['y'\], not 'x or arr_0'; name the samples' array with --key"),
        ("npy", "holds one .npy array"),
        ("corrupt", "is not a readable .npz of samples"),
        ("points", r"FID needs images \[N, H, W, 1 or 3\]"),
        ("latents", "4-channel samples are latents, not images; decode them with --vae_weights"),
        ("scale255", r"look like \[0, 255\] pixels"),
        ("few", "holds 3 samples, fewer than --splits=10"),
        ("int16", "floats in .-1, 1. or uint8"),
    ],
)
def test_a_wrong_samples_file_is_one_clear_error(files, tmp_path, case, match):
    path = tmp_path / "s.npz"
    x = files["x"]
    arrays = {
        "no_key": {"y": x},
        "points": {"x": np.zeros((20, 2), np.float32)},
        "latents": {"x": np.zeros((20, 4, 4, 4), np.float32)},
        "scale255": {"x": (x + 1) * 127.5},
        "few": {"x": x[:3]},
        "int16": {"x": F.to_uint8(x).astype(np.int16)},
    }
    if case == "npy":
        path = tmp_path / "s.npy"
        np.save(path, x)
    elif case == "corrupt":
        path.write_bytes(b"PK\x03\x04 not a zip archive")
    elif case in arrays:
        np.savez(path, **arrays[case])
    with pytest.raises(ValueError, match=match):
        score.score_file(str(path), "never-read.npz", files["stats"])


def test_wrong_statistics_and_weights_files_are_named(files, tmp_path):
    np.savez(tmp_path / "nostats.npz", mean=np.zeros(128))
    with pytest.raises(ValueError, match="FID reference statistics need 'mu'"):
        score.score_file(
            str(files["dir"] / "samples.npz"), files["weights"], str(tmp_path / "nostats.npz")
        )
    F.save_stats(tmp_path / "dim.npz", np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="3-d statistics but the Inception network gives 128-d"):
        score.score_file(
            str(files["dir"] / "samples.npz"), files["weights"], str(tmp_path / "dim.npz")
        )
    with pytest.raises(FileNotFoundError, match="flowjax never downloads weights"):
        score.score_file(
            str(files["dir"] / "samples.npz"), str(tmp_path / "no.npz"), files["stats"]
        )
    with pytest.raises(ValueError, match="needs --fid_stats"):
        score.score_file(str(files["dir"] / "samples.npz"), files["weights"], None)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "flowjax.score", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_command_line_error_is_one_line(files, tmp_path):
    bad = _cli(
        f"--samples={tmp_path / 'none.npz'}",
        f"--inception_weights={files['weights']}",
        f"--fid_stats={files['stats']}",
    )
    assert bad.returncode == 2 and bad.stderr.strip().startswith("ERROR: samples file")
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    both = _cli(f"--samples={tmp_path / 'x.npz'}", f"--workdir={tmp_path}", "--inception_weights=w")
    assert both.returncode == 2 and "give one of --samples=S.npz or --workdir=RUN" in both.stderr


@pytest.mark.slow
def test_command_line_prints_the_scores(files, tmp_path):
    out = _cli(
        f"--samples={files['dir'] / 'samples.npz'}",
        f"--inception_weights={files['weights']}",
        f"--fid_stats={files['stats']}",
        "--splits=4",
        f"--out={tmp_path / 'r.json'}",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(open(tmp_path / "r.json").read())
    assert f"N=20 FID={report['fid']:.4f} IS={report['is']:.4f}" in out.stdout


def test_latent_samples_are_decoded_by_the_vae_first(files, tmp_path):
    # Random weights drawn from the shapes (flax's init of the whole VAE compiles for a minute).
    rng = np.random.default_rng(0)
    weights = {
        k: (1.0 * k.endswith("/scale") + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        if k.endswith(("/scale", "/bias"))
        else (rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)
        for k, shape in V.weight_shapes(TINY_VAE).items()
    }
    vae = V.AutoencoderKL.from_weights(weights, TINY_VAE)
    vae_path = V.save_weights(tmp_path / "vae.npz", weights, TINY_VAE)
    latents = np.random.default_rng(2).standard_normal((20, 4, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "latents.npz", x=latents)
    np.savez(tmp_path / "pixels.npz", x=to_pixels(latents, vae))
    kw = dict(splits=4, progress=False)
    got = score.score_file(
        str(tmp_path / "latents.npz"), files["weights"], files["stats"], vae_weights=vae_path, **kw
    )
    want = score.score_file(str(tmp_path / "pixels.npz"), files["weights"], files["stats"], **kw)
    assert (got["fid"], got["is"]) == pytest.approx((want["fid"], want["is"]), rel=1e-9)
    np.savez(tmp_path / "wrong.npz", x=latents[..., :3])
    with pytest.raises(ValueError, match=r"this VAE decodes float latents \[N, h, w, 4\]"):
        score.score_file(str(tmp_path / "wrong.npz"), "w.npz", files["stats"], vae_weights=vae_path)


def test_run_errors_come_before_loading(tmp_path):
    with pytest.raises(ValueError, match="eval sampler 'euler' must look like 'solver:nfe'"):
        score.score_run(str(tmp_path), "w.npz", samplers=["euler"])
    with pytest.raises(ValueError, match="has no config.json; train there first"):
        score.score_run(str(tmp_path), "w.npz")


@pytest.mark.slow
def test_a_trained_run_is_sampled_and_scored_with_weights_given_after_training(files, tmp_path):
    from flowjax.training import train_and_evaluate
    from tests.training.conftest import tiny_config

    np.savez(tmp_path / "train.npz", x=_images(64, 5))
    np.savez(tmp_path / "held.npz", x=_images(20, 6))
    config = tiny_config(num_steps=4, checkpoint_every=4)
    config.data.update(kind="array", path=str(tmp_path / "train.npz"))
    config.data.eval_path = str(tmp_path / "held.npz")
    config.eval.num_samples = 20
    workdir = str(tmp_path / "run")
    summary = train_and_evaluate(config, workdir)  # trained without any Inception weights
    assert not any(k.startswith(("fid_", "is_")) for k in summary["final"])

    report = score.score_run(workdir, files["weights"], files["stats"], progress=False)
    assert set(report["metrics"]) == {"fid_euler_nfe2", "is_euler_nfe2"}
    assert report["checkpoint_step"] == 4 and report["is_splits"] == 10
    # The kept samples, scored as a file against the same statistics, give the same numbers.
    again = score.score_file(report["samples"][0], files["weights"], files["stats"])
    assert again["num_samples"] == 20
    assert again["fid"] == pytest.approx(report["metrics"]["fid_euler_nfe2"], rel=1e-9)
    assert again["is"] == pytest.approx(report["metrics"]["is_euler_nfe2"], rel=1e-9)
    # Without --fid_stats the reference is the run's held-out data, as in training.
    held = F.save_stats(
        tmp_path / "held_stats.npz",
        *F.feature_statistics(F.inception_features(files["net"], _images(20, 6))[0]),
    )
    own = score.score_run(workdir, files["weights"], out=str(tmp_path / "own.json"))
    versus_held = score.score_file(report["samples"][0], files["weights"], held)
    assert own["metrics"]["fid_euler_nfe2"] == pytest.approx(versus_held["fid"], rel=1e-6)
