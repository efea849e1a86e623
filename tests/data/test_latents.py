"""Latent sets: ``flowjax latents`` on a mock tfds image set with a tiny random VAE;
exact resume (byte-identical files), the multi-host split, the training source, the held-out
set (the evaluator's reference), the VAE fingerprint on resume, bad input and files."""

from __future__ import annotations

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from flowjax.data import latents as LD
from flowjax.models import vae as V
from flowjax.workflows import latents as L

TINY = dataclasses.replace(V.SD_VAE_CONFIG, block_out_channels=(8, 16, 16), norm_num_groups=4)
N_IMAGES = 10  # flipped copies: 20 rows; shard_size 6: 4 shards (the last of 2 rows)
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")


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
            eval_split=None,
        )
        assert stats["rows"] == 2 * N_IMAGES and stats["eval_rows"] == 0
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
    # Batches of 6 (padded) and of 20 are two compiled programs whose float32 sums may be
    # ordered differently (about 1e-6 relative apart): compared at 1e-4.
    np.testing.assert_allclose(got, vae.scale(mean), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        np.stack([source[r]["std"] for r in range(20)]),
        TINY.scaling_factor * np.asarray(std),
        rtol=1e-4,
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
    with pytest.raises(FileNotFoundError, match="flowjax convert-vae"):
        V.AutoencoderKL.from_file(tmp_path / "missing.npz")  # what `flowjax latents` loads first
    with pytest.raises(FileNotFoundError, match="flowjax latents"):
        LD.LatentSource(out, batch_size=2, seed=0)


def test_center_crop_follows_adm():
    img = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    out = L.center_crop(img, 16)  # 40x60: box-halve to 20x30, bicubic to 16x24, crop 4 columns
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(L.center_crop(img[:16, :16], 16), img[:16, :16])


class _Split:
    """A mock tfds split with slices honoured (``train[:6]``; tfds' mock data ignores them) and
    other images for other split names (the mock gives every split the same ones): pixels
    ``(img + 85) % 256`` outside ``train``."""

    def __init__(self, source, split):
        base, _, rest = split.partition("[")
        rows = range(len(source))
        if rest:
            a, b = rest.rstrip("]").split(":")
            rows = rows[slice(int(a) if a else None, int(b) if b else None)]
        self.source, self.rows, self.shift = source, list(rows), 0 if base == "train" else 85
        self.dataset_info = source.dataset_info

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        ex = dict(self.source[self.rows[i]])
        ex["image"] = ((ex["image"].astype(np.int64) + self.shift) % 256).astype(np.uint8)
        return ex


@pytest.fixture
def split_source(monkeypatch):
    real = L.open_images
    fake = lambda name, split, data_dir=None: _Split(
        real(name, split.split("[")[0], data_dir), split
    )
    monkeypatch.setattr(L, "open_images", fake)


def _encode(vae, tmp_path, out, **kw):
    return L.encode_image_set(
        vae,
        "cifar10",
        str(out),
        data_dir=str(tmp_path / "tfds"),
        resolution=32,
        shard_size=6,
        batch_size=6,
        progress=False,
        **kw,
    )


def test_held_out_set_is_the_eval_split_and_never_training_rows(vae, tmp_path, split_source):
    out = tmp_path / "lat"
    with tfds.testing.mock_data(num_examples=N_IMAGES):
        assert L.held_out_split("cifar10", "train", "auto", str(tmp_path)) == "validation"
        assert L.held_out_split("cifar10", "train", "none") is None
        with pytest.raises(ValueError, match=r"shares rows 8..9 of 'train'"):
            _encode(vae, tmp_path, tmp_path / "never", split="train", eval_split="train[-2:]")
        assert not (tmp_path / "never").exists()
        stats = _encode(vae, tmp_path, out, split="train[:7]", eval_split="train[7:]", flip=True)
        assert (stats["rows"], stats["eval_rows"]) == (14, 3)
        held = L.LatentEncoder(
            vae,
            L.open_images("cifar10", "train[7:]", str(tmp_path / "tfds")),
            resolution=32,
            flip=False,
            mode="posterior",
            batch_size=6,
            seed=0,
        )
        held_pixels = np.stack([held.pixels(r)[0] for r in range(3)])
    src = LD.LatentSource(out, batch_size=4, seed=0)
    manifest, _ = src.held_out()
    assert manifest["metadata"]["split"] == "train[7:]" and manifest["metadata"]["flip"] is False
    x, labels = src.eval_array(100)
    assert x.shape == (3, 8, 8, 4) and labels.shape == (3,)
    # The reference rows are the held-out images' posterior means (model space) ...
    np.testing.assert_allclose(
        x, vae.scale(vae.encode_moments(held_pixels)[0]), rtol=1e-4, atol=1e-5
    )
    # ... and no training row is among them.
    _, train = LD.open_latents(out)
    train_means = np.stack([train[r]["mean"] for r in range(src.num_examples)])
    gaps = np.abs(x[:, None] - train_means[None]).reshape(3, src.num_examples, -1).max(-1)
    assert src.num_examples == 14 and gaps.min() > 1e-3


def test_resume_with_other_weights_under_the_same_name_is_refused(vae, tmp_path, split_source):
    path = str(tmp_path / "vae.npz")
    params = jax.tree.map(np.array, vae.params)
    params["decoder"]["conv_out"]["bias"][0] += 1e-3  # other weights, the same file name
    other = V.AutoencoderKL(params, TINY)
    with tfds.testing.mock_data(num_examples=N_IMAGES):
        kw = dict(split="train[:3]", eval_split="train[3:5]", vae_path=path)
        _encode(vae, tmp_path, tmp_path / "lat", **kw)
        assert _encode(vae, tmp_path, tmp_path / "lat", **kw)["rows"] == 0  # finished: no work
        with pytest.raises(ValueError, match=r"other settings \(metadata: .*vae_sha256"):
            _encode(other, tmp_path, tmp_path / "lat", **kw)


def test_wrong_files_empty_split_and_damaged_shard_get_one_line_errors(
    vae, tmp_path, split_source, capsys
):
    out = tmp_path / "never"
    for name, kind in (
        ("torch_vae.bin", "a diffusers AutoencoderKL (VAE)"),
        ("torch_inception.pth", "an InceptionV3 (the FID network)"),
    ):
        with pytest.raises(ValueError) as info:
            V.AutoencoderKL.from_file(os.path.join(FIXTURES, name))
        err = str(info.value)
        assert f"it is a PyTorch checkpoint (torch.save) of {kind}" in err
        assert "flowjax convert-vae" in err and "\n" not in err
    kw = dict(data_dir=str(tmp_path), resolution=32)
    with tfds.testing.mock_data(num_examples=N_IMAGES):
        with pytest.raises(ValueError, match="'cifar10' has no images in this split"):
            L.encode_image_set(vae, "cifar10", str(out), split="train[:0]", eval_split="none", **kw)
        with pytest.raises(ValueError, match="no images"):
            L.encode_image_set(vae, "cifar10", str(out), eval_split="train[5:5]", **kw)
        assert not out.exists()
        _encode(vae, tmp_path, tmp_path / "lat", split="train[:8]", eval_split="train[8:]")
    shutil.copytree(tmp_path / "lat", tmp_path / "damaged")
    shard = sorted((tmp_path / "damaged").glob("latents-train.array_record-00001-*"))[0]
    # Flipped bytes inside a shard: its record count reads fine, its rows do not.
    raw = bytearray(shard.read_bytes())
    raw[200] ^= 0xFF  # in the first chunk's data (the chunk starts at byte 64)
    shard.write_bytes(bytes(raw))
    src = LD.LatentSource(tmp_path / "damaged", batch_size=2, seed=0)
    with pytest.raises(
        ValueError,
        match=r"row [67] cannot be read, shard latents-train.array_"
        r"record-00001-of-00002 is damaged \(Corrupted .*delete that file",
    ):
        for step in range(4):  # one epoch: every row once
            src.get_batch(step)
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    with pytest.raises(
        ValueError,
        match=r"shard latents-train.array_record-00001-of-00002 is "
        r"damaged \(unreadable\); run the flowjax latents command",
    ):
        LD.LatentSource(tmp_path / "damaged", batch_size=2, seed=0)
    # A latent set without a held-out set gives no reference, and says how to make one.
    shutil.rmtree(tmp_path / "lat" / "heldout")
    src = LD.LatentSource(tmp_path / "lat", batch_size=2, seed=0)
    with pytest.raises(
        ValueError, match=r"no held-out set .*--split=validation .*--eval_split=none"
    ):
        src.eval_array(4)
