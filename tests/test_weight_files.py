"""flowjax.weight_files: the .npz tree layout, safetensors parsing (bf16 included), atomic
writes, clear errors on foreign files, and the converter command-line contract."""

import json
import os
import struct

import numpy as np
import pytest

from flowjax import weight_files as W


def test_flatten_and_unflatten_are_inverse():
    tree = {"enc": {"conv": {"kernel": np.ones((3, 3)), "bias": np.zeros(3)}}, "fc": {"b": 1}}
    flat = W.flatten(tree)
    assert sorted(flat) == ["enc/conv/bias", "enc/conv/kernel", "fc/b"]
    assert W.unflatten(flat) == tree


def _safetensors(path, tensors):
    """A .safetensors file written by hand: 8-byte header length, JSON header, raw data."""
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def test_state_dicts_are_read_without_torch(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    # bfloat16 is the top half of float32: these values are exact in bf16.
    bf16 = (w.view(np.uint32) >> 16).astype("<u2").tobytes()
    path = tmp_path / "model.safetensors"
    _safetensors(
        path,
        {"a.weight": ("F32", [2, 3], w.astype("<f4").tobytes()), "b": ("BF16", [2, 3], bf16)},
    )
    got = W.read_state_dict(str(path))
    assert sorted(got) == ["a.weight", "b"]
    np.testing.assert_array_equal(got["a.weight"], w)
    np.testing.assert_array_equal(got["b"], w)
    assert got["b"].dtype == np.float32
    np.savez(tmp_path / "model.npz", **{"a.weight": w})
    np.testing.assert_array_equal(W.read_state_dict(str(tmp_path / "model.npz"))["a.weight"], w)


def test_npz_files_are_written_atomically_and_read_back(tmp_path):
    arrays = {"enc/conv/kernel": np.ones((3, 3), np.float32), "lin0": np.arange(4.0)}
    path = W.save_npz(tmp_path / "sub" / "weights", arrays, "test")
    assert path == str(tmp_path / "sub" / "weights.npz")
    assert os.listdir(tmp_path / "sub") == ["weights.npz"]  # no temporary file is left
    got = W.read_npz(path, "test")
    assert sorted(got) == sorted(arrays)
    np.testing.assert_array_equal(got["lin0"], arrays["lin0"])


def test_foreign_files_are_one_clear_error(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="is not a readable VAE .npz weight file.*; convert"):
        W.read_npz(garbage, "VAE", "; convert it first.")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single .npy array, not a LPIPS .npz weight archive"):
        W.read_npz(tmp_path / "one.npy", "LPIPS")


def test_a_missing_weight_file_is_one_clear_error(tmp_path):
    """Not a raw FileNotFoundError from the foreign-file sniffing: the reader's own message."""
    missing = str(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match=r"absent\.npz is not a readable LPIPS \.npz weight file"):
        W.read_npz(missing, "LPIPS")


TOY = W.WeightSpec(
    what="Toy",
    prefix="toy",
    convert="make-toy --out={out}",
    example_out="toy.npz",
    make_file="run `{command}`",
    wrong_keys="not Toy weights: {keys}; run `{command}`",
    noise=(("/kernel", W.he_normal), ("", lambda rng, shape: np.ones(shape))),
)
TOY_SHAPES = {"a/kernel": (200, 50), "a/bias": (50,), "b/scale": (4,)}


def test_weight_spec_random_weights_follow_the_first_matching_rule():
    w = TOY.random(TOY_SHAPES, seed=0)
    assert list(w) == list(TOY_SHAPES) and all(a.dtype == np.float32 for a in w.values())
    assert {k: a.shape for k, a in w.items()} == TOY_SHAPES
    # He-normal: N(0, 2 / fan_in), fan_in = 200, so std 0.1 (10^4 draws: 2% is > 5 sigma).
    assert abs(np.std(w["a/kernel"]) - 0.1) < 0.002 and abs(np.mean(w["a/kernel"])) < 0.005
    np.testing.assert_array_equal(w["a/bias"], 1.0)  # the catch-all rule, not He-normal
    for k, a in TOY.random(TOY_SHAPES, seed=0).items():  # a pure function of the seed
        np.testing.assert_array_equal(a, w[k])
    assert not np.array_equal(TOY.random(TOY_SHAPES, seed=1)["a/kernel"], w["a/kernel"])
    # Initial values are kept where no rule matches, and the rule's draw is added to them.
    bare = W.WeightSpec("Bare", "bare", "x", "x", "x", "x", noise=(("/bias", TOY.noise[1][1]),))
    got = bare.random({"k/scale": np.full(3, 2.0), "k/bias": np.full(2, 0.5)}, seed=0)
    np.testing.assert_array_equal(got["k/scale"], 2.0)
    np.testing.assert_array_equal(got["k/bias"], 1.5)


def test_weight_spec_checks_keys_shapes_and_values():
    w = TOY.random(TOY_SHAPES, seed=0)
    clean = TOY.check({k: a.astype(np.float64) for k, a in w.items()}, TOY_SHAPES)
    assert all(clean[k].dtype == np.float32 and np.array_equal(clean[k], w[k]) for k in w)
    bad = {k: v for k, v in w.items() if k != "a/bias"} | {"c": np.zeros(1)}
    with pytest.raises(ValueError, match=r"^not Toy weights: 1 missing keys \(a/bias\) and 1 "):
        TOY.check(bad, TOY_SHAPES)
    with pytest.raises(ValueError, match=r"unexpected keys \(c\); run `make-toy --out=toy\.npz`"):
        TOY.check(bad, TOY_SHAPES)
    with pytest.raises(
        ValueError, match=r"wrong shapes for 4: b/scale: \(5,\) \(expected \(4,\)\)"
    ):
        TOY.check(w | {"b/scale": np.zeros(5)}, TOY_SHAPES, " for 4")
    with pytest.raises(ValueError, match="Toy weight b/scale contains NaN or inf"):
        TOY.check(w | {"b/scale": np.array([0, 1, np.inf, 0])}, TOY_SHAPES)
    with pytest.raises(ValueError, match="Toy weight b/scale must be a real array, got dtype <U1"):
        TOY.check(w | {"b/scale": np.array(list("abcd"))}, TOY_SHAPES)
    with pytest.raises(ValueError, match="Toy weights must be a mapping of key -> array"):
        TOY.check(list(w.values()), TOY_SHAPES)


def test_weight_spec_files(tmp_path):
    w = TOY.random(TOY_SHAPES, seed=0)
    missing = tmp_path / "none.npz"
    with pytest.raises(
        FileNotFoundError, match=f"never downloads weights; run `make-toy --out={missing}`"
    ):
        TOY.read(missing)
    path = TOY.save(tmp_path / "w", w, {"config/n": np.asarray(3)})
    assert path == str(tmp_path / "w.npz") and os.listdir(tmp_path) == ["w.npz"]
    got = TOY.read(path)
    assert sorted(got) == sorted([*w, "config/n"]) and int(got["config/n"]) == 3
    assert all(np.array_equal(got[k], w[k]) for k in w)
