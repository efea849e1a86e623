"""Reflow pair data sets: exact round trip, exact resumption, multi-process writing, errors, and
the training source's order contract (resume, host shards, epochs)."""

from __future__ import annotations

import itertools
import os
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from flowjax.data import (
    DatasetNotFoundError,
    PairSource,
    finalize_pairs,
    is_complete,
    load_pairs,
    pair_features,
    read_manifest,
    write_pairs,
)

SHAPE = (2, 3)
NUM_PAIRS, SHARD_SIZE = 10, 4  # three shards: 4, 4, 2 pairs
SHARD_NAMES = [f"reflow_pairs-train.array_record-0000{s}-of-00003" for s in range(3)]
META = {"teacher": "ckpt/step_1000", "solver": "rk4", "nfe": 40, "seed": 0}


def _make_shard(num_classes=None, calls=None, fail_at=None):
    """A deterministic ``shard_fn``: shard ``s``'s pairs depend on ``s`` alone (as from
    ``fold_in(key, s)``). Returned shards are appended to ``calls``; ``fail_at`` raises."""

    def shard_fn(index, start, stop):
        if index == fail_at:
            raise RuntimeError(f"preempted at shard {index}")
        rng = np.random.default_rng([7, index])
        x0 = rng.standard_normal((stop - start, *SHAPE))  # float64: stored as float32
        out = {"x0": x0, "x1": np.tanh(x0) + index}
        if num_classes is not None:
            out["label"] = np.arange(start, stop) % num_classes
        if calls is not None:
            calls.append(index)
        return out

    return shard_fn


def _reference(num_classes=None) -> dict[str, np.ndarray]:
    fn = _make_shard(num_classes)
    shards = [fn(s, s * SHARD_SIZE, min((s + 1) * SHARD_SIZE, NUM_PAIRS)) for s in range(3)]
    return {k: np.concatenate([sh[k] for sh in shards]) for k in shards[0]}


def _write(out_dir, shard_fn, num_classes=None, **kwargs):
    kwargs = {
        "num_pairs": NUM_PAIRS,
        "shard_size": SHARD_SIZE,
        "element_shape": SHAPE,
        "num_classes": num_classes,
        "metadata": META,
        "progress": False,
        **kwargs,
    }
    return write_pairs(out_dir, shard_fn, **kwargs)


def _files(out_dir) -> dict[str, bytes]:
    return {f: open(os.path.join(out_dir, f), "rb").read() for f in sorted(os.listdir(out_dir))}


@pytest.fixture(scope="module")
def reference_dirs(tmp_path_factory) -> dict:
    """Uninterrupted single-process data sets, unconditional (None) and with 3 classes."""
    dirs = {}
    for num_classes in (None, 3):
        out = tmp_path_factory.mktemp(f"pairs_{num_classes}")
        calls = []
        assert _write(out, _make_shard(num_classes, calls), num_classes) == str(out)
        assert calls == [0, 1, 2]
        dirs[num_classes] = str(out)
    return dirs


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [None, 3])
def test_round_trip_is_a_real_tfds_data_set(reference_dirs, num_classes):
    out = reference_dirs[num_classes]
    want = _reference(num_classes)
    assert is_complete(out)
    assert sorted(f for f in os.listdir(out) if "array_record" in f) == SHARD_NAMES
    got = load_pairs(out)
    assert set(got) == set(want)
    for key in ("x0", "x1"):
        assert got[key].dtype == np.float32 and got[key].shape == (NUM_PAIRS, *SHAPE)
        np.testing.assert_array_equal(got[key], want[key].astype(np.float32))  # in order
    if num_classes is not None:
        assert got["label"].dtype == np.int32
        np.testing.assert_array_equal(got["label"], want["label"])

    builder = tfds.builder_from_directory(out)
    split = builder.info.splits["train"]
    assert split.num_examples == NUM_PAIRS and list(split.shard_lengths) == [4, 4, 2]
    features = builder.info.features
    assert set(features) == set(want)
    assert features["x0"].shape == SHAPE and features["x1"].np_dtype == np.float32
    if num_classes is not None:
        assert features["label"].num_classes == num_classes
    source = builder.as_data_source("train")
    assert len(source) == NUM_PAIRS
    np.testing.assert_array_equal(source[6]["x1"], want["x1"][6].astype(np.float32))

    manifest = read_manifest(out)
    assert manifest["metadata"] == META and manifest["num_shards"] == 3
    assert manifest["element_shape"] == list(SHAPE) and manifest["num_classes"] == num_classes


