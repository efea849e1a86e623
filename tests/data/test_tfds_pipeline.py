"""The tfds + grain image pipeline: values, exact resumption, host sharding, epochs, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from flowjax.data import (
    DatasetNotFoundError,
    ImageDataset,
    load_digits_numpy,
    load_split_array,
)

N_TRAIN = 1437


def _digits(digits_dir, **kwargs) -> ImageDataset:
    kwargs = {
        "global_batch_size": 100,
        "seed": 0,
        "shard_index": 0,
        "shard_count": 1,
        "num_threads": 2,
        **kwargs,
    }
    return ImageDataset("sklearn_digits", data_dir=digits_dir, **kwargs)


@pytest.fixture(scope="module")
def train_x1() -> np.ndarray:
    images, _ = load_digits_numpy("train")
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def test_metadata_and_batch_values(digits_dir, train_x1):
    ds = _digits(digits_dir)
    assert ds.element_shape == (8, 8, 1)
    assert ds.num_classes == 10 and ds.num_examples == N_TRAIN
    batch = ds.get_batch(3)
    assert set(batch) == {"x1", "label"}
    assert batch["x1"].dtype == np.float32 and batch["x1"].shape == (100, 8, 8, 1)
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (100,)
    assert batch["x1"].min() >= -1.0 and batch["x1"].max() <= 1.0
    assert batch["x1"].min() == -1.0 and batch["x1"].max() == 1.0  # digits use the full range
    # The rows are the examples the order says, scaled as x / 127.5 - 1.
    index = ds.example_indices(3)
    np.testing.assert_array_equal(batch["x1"], train_x1[index])
    np.testing.assert_array_equal(batch["label"], load_digits_numpy("train")[1][index])


def test_iterator_resumes_exactly(digits_dir):
    ds = _digits(digits_dir, global_batch_size=64, random_flip=True)
    full = list(itertools.islice(ds.iterator(0), 30))  # crosses the epoch boundary at 1437
    tail = list(ds.iterator(start_step=20, num_steps=10))
    assert len(tail) == 10
    for a, b in zip(full[20:], tail):
        np.testing.assert_array_equal(a["x1"], b["x1"])
        np.testing.assert_array_equal(a["label"], b["label"])
    # Random access agrees with the threaded iterator.
    np.testing.assert_array_equal(ds.get_batch(25)["x1"], full[25]["x1"])


def test_shards_concatenate_to_the_global_batch(digits_dir):
    whole = _digits(digits_dir, global_batch_size=32, random_flip=True)
    shards = [
        _digits(digits_dir, global_batch_size=32, random_flip=True, shard_index=i, shard_count=2)
        for i in range(2)
    ]
    assert [s.local_batch_size for s in shards] == [16, 16]
    for step in (0, 44, 45):  # 45 * 32 > 1437: a batch that straddles two epochs
        parts = [s.get_batch(step) for s in shards]
        ref = whole.get_batch(step)
        for key in ("x1", "label"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), ref[key])
    first = next(shards[1].iterator(start_step=44))
    np.testing.assert_array_equal(first["x1"], whole.get_batch(44)["x1"][16:])


def test_each_epoch_visits_every_example_once(digits_dir, train_x1):
    ds = _digits(digits_dir)
    steps = -(-2 * N_TRAIN // 100)
    stream = np.concatenate([ds.example_indices(k) for k in range(steps)])
    for epoch in range(2):
        order = stream[epoch * N_TRAIN : (epoch + 1) * N_TRAIN]
        np.testing.assert_array_equal(np.sort(order), np.arange(N_TRAIN))
    assert not np.array_equal(stream[:N_TRAIN], stream[N_TRAIN : 2 * N_TRAIN])  # reshuffled
    # The pixels of one epoch's batches are the whole split (no duplicates, no drops).
    epoch_x1 = np.concatenate([ds.get_batch(k)["x1"] for k in range(-(-N_TRAIN // 100))])
    got = np.sort(epoch_x1[:N_TRAIN].reshape(N_TRAIN, -1), axis=0)
    np.testing.assert_array_equal(got, np.sort(train_x1.reshape(N_TRAIN, -1), axis=0))


def test_seeds_change_the_order(digits_dir):
    a = _digits(digits_dir, seed=0).example_indices(0)
    b = _digits(digits_dir, seed=1).example_indices(0)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, _digits(digits_dir, seed=0).example_indices(0))


def test_random_flip_mirrors_about_half_of_the_rows(digits_dir, train_x1):
    ds = _digits(digits_dir, random_flip=True)
    x1 = ds.get_batch(0)["x1"]
    ref = train_x1[ds.example_indices(0)]
    same = np.array([np.array_equal(a, b) for a, b in zip(x1, ref)])
    mirrored = np.array([np.array_equal(a, b[:, ::-1]) for a, b in zip(x1, ref)])
    assert np.all(same | mirrored)
    assert 25 <= np.sum(mirrored & ~same) <= 75


def test_load_split_array(digits_dir):
    x1, labels = load_split_array("sklearn_digits", "test", digits_dir)
    images, want = load_digits_numpy("test")
    assert x1.dtype == np.float32 and x1.shape == (360, 8, 8, 1)
    np.testing.assert_array_equal(x1, images / np.float32(127.5) - np.float32(1.0))
    np.testing.assert_array_equal(labels, want)
    assert labels.dtype == np.int32
    x1, labels = load_split_array(
        "sklearn_digits", "test", digits_dir, max_examples=7, label_key=None
    )
    assert x1.shape == (7, 8, 8, 1) and labels is None


def test_labels_can_be_left_out(digits_dir):
    batch = _digits(digits_dir, label_key=None).get_batch(0)
    assert set(batch) == {"x1"}


def test_bad_batch_and_shard_arguments(digits_dir):
    with pytest.raises(ValueError, match="not divisible"):
        _digits(digits_dir, global_batch_size=30, shard_count=4)
    with pytest.raises(ValueError, match="shard_index"):
        _digits(digits_dir, shard_index=2, shard_count=2)
    with pytest.raises(ValueError, match="start_step"):
        _digits(digits_dir).iterator(start_step=-1)


def test_missing_data_sets_say_how_to_prepare(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        ImageDataset("mnist", data_dir=tmp_path, global_batch_size=8, shard_index=0, shard_count=1)
    message = str(info.value)
    assert "'mnist'" in message and str(tmp_path) in message
    assert f"tfds build mnist --data_dir={tmp_path} --file_format=array_record" in message
    assert isinstance(info.value, FileNotFoundError)

    with pytest.raises(DatasetNotFoundError, match=r"flowjax\.data\.prepare_digits\("):
        load_split_array("sklearn_digits", "test", tmp_path, auto_prepare=False)


def test_digits_are_prepared_automatically(tmp_path):
    ds = ImageDataset(
        "sklearn_digits", data_dir=tmp_path, global_batch_size=4, shard_index=0, shard_count=1
    )
    assert ds.num_examples == N_TRAIN
    assert (tmp_path / "sklearn_digits" / "1.0.0" / "dataset_info.json").exists()


@pytest.mark.parametrize(("name", "shape"), [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_catalogue_data_set_with_mock_data(tmp_path, name, shape):
    """The same pipeline on a tfds catalogue data set, served by ``tfds.testing.mock_data``.

    ``mock_data`` (tfds 4.9.10) patches ``DatasetBuilder.as_data_source``, so
    ``tfds.data_source(name, ...)`` returns a real ``ArrayRecordDataSource`` whose underlying
    reader yields deterministic random examples with the catalogue's real features (uint8
    images, a ``ClassLabel``); no TensorFlow is involved. Its mocked ``__getitems__`` is
    broken (assigned on a MagicMock without ``self``), which is one reason the pipeline reads
    example by example with ``__getitem__``.
    """
    with tfds.testing.mock_data(num_examples=50):
        ds = ImageDataset(
            name,
            data_dir=tmp_path,
            global_batch_size=8,
            seed=3,
            shard_index=0,
            shard_count=1,
            num_threads=2,
            random_flip=True,
        )
        assert ds.element_shape == shape and ds.num_classes == 10 and ds.num_examples == 50
        batches = list(ds.iterator(0, num_steps=8))  # 64 rows: crosses the epoch boundary
        resumed = list(ds.iterator(start_step=5, num_steps=3))
        half = ImageDataset(
            name,
            data_dir=tmp_path,
            global_batch_size=8,
            seed=3,
            shard_index=1,
            shard_count=2,
            num_threads=2,
            random_flip=True,
        ).get_batch(6)
        x1, labels = load_split_array(name, "test", tmp_path, max_examples=10)
    for batch in batches:
        assert batch["x1"].shape == (8, *shape) and batch["x1"].dtype == np.float32
        assert -1.0 <= batch["x1"].min() and batch["x1"].max() <= 1.0
        assert batch["label"].dtype == np.int32
        assert np.all((batch["label"] >= 0) & (batch["label"] < 10))
    for a, b in zip(batches[5:], resumed):
        np.testing.assert_array_equal(a["x1"], b["x1"])
    np.testing.assert_array_equal(half["x1"], batches[6]["x1"][4:])
    assert x1.shape == (10, *shape) and labels.shape == (10,)
