"""configs/cifar10_dit.py and the ImageNet latent config run a few steps on the CPU, on
tfds.testing.mock_data images, with a tiny random VAE and a tiny random Inception network
(shrunk DiT; the configs' data, eval and FID wiring as shipped)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import tensorflow_datasets as tfds

from flowjax.config_files import load_config
from flowjax.models import inception as I
from flowjax.models import vae as V
from flowjax.training import train_and_evaluate
from flowjax.workflows import latents as L

TINY_VAE = dataclasses.replace(V.SD_VAE_CONFIG, block_out_channels=(8, 16, 16), norm_num_groups=4)


def _shrink(c):
    c.model.update(dict(variant=None, patch_size=4, hidden_size=32, depth=1, num_heads=2))
    c.train.update(dict(batch_size=4, num_steps=2, log_every=1, eval_every=2, checkpoint_every=2))
    c.eval.update(dict(samplers=("euler:1",), num_samples=4, num_kernel_samples=4))
    c.mesh = dict(data=1, fsdp=1, tensor=1)
    return c


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    inception = I.save_weights(d / "inception.npz", I.random_weights(0, 16, 63))
    vae = V.save_weights(d / "vae.npz", V.random_weights(TINY_VAE, 0), TINY_VAE)
    return str(vae), str(inception)


@pytest.mark.slow
def test_cifar10_dit_runs_with_inception_fid(tmp_path, weight_files):
    c = _shrink(load_config("cifar10_dit"))
    c.data.data_dir = str(tmp_path / "tfds")
    c.eval.inception_weights = weight_files[1]
    with tfds.testing.mock_data(num_examples=16):
        summary = train_and_evaluate(c, str(tmp_path / "run"))
    assert summary is not None
    metrics = json.loads(open(tmp_path / "run" / "config.json").read())["dataset"]
    assert metrics["element_shape"] == [32, 32, 3]
    text = open(_find(tmp_path / "run", "fid_euler_nfe1")).read()
    assert "fid_euler_nfe1" in text


@pytest.mark.slow
def test_imagenet_latent_config_runs_with_vae_decoding_and_fid(tmp_path, weight_files):
    vae_path, inception_path = weight_files
    vae = V.AutoencoderKL.from_file(vae_path)
    with tfds.testing.mock_data(num_examples=8):
        L.encode_image_set(
            vae,
            "cifar10",
            str(tmp_path / "lat"),
            data_dir=str(tmp_path),
            resolution=32,
            shard_size=4,
            batch_size=4,
            progress=False,
        )
    c = _shrink(load_config("imagenet256_dit", "latents"))
    c.model.update(dict(patch_size=2, dtype="float32"))
    c.data.path = str(tmp_path / "lat")
    c.eval.update(dict(vae_weights=vae_path, inception_weights=inception_path, cfg_scale=1.0))
    train_and_evaluate(c, str(tmp_path / "run"))
    assert "fid_euler_nfe1" in open(_find(tmp_path / "run", "fid_euler_nfe1")).read()


def test_imagenet_latent_config_without_data_prints_the_command(tmp_path):
    from flowjax.data.sources import make_source

    c = load_config("imagenet256_dit")
    with pytest.raises(ValueError, match="flowjax latents"):
        make_source(c.data, batch_size=4, seed=0)
    c.data.path = str(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="flowjax latents --vae="):
        make_source(c.data, batch_size=4, seed=0)


def _find(root, needle):
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if f.endswith((".json", ".jsonl", ".csv", ".txt")):
                try:
                    if needle in open(p).read():
                        return p
                except (UnicodeDecodeError, OSError):
                    pass
    raise AssertionError(
        f"no file under {root} mentions {needle}; files: "
        f"{[f for _, _, fs in os.walk(root) for f in fs]}"
    )