def test_pair_features_serialize_without_tensorflow():
    features = pair_features((4,), num_classes=5)
    example = {"x0": np.arange(4, dtype=np.float32), "x1": -np.ones(4, np.float32), "label": 3}
    back = features.deserialize_example_np(features.serialize_example(example))
    np.testing.assert_array_equal(back["x0"], example["x0"])
    np.testing.assert_array_equal(back["x1"], example["x1"])
    assert back["label"] == 3
    assert set(pair_features((4,), None)) == {"x0", "x1"}


def test_resume_is_exact(reference_dirs, tmp_path):
    calls = []
    with pytest.raises(RuntimeError, match="preempted at shard 2"):
        _write(tmp_path, _make_shard(3, calls, fail_at=2), 3)
    assert calls == [0, 1]
    assert sorted(f for f in os.listdir(tmp_path) if "array_record" in f) == SHARD_NAMES[:2]
    assert not is_complete(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="not finished"):
        load_pairs(tmp_path)
    # A process killed while writing shard 2 leaves its temporary file behind; a resumed run
    # removes it before generating anything (here it is interrupted again).
    stale = tmp_path / (SHARD_NAMES[2] + ".tmp")
    stale.write_bytes(b"half a shard")
    with pytest.raises(RuntimeError, match="preempted at shard 2"):
        _write(tmp_path, _make_shard(3, calls, fail_at=2), 3)
    assert not stale.exists()

    _write(tmp_path, _make_shard(3, calls), 3)
    assert calls == [0, 1, 2]  # each shard generated exactly once in total
    assert not stale.exists()
    assert is_complete(tmp_path)
    # Identical to the uninterrupted data set: every file, byte for byte.
    assert _files(tmp_path) == _files(reference_dirs[3])

    # Resuming a finished data set generates nothing and changes nothing.
    _write(tmp_path, _make_shard(3, calls), 3)
    assert calls == [0, 1, 2]
    assert _files(tmp_path) == _files(reference_dirs[3])


