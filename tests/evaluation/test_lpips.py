"""LPIPS (VGG16): agreement with an independent torch reference, the distance's properties, the
weight file and its converter, and the errors at the public boundary.

The reference (tests/fixtures/lpips_torch.npz) was made by tests/fixtures/make_lpips_torch.py
with plain torch.nn at tiny widths; torch is not needed to run these tests. Everything else
uses :func:`random_weights` at tiny widths and 16x16 images.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.evaluation import LPIPS, convert_torch_weights
from flowjax.evaluation import lpips as lp
from flowjax.models.resize import resize_bilinear
from flowjax.workflows import convert
from tests.tolerance import assert_equal_up_to_rounding

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "lpips_torch.npz")
CASES = ["rgb_max_up224", "grey_avg_up224", "rgb_avg_noresize", "grey_max_noresize", "rgb_max_down"]
WIDTHS = (4, 8, 8, 8, 8)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def _torch_state_dicts(ref, features_prefix: str = ""):
    vgg = {features_prefix + k[4:]: v for k, v in ref.items() if k.startswith("vgg/")}
    lin = {k[4:]: v for k, v in ref.items() if k.startswith("lin/")}
    return vgg, lin


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return lp.random_weights(0, WIDTHS)


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(4, 16, 16, 3)).astype(np.float32)
    y = rng.uniform(-1, 1, size=(4, 16, 16, 3)).astype(np.float32)
    y[1] = np.clip(x[1] + 0.02 * rng.normal(size=x.shape[1:]), -1, 1)  # a near pair
    return x, y


def _make(weights, replace_pooling=False, resize_to=None) -> LPIPS:
    return LPIPS.from_weights(weights, replace_pooling=replace_pooling, resize_to=resize_to)


# --- agreement with the torch reference -----------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_matches_torch_reference(reference, case):
    # Alternate torchvision's full-model keys (features.{i}) and vgg16().features' bare keys.
    prefix = "features." if CASES.index(case) % 2 else ""
    vgg, lin = _torch_state_dicts(reference, prefix)
    resize_to = tuple(int(s) for s in reference[f"{case}/resize_to"])
    lpips = LPIPS.from_weights(
        convert_torch_weights(vgg, lin),
        replace_pooling=str(reference[f"{case}/pooling"]) == "avg",
        resize_to=None if resize_to == (0, 0) else resize_to,
    )
    x, y = reference[f"{case}/x"], reference[f"{case}/y"]
    want = reference[f"{case}/distance"]
    got = np.asarray(lpips(x, y), np.float64)
    assert got.shape == want.shape == (x.shape[0],)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Per tap: small terms are differences of nearly equal unit vectors, so compare them on
    # the scale of the total.
    layers = np.asarray(lpips.layer_distances(x, y), np.float64)
    assert np.all(np.abs(layers - reference[f"{case}/layers"]) <= 1e-5 * want[:, None])


@pytest.mark.parametrize("which", ["up", "down"])
def test_resize_matches_torch_interpolate(reference, which):
    size = tuple(int(s) for s in reference[f"resize/{which}_size"])
    got = np.asarray(resize_bilinear(reference["resize/x"], size))
    np.testing.assert_allclose(got, reference[f"resize/{which}"], rtol=0, atol=2e-7)


def test_converter_accepts_both_vgg_key_forms_and_ignores_the_classifier(reference):
    vgg, lin = _torch_state_dicts(reference)
    full, _ = _torch_state_dicts(reference, "features.")
    full["classifier.0.weight"] = np.zeros((2, 3), np.float32)
    bare = convert_torch_weights(vgg, lin)
    for key, value in convert_torch_weights(full, lin).items():
        np.testing.assert_array_equal(value, bare[key])
    # HWIO: kernel[i, j, c_in, c_out] = torch weight[c_out, c_in, i, j].
    w = vgg[f"{lp.TORCHVISION_CONV_INDICES['conv3_2']}.weight"]
    np.testing.assert_array_equal(bare["vgg/conv3_2/kernel"][1, 2, 5, 7], w[7, 5, 1, 2])
    # The lin weights may also come as a sequence of five arrays.
    as_list = [lin[f"lin{k}.model.1.weight"] for k in range(5)]
    np.testing.assert_array_equal(convert_torch_weights(vgg, as_list)["lin3"], bare["lin3"])


# --- properties --------------------------------------------------------------------------------


@pytest.mark.parametrize("replace_pooling", [False, True])
def test_identity_symmetry_and_nonnegativity(weights, images, replace_pooling):
    lpips = _make(weights, replace_pooling)
    x, y = images
    d_xy = np.asarray(lpips(x, y))
    assert d_xy.shape == (4,) and d_xy.dtype == np.float32
    assert np.all(d_xy > 0)
    assert d_xy[1] < 0.2 * np.median(d_xy)  # the near pair is nearer
    np.testing.assert_allclose(np.asarray(lpips(y, x)), d_xy, rtol=1e-6)
    assert np.max(np.abs(np.asarray(lpips(x, x)))) < 1e-10
    assert np.all(np.asarray(lpips.layer_distances(x, y)) >= 0)


def test_grey_image_equals_rgb_with_the_channel_repeated(weights, images):
    lpips = _make(weights, resize_to=24)
    grey_x, grey_y = images[0][..., :1], images[1][..., :1]
    rgb_x, rgb_y = np.repeat(grey_x, 3, axis=-1), np.repeat(grey_y, 3, axis=-1)
    np.testing.assert_allclose(
        np.asarray(lpips(grey_x, grey_y)), np.asarray(lpips(rgb_x, rgb_y)), rtol=1e-6
    )


def test_gradient_is_finite_and_zero_at_x_equals_y(weights, images):
    lpips = _make(weights)
    x, y = images
    grad = jax.jit(jax.grad(lambda lp_, a, b: jnp.sum(lp_(a, b)), argnums=1))
    g = np.asarray(grad(lpips, x, y))
    assert g.shape == x.shape and np.all(np.isfinite(g)) and np.max(np.abs(g)) > 0
    g_equal = np.asarray(grad(lpips, x, x))
    assert np.max(np.abs(g_equal)) < 1e-6 * np.max(np.abs(g))
    # A tap whose every channel is dead (features exactly 0 at every pixel) stays finite.
    dead = dict(weights, **{"vgg/conv5_3/bias": np.full((WIDTHS[4],), -1e3, np.float32)})
    lpips_dead = _make(dead)
    assert np.all(np.asarray(lpips_dead.layer_distances(x, y))[:, 4] == 0)
    assert np.all(np.isfinite(np.asarray(grad(lpips_dead, x, y))))


def test_jit_with_lpips_as_argument_matches_eager(weights, images):
    lpips = _make(weights, resize_to=20)
    x, y = images
    assert len(jax.tree_util.tree_leaves(lpips)) == 2 * 13 + 5
    jitted = jax.jit(lambda lp_, a, b: lp_(a, b))(lpips, x, y)
    assert_equal_up_to_rounding(jitted, lpips(x, y))  # fused vs op-by-op float32


def test_file_round_trip_gives_identical_outputs(weights, images, tmp_path):
    lpips = _make(weights, replace_pooling=True, resize_to=(20, 18))
    path = lp.save_weights(tmp_path / "weights", lpips.weights())
    assert path == str(tmp_path / "weights.npz") and os.path.isfile(path)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    loaded = LPIPS.from_file(path, replace_pooling=True, resize_to=(20, 18))
    assert loaded.widths == WIDTHS
    for key, value in lp.load_weights(path).items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, weights[key])
    x, y = images
    np.testing.assert_array_equal(np.asarray(loaded(x, y)), np.asarray(lpips(x, y)))


def test_weight_file_layout_at_vgg16_widths():
    shapes = lp.weight_shapes()
    assert len(shapes) == 2 * 13 + 5
    assert shapes["vgg/conv1_1/kernel"] == (3, 3, 3, 64)
    assert shapes["vgg/conv4_1/kernel"] == (3, 3, 256, 512)
    assert shapes["vgg/conv5_3/bias"] == (512,)
    assert [shapes[f"lin{k}"] for k in range(5)] == [(c,) for c in lp.VGG16_WIDTHS]
    assert sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith("vgg/")) == 14_714_688
    assert list(lp.TORCHVISION_CONV_INDICES.values()) == [
        0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28
    ]  # fmt: skip


# --- the command line --------------------------------------------------------------------------


def test_command_line_converts_torch_files(reference, images, tmp_path, monkeypatch):
    vgg, lin = _torch_state_dicts(reference, "features.")
    files = {str(tmp_path / "vgg16.pth"): vgg, str(tmp_path / "vgg.pth"): lin}
    for name in files:
        open(name, "wb").close()
    # no torch here: the converter reads the (empty) .pth files through this function
    monkeypatch.setattr(convert, "read_state_dict", lambda path: files[path])
    out = tmp_path / "lpips.npz"
    assert convert.convert_lpips(str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg.pth"), str(out))
    x, y = images
    from_cli = LPIPS.from_file(out, resize_to=None)
    direct = LPIPS.from_weights(convert_torch_weights(vgg, lin), resize_to=None)
    np.testing.assert_array_equal(np.asarray(from_cli(x, y)), np.asarray(direct(x, y)))


def test_module_runs_as_a_command_without_importing_torch(tmp_path):
    # `python -m flowjax.evaluation.lpips` is the `flowjax convert-lpips` command: its help,
    # and a missing input refused in one line (exit 2), without importing torch.
    code = (
        "import runpy, sys\n"
        f"for argv, status in ((['p', '--help'], 0), (['p', '--vgg={tmp_path}/absent.pth', "
        f"'--lin={tmp_path}/absent.pth', '--out=o.npz'], 2)):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        runpy.run_module('flowjax.evaluation.lpips', run_name='__main__')\n"
        "    except SystemExit as e:\n"
        "        assert e.code == status, (argv, e.code)\n"
        "assert 'torch' not in sys.modules\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--vgg" in result.stdout and "--lin" in result.stdout
    assert result.stderr.strip() == f"ERROR: --vgg: no file '{tmp_path}/absent.pth'"


# --- errors at the public boundary -------------------------------------------------------------


def test_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        LPIPS.from_file(tmp_path / "nowhere.npz")
    message = str(info.value)
    assert "flowjax convert-lpips --vgg=" in message
    assert "torchvision" in message and "weights/v0.1/vgg.pth" in message


def test_unreadable_or_foreign_files_are_value_errors(weights, tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00 not a zip archive \xff" * 10)
    with pytest.raises(ValueError, match="not a readable"):
        LPIPS.from_file(garbage)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single .npy array"):
        LPIPS.from_file(single)
    # A torch-layout dict saved as .npz: every key is wrong; the message points to the converter.
    torch_like = tmp_path / "torch_like.npz"
    np.savez(torch_like, **{"features.0.weight": np.zeros((4, 3, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"missing keys.*unexpected keys.*flowjax convert-lpips"):
        LPIPS.from_file(torch_like)


@pytest.mark.parametrize(
    "damage, match",
    [
        ("drop_kernel", r"1 missing keys \(vgg/conv2_2/kernel\)"),
        ("extra_key", r"unexpected keys \(vgg/conv6_1/kernel\)"),
        ("kernel_shape", r"wrong shapes.*vgg/conv3_1/kernel: \(3, 3, 8, 9\)"),
        ("lin_torch_shape", r"lin0..lin4 must be vectors"),
        ("negative_lin", r"lin2 has negative"),
        ("nan", r"vgg/conv1_1/bias contains NaN"),
    ],
)
def test_bad_weights_are_value_errors(weights, tmp_path, damage, match):
    bad = dict(weights)
    if damage == "drop_kernel":
        del bad["vgg/conv2_2/kernel"]
    elif damage == "extra_key":
        bad["vgg/conv6_1/kernel"] = np.zeros((3, 3, 8, 8), np.float32)
    elif damage == "kernel_shape":
        bad["vgg/conv3_1/kernel"] = np.zeros((3, 3, 8, 9), np.float32)
    elif damage == "lin_torch_shape":
        bad["lin0"] = bad["lin0"].reshape(1, -1, 1, 1)
    elif damage == "negative_lin":
        bad["lin2"] = -bad["lin2"]
    elif damage == "nan":
        bad["vgg/conv1_1/bias"] = np.full_like(bad["vgg/conv1_1/bias"], np.nan)
    with pytest.raises(ValueError, match=match):
        LPIPS.from_weights(bad)
    path = tmp_path / "bad.npz"
    np.savez(path, **bad)  # the same checks guard the file
    with pytest.raises(ValueError, match=match):
        LPIPS.from_file(path)


def test_converter_errors(reference):
    vgg, lin = _torch_state_dicts(reference)
    with pytest.raises(ValueError, match="features.0.weight"):
        convert_torch_weights({"conv.weight": np.zeros(1)}, lin)
    with pytest.raises(ValueError, match=r"lacks the VGG16 conv keys \['28.weight'\]"):
        convert_torch_weights({k: v for k, v in vgg.items() if k != "28.weight"}, lin)
    with pytest.raises(ValueError, match="lin3.model.1.weight"):
        convert_torch_weights(vgg, {k: v for k, v in lin.items() if not k.startswith("lin3")})
    bad_lin = dict(lin, **{"lin1.model.1.weight": np.ones((2, 8, 1, 1), np.float32)})
    with pytest.raises(ValueError, match=r"lin1 weight must be \[1, C, 1, 1\]"):
        convert_torch_weights(vgg, bad_lin)


def test_bad_inputs_are_value_errors(weights, images):
    lpips = _make(weights)
    x, y = images
    with pytest.raises(ValueError, match="same shape"):
        lpips(x, y[:2])
    with pytest.raises(ValueError, match="1 .grey. or 3 .RGB. channels"):
        lpips(np.zeros((2, 16, 16, 4), np.float32), np.zeros((2, 16, 16, 4), np.float32))
    with pytest.raises(ValueError, match="1 .grey. or 3 .RGB. channels"):
        lpips(x[..., :2], y[..., :2])
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        lpips(x[0], y[0])
    with pytest.raises(ValueError, match="floats in"):
        lpips(x.astype(np.uint8), y.astype(np.uint8))
    with pytest.raises(ValueError, match="too small"):
        lpips(x[:, :12, :12], y[:, :12, :12])
    with pytest.raises(ValueError, match="resize_to"):
        _make(weights, resize_to=8)
    with pytest.raises(ValueError, match="widths"):
        lp.weight_shapes((4, 8, 8))
