"""Latent sets of mixed sizes (:mod:`flowjax.data.mixed_latents`): the writer and reader round
trip, the source's batches unpack to the stored latents with their own labels, one bucket per
batch, exact resume, and one-line errors for bad sets and settings."""

from __future__ import annotations

import os

import numpy as np
import pytest

from flowjax.config_files import data_section
from flowjax.data import make_source
from flowjax.data import mixed_latents as L
from flowjax.data.mixed_sizes import batch_grids
from flowjax.data.tokens import unpack_tokens

P, C = 2, 4
TRAIN_SIZES = [(4, 6), (6, 4), (4, 4), (6, 6), (4, 8), (2, 8)]  # 6, 6, 4, 9, 8, 4 tokens


def _latents(sizes, n, seed):
    rng = np.random.default_rng(seed)
    shapes = [sizes[i % len(sizes)] for i in range(n)]
    return [rng.normal(size=(h, w, C)).astype(np.float32) for h, w in shapes]


@pytest.fixture(scope="module")
def latent_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mixed") / "set")
    train = _latents(TRAIN_SIZES, 30, 0)
    labels = np.arange(30) % 7
    L.write_mixed_latents(root, train, labels, num_classes=10)
    held = _latents([(4, 4), (4, 6), (4, 4)], 9, 1)
    L.write_mixed_latents(os.path.join(root, "heldout"), held, np.arange(9) % 10, num_classes=10)
    return root, train, labels, held


def test_the_set_reads_back_what_was_written(latent_set):
    root, train, labels, _ = latent_set
    data = L.read_mixed_latents(root)
    assert len(data) == 30 and data.channels == C and data.num_classes == 10
    for i, z in enumerate(train):
        np.testing.assert_array_equal(data.latent(i), z)
    np.testing.assert_array_equal(data.labels, labels)
    assert sorted(os.listdir(os.path.dirname(root))) == ["set"]  # no partial directory left


def test_batches_are_stored_latents_of_one_bucket_with_their_own_labels(latent_set):
    root, train, labels, _ = latent_set
    source = L.MixedLatentSource(root, batch_size=5, seed=2, max_tokens=9)
    assert source.element_shape == (4, 4, C) and source.num_classes == 10  # most common held
    lengths = {b.length: b.sizes for b in source.buckets}
    resumed = L.MixedLatentSource(root, batch_size=5, seed=2, max_tokens=9).iterator(3)
    for step in range(6):
        batch = source.get_batch(step)
        if step >= 3:
            again = next(resumed)
            for key in batch:
                np.testing.assert_array_equal(again[key], batch[key])
        grids = batch_grids(batch["mask"], batch["positions"])
        sizes = {tuple(int(v) for v in g * P) for g in grids}
        assert sizes <= set(lengths[batch["x1"].shape[1]])
        for z, label in zip(unpack_tokens(batch["x1"], grids, P), batch["label"]):
            matches = [i for i, t in enumerate(train) if t.shape == z.shape and (t == z).all()]
            assert len(matches) == 1 and labels[matches[0]] == label


def test_eval_array_is_the_held_out_latents_of_the_eval_size(latent_set):
    root, _, _, held = latent_set
    source = make_source(
        data_section("mixed_latents", "mine", path=root, eval_size=(4, 6), patch_size=P),
        batch_size=2,
        seed=0,
    )
    assert source.name == "mine" and source.element_shape == (4, 6, C)
    x, y = source.eval_array(100)
    np.testing.assert_array_equal(x, np.stack([z for z in held if z.shape[:2] == (4, 6)]))
    np.testing.assert_array_equal(y, [1, 4, 7])
    with pytest.raises(ValueError, match=r"held-out latents have the sizes \[\(4, 4\), \(4, 6\)\]"):
        L.MixedLatentSource(root, batch_size=2, seed=0, eval_size=(6, 6))


def test_bad_sets_and_settings_are_one_line_errors(latent_set, tmp_path):
    root = latent_set[0]
    with pytest.raises(ValueError, match="6x6, 9 tokens at patch 2, more than data.max_tokens=8"):
        L.MixedLatentSource(root, batch_size=2, seed=0, max_tokens=8)  # 6x6 has 9
    with pytest.raises(ValueError, match="not a multiple of the patch 4"):
        L.MixedLatentSource(root, batch_size=2, seed=0, patch_size=4)
    with pytest.raises(FileNotFoundError, match="write_mixed_latents"):
        L.MixedLatentSource(str(tmp_path / "nothing"), batch_size=2, seed=0)
    with pytest.raises(ValueError, match="needs data.path=DIR"):
        make_source(data_section("mixed_latents", "x"), batch_size=2, seed=0)
    bad = [
        (dict(latents=[]), "latents is empty"),
        (dict(latents=[np.zeros((2, 2, 4)), np.zeros((2, 2, 3))]), "latent 1 has shape"),
        (dict(latents=[np.full((2, 2, 4), np.nan)]), "NaN or infinite"),
        (dict(latents=[np.zeros((2, 2, 4))], labels=[0, 1]), "one non-negative int per latent"),
        (dict(latents=[np.zeros((2, 2, 4))], labels=[3], num_classes=2), "labels reach 3"),
    ]
    for i, (kw, match) in enumerate(bad):
        target = str(tmp_path / f"bad{i}")
        with pytest.raises(ValueError, match=match) as err:
            L.write_mixed_latents(target, **kw)
        assert "\n" not in str(err.value) and not os.path.exists(target)
    with pytest.raises(FileExistsError, match="new directory"):
        L.write_mixed_latents(root, [np.zeros((2, 2, 4))])