@pytest.mark.parametrize("damage", ["truncated", "wrong_count"])
def test_a_damaged_shard_is_regenerated(reference_dirs, tmp_path, damage):
    ref = _files(reference_dirs[None])
    for name, data in ref.items():
        (tmp_path / name).write_bytes(data)
    last = tmp_path / SHARD_NAMES[2]
    if damage == "truncated":  # e.g. a copy cut short
        last.write_bytes(ref[SHARD_NAMES[2]][: len(ref[SHARD_NAMES[2]]) // 2])
    else:  # a readable file with 4 records where 2 belong
        last.write_bytes(ref[SHARD_NAMES[0]])
    assert is_complete(tmp_path)  # cheap check: files and metadata exist
    with pytest.raises(ValueError, match=r"shards \[2\]"):
        finalize_pairs(tmp_path)  # the thorough check counts records
    calls = []
    with pytest.warns(UserWarning, match="regenerating shard 2"):
        _write(tmp_path, _make_shard(None, calls))
    assert calls == [2]
    assert _files(tmp_path) == ref


def test_two_processes_write_disjoint_shards(reference_dirs, tmp_path):
    calls = [[], []]
    _write(tmp_path, _make_shard(3, calls[0]), 3, process_index=0, process_count=2)
    assert calls[0] == [0, 2]
    assert not is_complete(tmp_path)  # process 1's shard is missing: no tfds metadata yet
    _write(tmp_path, _make_shard(3, calls[1]), 3, process_index=1, process_count=2)
    assert calls[1] == [1]
    assert not is_complete(tmp_path)  # only process 0 writes the metadata
    finalize_pairs(tmp_path)
    assert is_complete(tmp_path)
    assert _files(tmp_path) == _files(reference_dirs[3])


def test_barrier_and_changing_the_process_count(reference_dirs, tmp_path):
    barriers = []
    calls = []
    # Process 1 of 2 first, with a (here trivial) barrier: it never writes the metadata.
    layout = {"process_index": 1, "process_count": 2, "barrier_fn": barriers.append}
    _write(tmp_path, _make_shard(3, calls), 3, **layout)
    assert barriers == ["flowjax_write_pairs_shards", "flowjax_write_pairs_metadata"]
    # A barrier that returns with shards still missing is an error on process 0.
    with pytest.raises(ValueError, match="still missing"):
        layout = {"process_index": 0, "process_count": 3, "barrier_fn": barriers.append}
        _write(tmp_path, _make_shard(3, calls), 3, **layout)
    assert calls == [1, 0]  # process 0 of 3 owns shard 0 only
    # One process finishes what the others left (any process count resumes any other).
    _write(tmp_path, _make_shard(3, calls), 3)
    assert calls == [1, 0, 2]
    assert _files(tmp_path) == _files(reference_dirs[3])


def test_other_settings_are_refused(reference_dirs, tmp_path):
    out = reference_dirs[None]
    before = _files(out)
    changes = [
        {"num_pairs": 12},
        {"shard_size": 5},
        {"element_shape": (3, 2)},
        {"num_classes": 3},
        {"metadata": {**META, "nfe": 20}},
    ]
    for change in changes:
        fn = _make_shard(change.get("num_classes"))
        with pytest.raises(ValueError, match="new directory, or delete the old one") as info:
            _write(out, fn, **change)
        assert next(iter(change)) in str(info.value)
    assert _files(out) == before

    (tmp_path / "dataset_info.json").write_text("{}")  # some other tfds data set
    with pytest.raises(ValueError, match="not written by write_pairs"):
        _write(tmp_path, _make_shard())


def _shard(**arrays):
    return lambda index, start, stop: arrays


GOOD_X = np.zeros((4, *SHAPE), np.float32)


@pytest.mark.parametrize(
    ("num_classes", "shard_fn", "match"),
    [
        (None, lambda *_: GOOD_X, "return a dict"),
        (None, _shard(x0=GOOD_X), r"expected exactly \['x0', 'x1'\]"),
        (None, _shard(x0=GOOD_X, x1=GOOD_X, label=np.zeros(4, int)), "so no label"),
        (3, _shard(x0=GOOD_X, x1=GOOD_X), "so a label per pair"),
        (None, _shard(x0=GOOD_X[:3], x1=GOOD_X), r"x0 has shape \(3, 2, 3\), expected"),
        (None, _shard(x0=GOOD_X, x1=GOOD_X.reshape(4, 3, 2)), r"x1 has shape \(4, 3, 2\)"),
        (None, _shard(x0=GOOD_X, x1=GOOD_X.astype(np.complex64)), "complex64"),
        (None, _shard(x0=GOOD_X, x1=GOOD_X + np.nan), "NaN or inf"),
        (3, _shard(x0=GOOD_X, x1=GOOD_X, label=np.array([0, 1, 2, 3])), r"in \[0, 3\)"),
        (3, _shard(x0=GOOD_X, x1=GOOD_X, label=np.zeros(4)), "integer class ids"),
        (3, _shard(x0=GOOD_X, x1=GOOD_X, label=np.zeros((4, 1), int)), "label has shape"),
    ],
)
def test_bad_arrays_from_shard_fn(tmp_path, num_classes, shard_fn, match):
    with pytest.raises(ValueError, match=match) as info:
        _write(tmp_path, shard_fn, num_classes)
    assert "shard_fn(index=0" in str(info.value)
    assert os.listdir(tmp_path) == ["pairs_manifest.json"]  # nothing half-written


def test_bad_arguments(tmp_path):
    fn = _make_shard()
    for kwargs, match in [
        ({"num_pairs": 0}, "num_pairs=0"),
        ({"shard_size": 0}, "shard_size=0"),
        ({"element_shape": (2, -1)}, "element_shape"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"process_index": 2, "process_count": 2}, "process_index=2"),
        ({"metadata": {"key": object()}}, "JSON-serialisable"),
    ]:
        with pytest.raises(ValueError, match=match):
            _write(tmp_path / "bad", fn, **kwargs)


# ---------------------------------------------------------------------------------------------
# Reading for training
# ---------------------------------------------------------------------------------------------


def _base(element_shape=SHAPE, num_classes=3):
    eval_x = np.full((5, *SHAPE), 0.5, np.float32)
    return types.SimpleNamespace(
        kind="points",
        name="fake_base",
        element_shape=element_shape,
        num_classes=num_classes,
        eval_array=lambda n: (eval_x[:n], None),
    )


def _source(out, **kwargs) -> PairSource:
    kwargs = {"base": _base(), "batch_size": 4, "seed": 0, "num_threads": 2, **kwargs}
    return PairSource(out, **kwargs)


def _assert_batches_equal(a, b):
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_pair_source_contract(reference_dirs):
    source = _source(reference_dirs[3])
    assert source.kind == "points" and source.name == "fake_base"
    assert source.element_shape == SHAPE and source.num_classes == 3
    assert source.num_examples == NUM_PAIRS and source.manifest["metadata"] == META
    x, labels = source.eval_array(2)  # the base's held-out real data
    assert x.shape == (2, *SHAPE) and labels is None
    batch = source.get_batch(0)
    assert set(batch) == {"x0", "x1", "label"}
    assert batch["x0"].dtype == batch["x1"].dtype == np.float32
    assert batch["x0"].shape == (4, *SHAPE) and batch["label"].dtype == np.int32
    unconditional = _source(reference_dirs[None], base=_base(num_classes=None))
    assert set(unconditional.get_batch(0)) == {"x0", "x1"}


def test_pair_source_resumes_exactly(reference_dirs):
    source = _source(reference_dirs[3])
    full = list(itertools.islice(source.iterator(0), 8))  # 32 rows: three epochs of 10
    tail = list(source.iterator(start_step=5, num_steps=3))
    assert len(tail) == 3
    for a, b in zip(full[5:], tail):
        _assert_batches_equal(a, b)
    _assert_batches_equal(source.get_batch(6), full[6])
    _assert_batches_equal(_source(reference_dirs[3]).get_batch(6), full[6])  # a fresh reader
    other_seed = _source(reference_dirs[3], seed=1)
    assert not np.array_equal(source.example_indices(0), other_seed.example_indices(0))


def test_pair_source_shards_concatenate_to_the_global_batch(reference_dirs):
    whole = _source(reference_dirs[3])
    shards = [_source(reference_dirs[3], shard_index=i, shard_count=2) for i in range(2)]
    assert [s.local_batch_size for s in shards] == [2, 2]
    for step in (0, 2, 7):  # batch 2 (rows 8..11) straddles two epochs
        parts = [s.get_batch(step) for s in shards]
        ref = whole.get_batch(step)
        for key in ref:
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), ref[key])
    first = next(shards[1].iterator(start_step=2))
    np.testing.assert_array_equal(first["x1"], whole.get_batch(2)["x1"][2:])


