"""Own data from a file (``data.kind="array"``): loading, validation, the held-out split and the
content fingerprint."""

import ml_collections
import numpy as np
import pytest

from flowjax.data import ArrayFileSource, describe_source, make_source


def _points(n=50, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


def _cfg(**data):
    return ml_collections.ConfigDict({"kind": "array", "path": None, "eval_path": None, **data})


def test_npz_with_labels_is_split_into_disjoint_train_and_held_out_rows(tmp_path):
    x = _points(50)
    label = np.arange(50) % 3
    np.savez(tmp_path / "blobs.npz", x=x, label=label)
    src = make_source(
        _cfg(path=str(tmp_path / "blobs.npz"), eval_fraction=0.2), batch_size=8, seed=1
    )
    assert isinstance(src, ArrayFileSource)
    assert (src.name, src.kind, src.element_shape, src.num_classes) == ("blobs", "points", (2,), 3)
    assert (src.num_examples, src.num_eval_examples) == (40, 10)
    held, held_labels = src.eval_array(1000)
    assert held.shape == (10, 2) and held_labels.shape == (10,)
    train_rows = {tuple(r) for r in src._train.arrays["x1"]}
    assert not train_rows & {tuple(r) for r in held}  # never trained on the held-out rows
    assert train_rows | {tuple(r) for r in held} == {tuple(r) for r in x}
    batch = next(src.iterator(0))
    assert batch["x1"].shape == (8, 2) and batch["label"].shape == (8,)
    # Labels travel with their rows.
    lookup = {tuple(r): int(c) for r, c in zip(x, label)}
    assert [lookup[tuple(r)] for r in batch["x1"]] == list(batch["label"])
    # The split does not depend on the run's seed; batches do.
    other = make_source(
        _cfg(path=str(tmp_path / "blobs.npz"), eval_fraction=0.2), batch_size=8, seed=2
    )
    np.testing.assert_array_equal(other.eval_array(10)[0], held)
    assert other.fingerprint() == src.fingerprint()


def test_npy_and_a_separate_eval_file(tmp_path):
    np.save(tmp_path / "train.npy", _points(30))
    np.save(tmp_path / "test.npy", _points(7, seed=1))
    src = make_source(
        _cfg(path=str(tmp_path / "train.npy"), eval_path=str(tmp_path / "test.npy")),
        batch_size=4,
        seed=0,
    )
    assert (src.name, src.num_examples, src.num_eval_examples, src.num_classes) == (
        "train",
        30,
        7,
        None,
    )
    np.testing.assert_array_equal(src.eval_array(100)[0], _points(7, seed=1))
    record = describe_source(src, from_config=True)
    assert record["name"] == "train" and record["element_shape"] == [2]
    assert record["path"].endswith("train.npy") and record["eval_path"].endswith("test.npy")
    assert record["built_from"] == "config" and len(record["fingerprint"]) == 64


def test_fingerprint_follows_the_content(tmp_path):
    x = _points(20)
    np.save(tmp_path / "a.npy", x)
    first = ArrayFileSource(str(tmp_path / "a.npy"), batch_size=4, seed=0).fingerprint()
    x[3, 1] += 1e-3
    np.save(tmp_path / "a.npy", x)
    second = ArrayFileSource(str(tmp_path / "a.npy"), batch_size=4, seed=0).fingerprint()
    assert first != second
    np.save(tmp_path / "b.npy", x)  # the name is not part of the content
    assert ArrayFileSource(str(tmp_path / "b.npy"), batch_size=4, seed=0).fingerprint() == second


def test_bad_files_give_clear_errors(tmp_path):
    def build(path, **kw):
        return make_source(_cfg(path=str(path), **kw), batch_size=4, seed=0)

    with pytest.raises(ValueError, match="needs data.path"):
        make_source(_cfg(), batch_size=4, seed=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build(tmp_path / "missing.npz")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"must be a \.npz"):
        build(tmp_path / "data.csv")
    np.savez(tmp_path / "nox.npz", points=_points())
    with pytest.raises(ValueError, match="under 'x'"):
        build(tmp_path / "nox.npz")
    np.save(tmp_path / "flat.npy", np.zeros(10, np.float32))
    with pytest.raises(ValueError, match=r"\[n, d\] points or \[n, H, W, C\] images"):
        build(tmp_path / "flat.npy")
    bad = _points()
    bad[4, 0] = np.nan
    bad[5, 1] = np.inf
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="2 NaN or infinite"):
        build(tmp_path / "nan.npy")
    np.savez(tmp_path / "lab.npz", x=_points(10), label=np.zeros(9, np.int64))
    with pytest.raises(ValueError, match="one per row of x"):
        build(tmp_path / "lab.npz")
    np.savez(tmp_path / "flab.npz", x=_points(10), label=np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="non-negative integers"):
        build(tmp_path / "flab.npz")
    np.save(tmp_path / "ok.npy", _points(10))
    for fraction in (0.0, 1.0, 0.95):
        with pytest.raises(ValueError, match="eval_fraction"):
            build(tmp_path / "ok.npy", eval_fraction=fraction)
    np.save(tmp_path / "wide.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="does not match"):
        build(tmp_path / "ok.npy", eval_path=str(tmp_path / "wide.npy"))


def test_a_file_that_is_not_a_numpy_file_is_named_from_its_bytes(tmp_path):
    """A foreign file named .npz / .npy: one line saying what it is (judged from its first
    bytes), never numpy's hint to load it unsafely with allow_pickle."""

    def error(name, payload):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError) as info:
            make_source(_cfg(path=str(tmp_path / name)), batch_size=4, seed=0)
        message = str(info.value)
        assert "\n" not in message and "pickle" not in message, message
        return message

    assert "is not a NumPy .npz file: it is a text file (it starts with 'x,y" in error(
        "table.npz", b"x,y\n1,2\n"
    )
    assert "is not a NumPy .npz file: it is a PNG image" in error(
        "image.npz", b"\x89PNG\r\n\x1a\n" + bytes(64)
    )
    assert "is not a NumPy .npz file: it is an empty file" in error("empty.npz", b"")
    np.savez(tmp_path / "archive.npz", x=_points())
    archive = (tmp_path / "archive.npz").read_bytes()
    assert "is not a NumPy .npy file: it is a NumPy .npz archive" in error("x.npy", archive)
    assert "cannot be read" in error("cut.npz", archive[:40])  # a zip cut short
