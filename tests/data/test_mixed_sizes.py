"""Mixed-size training data (:mod:`flowjax.data.mixed_sizes`): batches that are pure functions
of (seed, step) (exact resume, processes agreeing), tokens that unpack to the declared sizes
with the label of their own digit, buckets that keep the padding under 10% where padding to
``max_tokens`` wastes half the slots, the photographs' area rule, and one-line errors for a
bad configuration before any data is read."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flowjax.config_files import data_section
from flowjax.data import make_source
from flowjax.data import mixed_sizes as M
from flowjax.data.digits_arrays import load_digits_numpy
from flowjax.data.tokens import area_size, pack_images, unpack_tokens

P = 2
SMALL = ((12, 16), (16, 12), (16, 16), (12, 20), (8, 32))  # 48, 48, 64, 60, 64 tokens


@pytest.fixture(scope="module")
def digits():
    return M.DigitsMixedSource(batch_size=6, seed=3, sizes=SMALL, max_tokens=64)


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---------------------------------------------------------------------------------------------
# Determinism, resume, processes
# ---------------------------------------------------------------------------------------------


def test_batches_are_a_function_of_seed_and_step_so_a_resumed_run_sees_the_same(digits):
    uninterrupted = digits.iterator(0)
    first = [next(uninterrupted) for _ in range(6)]
    resumed = M.DigitsMixedSource(batch_size=6, seed=3, sizes=SMALL, max_tokens=64).iterator(4)
    for step in (4, 5):
        _same(next(resumed), first[step])
    other_seed = M.DigitsMixedSource(batch_size=6, seed=4, sizes=SMALL, max_tokens=64)
    assert any(not np.array_equal(other_seed.get_batch(k)["x1"], first[k]["x1"]) for k in range(6))


def test_each_process_holds_its_rows_of_the_one_global_batch(digits):
    kw = dict(batch_size=6, seed=3, sizes=SMALL, max_tokens=64)
    parts = [M.DigitsMixedSource(shard_index=i, shard_count=3, **kw) for i in range(3)]
    for step in range(4):
        whole = digits.get_batch(step)
        pieces = [p.get_batch(step) for p in parts]
        assert {p["x1"].shape[1] for p in pieces} == {whole["x1"].shape[1]}  # one padded length
        _same({k: np.concatenate([p[k] for p in pieces]) for k in whole}, whole)


# ---------------------------------------------------------------------------------------------
# What a batch holds
# ---------------------------------------------------------------------------------------------


def _bicubic(image_u8, size):  # Pillow directly: the reference the source must match
    pil = Image.fromarray(image_u8[..., 0]).resize(size[::-1], resample=Image.BICUBIC)
    return np.asarray(pil, np.float32)[..., None] / 127.5 - 1.0


def test_tokens_unpack_to_declared_sizes_of_one_bucket_with_their_own_digits_label(digits):
    """Every row unpacks (grid read from mask and positions) to one of the declared sizes, all
    of the batch's bucket and padded to its length; the image is a training digit upsampled
    bicubically, and the row's label is that digit's label."""
    train_x, train_y = load_digits_numpy("train")
    by_size = {s: np.stack([_bicubic(x, s) for x in train_x]) for s in SMALL}
    buckets = {b.sizes: b.length for b in digits.buckets}
    seen = set()
    for step in range(8):
        batch = digits.get_batch(step)
        grids = M.batch_grids(batch["mask"], batch["positions"])
        sizes = [tuple(int(v) for v in g * P) for g in grids]
        bucket = [b for b in buckets if set(sizes) <= set(b)]
        assert len(bucket) == 1 and batch["x1"].shape[1] == buckets[bucket[0]]
        images = unpack_tokens(batch["x1"], grids, P)
        for image, size, label in zip(images, sizes, batch["label"]):
            assert size in SMALL and image.shape == (*size, 1)
            distance = np.abs(by_size[size] - image).max(axis=(1, 2, 3))
            match = int(np.argmin(distance))
            assert distance[match] < 1e-6 and label == train_y[match]
            seen.add(size)
        np.testing.assert_array_equal(batch["x1"][~batch["mask"]], 0.0)
    assert len(seen) >= 3


def test_eval_images_are_the_held_out_digits_at_the_eval_size_and_score_at_8x8(monkeypatch):
    source = M.DigitsMixedSource(batch_size=2, seed=0, eval_size=(16, 24))
    test_x, test_y = load_digits_numpy("test")
    x, y = source.eval_array(5)
    assert source.element_shape == (16, 24, 1) and x.shape == (5, 16, 24, 1)
    np.testing.assert_array_equal(y, test_y[:5])
    np.testing.assert_allclose(x, np.stack([_bicubic(im, (16, 24)) for im in test_x[:5]]))
    seen = []

    class Fake:
        name = "fd"

        def __call__(self, samples):
            seen.append(samples)
            return 0.5

    monkeypatch.setattr(M, "feature_metric_for", lambda name, cache: Fake())
    metric = source.feature_metric("cache")
    assert metric.name == "fd" and metric(x) == 0.5
    # resized back to the classifier's 8x8: each nearest to the digit it was upsampled from
    assert seen[0].shape == (5, 8, 8, 1)
    reference = test_x / 127.5 - 1.0
    distance = np.abs(seen[0][:, None] - reference[None]).mean(axis=(2, 3, 4))
    np.testing.assert_array_equal(distance.argmin(axis=1), np.arange(5))


def test_photos_are_area_rule_crops_from_the_training_part_unlabelled():
    source = M.PhotosMixedSource(batch_size=4, seed=1)
    expected = {area_size(h, w, 32, P) for h, w in M.PHOTO_CROP_SIZES}
    assert set(source.sizes) == expected and max(h * w for h, w in expected) <= 32 * 32
    for step in range(3):
        batch = source.get_batch(step)
        assert "label" not in batch and batch["x1"].shape[-1] == P * P * 3
        grids = M.batch_grids(batch["mask"], batch["positions"])
        for image in unpack_tokens(batch["x1"], grids, P):
            assert image.shape[:2] in expected
            assert image.min() >= -1.0 and image.max() <= 1.0
    x, labels = source.eval_array(3)
    assert x.shape == (3, 32, 32, 3) and labels is None


def test_a_config_section_builds_the_sources(tmp_path):
    section = data_section(
        "digits_mixed", "digits_mixed", sizes=SMALL, patch_size=P, max_tokens=64, eval_size=(12, 12)
    )
    source = make_source(section, batch_size=4, seed=0)
    assert isinstance(source, M.DigitsMixedSource) and source.sizes == SMALL
    assert source.element_shape == (12, 12, 1) and source.num_classes == 10
    photos = make_source(
        data_section("photos_mixed", "photos_mixed", side=16, crop_sizes=((64, 64),)),
        batch_size=4,
        seed=0,
    )
    assert photos.sizes == ((16, 16),) and photos.fingerprint() != source.fingerprint()


# ---------------------------------------------------------------------------------------------
# Buckets and padding
# ---------------------------------------------------------------------------------------------


def test_padding_fraction_counts_the_wasted_slots():
    images = [np.zeros((h, w, 1), np.float32) for h, w in ((4, 4), (2, 6), (2, 2))]  # 4, 3, 1
    batch = pack_images(images, P, max_tokens=5, pad_to_max=True)
    assert M.padding_fraction(batch.mask) == pytest.approx(1 - 8 / 15)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        M.padding_fraction(batch.mask[0])


@pytest.mark.parametrize("max_padding", [0.0, 0.1, 0.3, 1.0])
def test_buckets_partition_the_sizes_and_bound_each_sizes_padding(max_padding):
    sizes = M.DIGITS_MIXED_SIZES
    buckets = M.size_buckets(sizes, P, max_padding)
    flat = [s for b in buckets for s in b.sizes]
    assert sorted(flat) == sorted(sizes)
    for b in buckets:
        tokens = [(h // P) * (w // P) for h, w in b.sizes]
        assert b.length == max(tokens)
        assert all(1 - t / b.length <= max_padding for t in tokens)
    lengths = [b.length for b in buckets]
    assert lengths == sorted(lengths, reverse=True)
    if max_padding == 0.0:  # one bucket per token count
        assert len(buckets) == len({(h // P) * (w // P) for h, w in sizes})
    if max_padding == 1.0:
        assert len(buckets) == 1


def test_default_buckets_keep_padding_under_10_percent_and_no_bucketing_does_not():
    """Averaged over batches, the digits_mixed defaults waste under 10% of the token slots
    (about their expected 2.0%), while one bucket padded to max_tokens (256) wastes about
    half; both agree with :func:`expected_padding`, the mean over equally likely sizes."""
    means = {}
    for bucket_padding in (0.1, 1.0):
        source = M.DigitsMixedSource(batch_size=4, seed=0, bucket_padding=bucket_padding)
        batches = [source.get_batch(k) for k in range(300)]
        wasted = np.asarray([M.padding_fraction(b["mask"]) for b in batches])
        expected = M.expected_padding(source.buckets, P)
        assert abs(wasted.mean() - expected) < 4 * wasted.std() / np.sqrt(len(wasted)) + 1e-9
        lengths = {b["x1"].shape[1] for b in batches}
        assert len(lengths) == len(source.buckets)  # one static shape per bucket
        means[bucket_padding] = wasted.mean()
    assert means[0.1] < 0.1 < 0.4 < means[1.0]


# ---------------------------------------------------------------------------------------------
# Refusals, before any data is read
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(sizes=()), "data.sizes is empty"),
        (dict(sizes=((16, 16), (15, 16))), "15x16, not a multiple of the patch 2"),
        (dict(sizes=((16, 16), (34, 34))), "289 tokens at patch 2, more than data.max_tokens=256"),
        (dict(sizes=((16,),)), r"\(height, width\) int pair"),
        (dict(eval_size=(16, 17)), "data.eval_size holds 16x17"),
        (dict(bucket_padding=1.5), r"bucket_padding=1.5 must be in \[0, 1\]"),
        (dict(patch_size=0), "data.patch_size=0"),
    ],
)
def test_a_bad_digits_config_is_one_line_before_any_data_is_read(monkeypatch, kw, match):
    def no_reading(split):
        raise AssertionError("data read before the configuration was checked")

    monkeypatch.setattr(M, "load_digits_numpy", no_reading)
    with pytest.raises(ValueError, match=match) as err:
        M.DigitsMixedSource(batch_size=4, seed=0, **kw)
    assert "\n" not in str(err.value)


def test_a_bad_photos_config_is_one_line(monkeypatch):
    real = M._photographs
    monkeypatch.setattr(M, "_photographs", lambda: pytest.fail("photographs read first"))
    with pytest.raises(ValueError, match="more than data.max_tokens=100"):
        M.PhotosMixedSource(batch_size=4, seed=0, max_tokens=100)  # 32x32 -> 256 tokens
    with pytest.raises(ValueError, match="data.crop_sizes is empty"):
        M.PhotosMixedSource(batch_size=4, seed=0, crop_sizes=[])
    monkeypatch.setattr(M, "_photographs", real)
    with pytest.raises(ValueError, match="larger than the training part") as err:
        M.PhotosMixedSource(batch_size=4, seed=0, crop_sizes=((400, 500),))
    assert "\n" not in str(err.value)


def test_photos_train_on_the_left_three_quarters_and_hold_out_the_right_quarter(monkeypatch):
    """A photograph black on its left three quarters and white on the right quarter: every
    training crop is black, every held-out image white."""
    photo = np.zeros((64, 128, 3), np.uint8)
    photo[:, 96:] = 255
    monkeypatch.setattr(M, "_photographs", lambda: ([photo, photo.copy()], ("a", "b")))
    crops = ((32, 32), (16, 48), (64, 64), (64, 96))
    source = M.PhotosMixedSource(batch_size=4, seed=0, crop_sizes=crops, side=16)
    for step in range(10):
        batch = source.get_batch(step)
        np.testing.assert_array_equal(batch["x1"][batch["mask"]], -1.0)
    np.testing.assert_array_equal(source.eval_array(4)[0], 1.0)
