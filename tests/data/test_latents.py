"""Latent sets: ``python -m flowjax.latents`` on a mock tfds image set with a tiny random VAE;
exact resume (byte-identical files), the multi-host split, the training source, bad input."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from flowjax import latents as L
from flowjax.data import latents as LD
from flowjax.models import vae as V

TINY = dataclasses.replace(V.SD_VAE_CONFIG, block_out_channels=(8, 16, 16), norm_num_groups=4)
N_IMAGES = 10  # flipped copies: 20 rows; shard_size 6: 4 shards (the last of 2 rows)


@pytest.fixture(scope="module")
def vae():
    return V.AutoencoderKL.from_weights(V.random_weights(TINY, 0), TINY)


def _files(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


def _encoder(vae, tmp_path, **kw):
    src = tfds.data_source("cifar10", split="train", data_dir=str(tmp_path / "tfds"))
    return L.LatentEncoder(
        vae, src, resolution=32, flip=True, mode="posterior", batch_size=6, seed=0, **kw
    )


def _write(enc, out, shard_fn=None, **kw):
    return LD.write_latents(
        out,
        shard_fn or enc,
        num_rows=enc.num_rows,
        shard_size=6,
        latent_shape=enc.latent_shape,
        num_classes=enc.num_classes,
        progress=False,
        **kw,
    )


def test_resume_is_byte_identical_and_multihost_covers_every_row_once(vae, tmp_path):
    with tfds.testing.mock_data(num_examples=N_IMAGES):
        stats = L.encode_image_set(
            vae,
            "cifar10",
            str(tmp_path / "full"),
            split="train",
            data_dir=str(tmp_path / "tfds"),
            resolution=32,
            flip=True,
            shard_size=6,
            batch_size=6,
            progress=False,
        )
        assert stats["rows"] == 2 * N_IMAGES
        enc = _encoder(vae, tmp_path)
        assert enc.num_rows == 20 and enc.latent_shape == (8, 8, 4) and enc.num_classes == 10

        calls = []

        def dies_at_shard_2(index, start, stop):
            if index == 2:
                raise KeyboardInterrupt  # the job is killed while encoding shard 2
            calls.append(index)
            return enc(index, start, stop)

        with pytest.raises(KeyboardInterrupt):
            _write(enc, tmp_path / "resumed", dies_at_shard_2, metadata=_meta())
        assert not LD.is_complete(tmp_path / "resumed")

        def counted(index, start, stop):
            calls.append(index)
            return enc(index, start, stop)

        _write(enc, tmp_path / "resumed", counted, metadata=_meta())
        assert calls == [0, 1, 2, 3]  # each shard encoded once in total
        # Three processes, each writing its shards s % 3 == i; process 0 finalises last.
        owners = {}
        for i in (1, 2, 0):

            def owned(index, start, stop, i=i):
                owners.setdefault(index, []).append(i)
                return enc(index, start, stop)

            _write(
                enc, tmp_path / "hosts", owned, metadata=_meta(), process_index=i, process_count=3
            )
        assert owners == {0: [0], 1: [1], 2: [2], 3: [0]}
    full, resumed, hosts = (_files(tmp_path / d) for d in ("full", "resumed", "hosts"))
    shards = [f for f in full if ".array_record-" in f]
    assert len(shards) == 4
    for f in shards:
        assert resumed[f] == full[f] and hosts[f] == full[f]
    assert set(resumed) == set(full) and resumed["dataset_info.json"] == hosts["dataset_info.json"]
    # Every (image, flip) is a row exactly once: rows 2i and 2i+1 are image i and its mirror.
    _, source = LD.open_latents(tmp_path / "hosts")
    with tfds.testing.mock_data(num_examples=N_IMAGES):
        x = np.stack([enc.pixels(r)[0] for r in range(20)])
    np.testing.assert_array_equal(x[1::2], x[0::2, :, ::-1])
    mean, std = vae.encode_moments(x)
    got = np.stack([source[r]["mean"] for r in range(20)])
    np.testing.assert_allclose(got, vae.scale(mean), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.stack([source[r]["std"] for r in range(20)]),
        TINY.scaling_factor * np.asarray(std),
        rtol=1e-5,
    )


def _meta():
    return {"test": True}


def test_latent_source_draws_the_posterior_per_position_and_resumes(vae, tmp_path):
    with tfds.testing.mock_data(num_examples=N_IMAGES):
        enc = _encoder(vae, tmp_path)
        _write(enc, tmp_path / "lat", metadata=_meta())
    src = LD.LatentSource(tmp_path / "lat", batch_size=4, seed=1)
    assert src.element_shape == (8, 8, 4) and src.num_classes == 10 and src.num_examples == 20
    batches = [src.get_batch(k) for k in range(6)]  # 24 rows: crosses the epoch boundary
    it = src.iterator(start_step=3)
    again = [next(it) for _ in range(3)]
    for a, b in zip(batches[3:], again):
        np.testing.assert_array_equal(a["x1"], b["x1"])
    # x1 = mean + std * eps: the standardised residual is N(0, 1), fresh at every position.
    _, raw = LD.open_latents(tmp_path / "lat")
    idx = np.concatenate([src._order.example_indices(k) for k in range(6)])
    x1 = np.concatenate([b["x1"] for b in batches])
    eps = (x1 - np.stack([raw[i]["mean"] for i in idx])) / np.stack([raw[i]["std"] for i in idx])
    assert abs(eps.mean()) < 0.05 and abs(eps.std() - 1) < 0.05
    repeats = [p for p in range(4, 24) if idx[p] in idx[:4]]
    assert repeats and not np.allclose(eps[repeats[0]], eps[list(idx[:4]).index(idx[repeats[0]])])


def test_bad_input_is_refused_before_any_work(vae, tmp_path):
    out = tmp_path / "never"
    with tfds.testing.mock_data(num_examples=4):
        with pytest.raises(ValueError, match=r"encodes images \[H, W, 3\]"):
            L.encode_image_set(vae, "mnist", str(out), data_dir=str(tmp_path), resolution=32)
        with pytest.raises(ValueError, match="cannot be downsampled by this VAE's factor 4"):
            L.encode_image_set(vae, "cifar10", str(out), data_dir=str(tmp_path), resolution=30)
    assert not out.exists()
    assert L.main([f"--vae={tmp_path / 'missing.npz'}", "--tfds=cifar10", f"--out={out}"]) == 2
    with pytest.raises(FileNotFoundError, match="python -m flowjax.latents"):
        LD.LatentSource(out, batch_size=2, seed=0)


def test_center_crop_follows_adm():
    img = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    out = L.center_crop(img, 16)  # 40x60: box-halve to 20x30, bicubic to 16x24, crop 4 columns
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(L.center_crop(img[:16, :16], 16), img[:16, :16])
