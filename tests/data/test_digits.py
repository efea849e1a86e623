"""The ``sklearn_digits`` tfds builder: prepared offline, read back exactly, no TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow_datasets as tfds

from flowjax.data import SklearnDigits, load_digits_numpy, prepare_digits


def test_registered_under_its_tfds_name():
    assert tfds.builder_cls("sklearn_digits") is SklearnDigits
    assert str(SklearnDigits.VERSION) == "1.0.0"


def test_data_source_equals_the_numpy_arrays(digits_dir):
    for split, size in [("train", 1437), ("test", 360)]:
        source = tfds.data_source(
            "sklearn_digits", split=split, data_dir=digits_dir, download=False
        )
        images, labels = load_digits_numpy(split)
        assert len(source) == size == len(labels)
        examples = [source[i] for i in range(len(source))]
        got_images = np.stack([e["image"] for e in examples])
        got_labels = np.array([e["label"] for e in examples])
        assert got_images.dtype == np.uint8 and got_images.shape == (size, 8, 8, 1)
        # Stored in key order (shuffling at write time is disabled): record i is example i.
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
    info = source.dataset_info
    assert info.features["label"].num_classes == 10
    assert info.splits["train"].num_examples == 1437
    assert info.file_format.file_suffix == "array_record"


def test_prepare_is_idempotent(digits_dir):
    version_dir = os.path.join(digits_dir, "sklearn_digits", "1.0.0")
    before = {f: os.stat(os.path.join(version_dir, f)).st_mtime_ns for f in os.listdir(version_dir)}
    assert prepare_digits(digits_dir) == digits_dir
    after = {f: os.stat(os.path.join(version_dir, f)).st_mtime_ns for f in os.listdir(version_dir)}
    assert before == after


def test_prepare_and_read_without_tensorflow(tmp_path):
    # A fresh interpreter, so no other test's imports can hide or cause a TensorFlow import.
    script = textwrap.dedent(
        f"""
        import sys
        import tensorflow_datasets as tfds
        import flowjax.data as fd

        data_dir = fd.prepare_digits({str(tmp_path)!r})
        source = tfds.data_source("sklearn_digits", split="test", data_dir=data_dir)
        assert len(source) == 360 and source[0]["image"].shape == (8, 8, 1)
        ds = fd.ImageDataset("sklearn_digits", data_dir=data_dir, global_batch_size=8,
                             shard_index=0, shard_count=1, num_threads=2)
        batch = next(ds.iterator(0))
        assert batch["x1"].shape == (8, 8, 8, 1)
        x1, labels = fd.load_split_array("sklearn_digits", "test", data_dir, max_examples=5)
        assert x1.shape == (5, 8, 8, 1)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")