def test_each_epoch_is_a_permutation_of_the_pairs(reference_dirs):
    pairs = load_pairs(reference_dirs[3])
    source = _source(reference_dirs[3])
    batches = list(source.iterator(0, num_steps=5))  # 20 rows: exactly two epochs
    rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    orders = []
    for epoch in range(2):
        sl = slice(epoch * NUM_PAIRS, (epoch + 1) * NUM_PAIRS)
        # Identify each row's pair by its x0 (random, so unique); x1 and label must match it.
        stored = pairs["x0"].reshape(NUM_PAIRS, 1, -1)
        seen = rows["x0"][sl].reshape(1, NUM_PAIRS, -1)
        index = [int(i) for i in np.argmax((stored == seen).all(-1), axis=0)]
        np.testing.assert_array_equal(np.sort(index), np.arange(NUM_PAIRS))
        np.testing.assert_array_equal(rows["x1"][sl], pairs["x1"][index])
        np.testing.assert_array_equal(rows["label"][sl], pairs["label"][index])
        orders.append(index)
    assert orders[0] != orders[1]  # a fresh permutation each epoch
    np.testing.assert_array_equal(
        np.concatenate([source.example_indices(k) for k in range(5)]), np.concatenate(orders)
    )


def test_pair_source_errors(reference_dirs, tmp_path):
    out = reference_dirs[3]
    with pytest.raises(ValueError, match=r"element shape \(2, 3\).*has \(6,\)"):
        _source(out, base=_base(element_shape=(6,)))
    with pytest.raises(ValueError, match="num_classes=3 but the base.*num_classes=None"):
        _source(out, base=_base(num_classes=None))
    with pytest.raises(ValueError, match="num_classes=None but the base.*num_classes=3"):
        _source(reference_dirs[None])
    with pytest.raises(ValueError, match="not divisible"):
        _source(out, batch_size=5, shard_count=2)
    with pytest.raises(DatasetNotFoundError, match="no pairs_manifest.json"):
        _source(tmp_path)


def test_in_memory_and_streaming_readers_give_the_same_batches(reference_dirs):
    streaming = _source(reference_dirs[3], in_memory=False)
    memory = _source(reference_dirs[3], in_memory=True)
    assert (streaming.in_memory, memory.in_memory) == (False, True)
    a = list(streaming.iterator(3, num_steps=6))
    b = list(memory.iterator(3, num_steps=6))
    assert len(a) == len(b) == 6
    for x, y in zip(a, b):
        _assert_batches_equal(x, y)
    _assert_batches_equal(streaming.get_batch(9), memory.get_batch(9))
