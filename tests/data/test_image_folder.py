"""A folder of PNG / JPEG images as a data set (``data.kind="image_folder"``): labels from class
folders, the ADM crop, the tfds pipeline's order and flips, exact resume, the held-out split,
the latent builder on a folder, and one-line errors for bad folders."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image

from flowjax.data import (
    ImageDataset,
    ImageFolder,
    ImageFolderSource,
    describe_source,
    load_digits_numpy,
    make_source,
)
from flowjax.data import latents as LD
from flowjax.models import vae as V
from flowjax.workflows import latents as L

# (class folder, file, height, width, Pillow mode): sizes, formats and modes differ.
IMAGES = [
    ("cat", "a.png", 20, 30, "RGB"),
    ("cat", "b.jpg", 17, 17, "RGB"),
    ("cat", "deep/c.png", 40, 24, "L"),
    ("cat", "d.JPEG", 16, 19, "RGB"),
    ("dog", "a.png", 33, 16, "RGBA"),
    ("dog", "b.png", 16, 16, "RGB"),
    ("dog", "c.jpeg", 25, 50, "RGB"),
    ("dog", "d.png", 64, 48, "RGB"),
    ("dog", "e.png", 18, 21, "P"),
    ("dog", "f.png", 31, 31, "RGB"),
]


def _write(path, h, w, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "P": 1}[mode]
    pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, None)
    if mode == "P":
        image = image.convert("P")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else image.save(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pets")
    for i, (cls, name, h, w, mode) in enumerate(IMAGES):
        _write(root / cls / name, h, w, mode, seed=i)
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.png").write_bytes(b"skipped")
    return root


def _source(root, **kw):
    kw = {"resolution": 16, "batch_size": 4, "seed": 0, "num_threads": 2, **kw}
    return ImageFolderSource(root, **kw)


def _x1(uint8):
    return uint8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def test_class_folders_give_sorted_labels_and_every_image_is_found(folder):
    everything = ImageFolder(folder, "all", num_threads=2)
    assert everything.classes == ("cat", "dog") and everything.num_classes == 2
    want = sorted(f"{c}/{n}" for c, n, *_ in IMAGES)  # recursive; .txt and hidden skipped
    assert list(everything.files) == want
    np.testing.assert_array_equal(everything.labels, [f.startswith("dog") for f in want])
    item = everything[want.index("cat/deep/c.png")]
    assert item["image"].shape == (40, 24, 3) and item["image"].dtype == np.uint8
    assert item["label"] == 0
    assert everything.dataset_info.features["label"].num_classes == 2
    unlabelled = ImageFolder(folder, "all", class_subfolders=False, num_threads=2)
    assert unlabelled.num_classes is None and "label" not in unlabelled[0]
    flat = ImageFolder(folder / "cat" / "deep", "all")  # no subfolders: unlabelled
    assert flat.num_classes is None and list(flat.files) == ["c.png"]


def test_held_out_split_is_disjoint_fixed_and_sliceable(folder):
    train, test = (ImageFolder(folder, s, eval_fraction=0.3) for s in ("train", "test"))
    assert (len(train), len(test)) == (7, 3)  # ceil(0.3 * 10) held out
    assert not set(train.files) & set(test.files)
    assert set(train.files) | set(test.files) == set(ImageFolder(folder, "all").files)
    assert list(ImageFolder(folder, "train[1:3]", eval_fraction=0.3).files) == list(
        train.files[1:3]
    )
    src = _source(folder, eval_fraction=0.3, seed=1)
    other = _source(folder, eval_fraction=0.3, seed=2)  # the split does not follow the seed
    assert src.train.files == train.files and other.held.files == test.files
    assert src.fingerprint() == other.fingerprint()
    x, labels = src.eval_array(100)
    assert x.shape == (3, 16, 16, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(labels, test.labels)
    np.testing.assert_array_equal(x[1], _x1(L.center_crop(test.image(1), 16)))


def _adm_reference(image, r):
    """ADM's crop written independently for sizes where it needs no bicubic step: exact 2x2
    box means while the short side is >= 2 r, then the central r x r (the short side is r).
    Returns the crop and the number of halvings: Pillow rounds to uint8 after each of a
    halving's two passes (each within 1/2 of the exact value; averaging does not amplify an
    error), so it is within one grey level of this reference per halving."""
    x, halvings = image.astype(np.float64), 0
    while min(x.shape[:2]) >= 2 * r:
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        x, halvings = x[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean((1, 3)), halvings + 1
    top, left = (x.shape[0] - r) // 2, (x.shape[1] - r) // 2
    return x[top : top + r, left : left + r], halvings


@pytest.mark.parametrize("channels", [3, 1])
def test_batches_are_the_adm_center_crop_of_each_file(tmp_path, channels):
    # Short side 16 = R (no resize), or 2^k R (box halvings only): the crop position is visible.
    sizes = [(16, 30), (16, 19), (27, 16), (16, 16), (32, 64), (80, 32), (64, 64)]
    for i, (h, w) in enumerate(sizes):
        _write(tmp_path / f"{i}.png", h, w, seed=i)
    src = _source(tmp_path, eval_path=tmp_path, channels=channels)  # trains on all 7 files
    mode = "RGB" if channels == 3 else "L"
    for step in range(3):
        batch = src.get_batch(step)
        assert batch["x1"].shape == (4, 16, 16, channels) and "label" not in batch
        for row, index in enumerate(src.example_indices(step)):
            pixels = np.asarray(Image.open(src.train.path(index)).convert(mode))
            ref, halvings = _adm_reference(pixels.reshape(*pixels.shape[:2], channels), 16)
            got = (batch["x1"][row].astype(np.float64) + 1.0) * 127.5  # x / 127.5 - 1, float32
            np.testing.assert_allclose(got, ref, atol=halvings + 1e-3)


def test_order_and_flips_are_the_tfds_pipelines_on_the_same_images(tmp_path, digits_dir):
    """The digits' training split written as PNG files in tfds' order: the folder source serves
    exactly the tfds pipeline's batches (same permutations, same flips, same scaling)."""
    images, _ = load_digits_numpy("train")
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0]).save(tmp_path / f"{i:05d}.png")
    common = dict(global_batch_size=64, seed=3, shard_index=0, shard_count=1, num_threads=2)
    tfds_set = ImageDataset(
        "sklearn_digits", data_dir=digits_dir, random_flip=True, label_key=None, **common
    )
    src = ImageFolderSource(
        tmp_path,
        resolution=8,
        channels=1,
        eval_path=tmp_path,
        random_flip=True,
        batch_size=64,
        seed=3,
        num_threads=2,
    )
    assert src.num_examples == tfds_set.num_examples == 1437
    for step in (0, 22, 40):  # 22 straddles the first epoch boundary (1408 < 1437 < 1472)
        np.testing.assert_array_equal(src.get_batch(step)["x1"], tfds_set.get_batch(step)["x1"])
    x1 = src.get_batch(0)["x1"]
    plain = _x1(images[src.example_indices(0)])
    mirrored = np.array([np.array_equal(a, b[:, ::-1]) for a, b in zip(x1, plain)])
    same = np.array([np.array_equal(a, b) for a, b in zip(x1, plain)])
    assert np.all(same | mirrored) and 16 <= np.sum(mirrored & ~same) <= 48


def test_iterator_resumes_exactly_and_processes_tile_the_global_batch(folder):
    src = _source(folder, random_flip=True, seed=5, eval_fraction=0.2)  # 8 training images
    full = list(src.iterator(0, num_steps=7))  # 28 rows: three and a half epochs
    resumed = list(src.iterator(start_step=4, num_steps=3))
    again = list(_source(folder, random_flip=True, seed=5, eval_fraction=0.2).iterator(0, 7))
    for a, b in itertools.chain(zip(full[4:], resumed), zip(full, again)):
        np.testing.assert_array_equal(a["x1"], b["x1"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(full[0]["x1"], full[4]["x1"])
    parts = [
        _source(folder, random_flip=True, seed=5, eval_fraction=0.2, shard_index=i, shard_count=2)
        for i in range(2)
    ]
    for step in (1, 5):
        for key in ("x1", "label"):
            joined = np.concatenate([p.get_batch(step)[key] for p in parts])
            np.testing.assert_array_equal(joined, full[step][key])
    # Labels travel with their files.
    for step, batch in enumerate(full[:2]):
        np.testing.assert_array_equal(batch["label"], src.train.labels[src.example_indices(step)])


def _data_cfg(**data):
    base = dict(kind="image_folder", path=None, resolution=16, eval_path=None, eval_fraction=0.1)
    return ml_collections.ConfigDict({**base, **data})


def test_config_builds_it_and_the_run_records_it(folder):
    src = make_source(
        _data_cfg(path=str(folder), class_subfolders=True, random_flip=True),
        batch_size=4,
        seed=0,
    )
    assert isinstance(src, ImageFolderSource) and src.random_flip
    assert (src.kind, src.name, src.element_shape, src.num_classes) == (
        "images",
        folder.name,
        (16, 16, 3),
        2,
    )
    record = describe_source(src, from_config=True)
    assert record["path"] == os.path.abspath(folder) and len(record["fingerprint"]) == 64
    grey = make_source(_data_cfg(path=str(folder), channels=1), batch_size=4, seed=0)
    assert grey.element_shape == (16, 16, 1) and grey.fingerprint() != src.fingerprint()


def test_fingerprint_follows_the_files(tmp_path):
    for i in range(5):
        _write(tmp_path / f"{i}.png", 16, 16, seed=i)
    first = _source(tmp_path, batch_size=2).fingerprint()
    assert _source(tmp_path, batch_size=2, resolution=8).fingerprint() != first
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "3.png")  # other content
    second = _source(tmp_path, batch_size=2).fingerprint()
    assert second != first
    _write(tmp_path / "5.png", 16, 16, seed=5)
    assert _source(tmp_path, batch_size=2).fingerprint() != second


def _error(exc, build):
    with pytest.raises(exc) as info:
        build()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_bad_folders_give_one_line_errors_naming_the_file(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    assert "is empty" in _error(ValueError, lambda: _source(tmp_path / "empty"))
    assert "does not exist" in _error(FileNotFoundError, lambda: _source(tmp_path / "nope"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    assert "no PNG / JPEG images" in _error(ValueError, lambda: _source(tmp_path / "text"))
    assert "is not a folder" in _error(ValueError, lambda: _source(tmp_path / "text" / "a.txt"))

    broken = tmp_path / "broken"
    for i in range(5):
        _write(broken / f"{i}.png", 16, 16, seed=i)
    (broken / "3.png").write_bytes(b"this is no PNG")
    message = _error(ValueError, lambda: _source(broken))
    assert "cannot read image" in message and "3.png" in message
    # A valid header with truncated data is found only when decoded: named then.
    data = (broken / "2.png").read_bytes()
    (broken / "3.png").write_bytes(data[: len(data) // 2])
    src = _source(broken, eval_path=broken, batch_size=1)
    step = next(k for k in range(5) if src.train.files[src.example_indices(k)[0]] == "3.png")
    assert "3.png" in _error(ValueError, lambda: src.get_batch(step))

    message = _error(ValueError, lambda: _source(folder, batch_size=16))
    assert "9 training images, fewer than the global batch size 16" in message
    mixed = tmp_path / "mixed"
    _write(mixed / "top.png", 16, 16)
    _write(mixed / "cls" / "a.png", 16, 16)
    assert "top.png" in _error(ValueError, lambda: _source(mixed, batch_size=1))
    _write(tmp_path / "held" / "bird" / "a.png", 16, 16)
    message = _error(ValueError, lambda: _source(folder, eval_path=tmp_path / "held"))
    assert "['bird']" in message
    (tmp_path / "one" / "cls").mkdir(parents=True)
    _write(tmp_path / "one" / "other" / "a.png", 16, 16)
    assert "'cls'" in _error(ValueError, lambda: _source(tmp_path / "one", batch_size=1))
    assert "data.resolution" in _error(ValueError, lambda: _source(folder, resolution=0))
    assert "needs data.path" in _error(
        ValueError, lambda: make_source(_data_cfg(), batch_size=4, seed=0)
    )
    assert "'train', 'test'" in _error(ValueError, lambda: ImageFolder(folder, "validation"))


# The smallest VAE of this architecture (one downsampling): the encoder compiles in seconds.
TINY_VAE = dataclasses.replace(
    V.SD_VAE_CONFIG, block_out_channels=(4, 4), layers_per_block=1, norm_num_groups=2
)


def test_the_latent_builder_encodes_a_folder(folder, tmp_path):
    """``python -m flowjax.latents --tfds=<folder>``: the ``train`` files become the latent set
    and the folder's ``test`` files (``--eval_split=auto``) its held-out set, whose rows are in
    file order, labelled from the class folders, each the VAE posterior of the ADM-cropped image."""
    rng = np.random.default_rng(0)  # N(0, 0.1^2) weights from the shapes: nothing to compile
    weights = {
        k: 0.1 * rng.standard_normal(shape, np.float32)
        for k, shape in V.weight_shapes(TINY_VAE).items()
    }
    vae = V.AutoencoderKL.from_weights(weights, TINY_VAE)
    out = tmp_path / "lat"
    stats = L.encode_image_set(
        vae, str(folder), str(out), split="train", resolution=16, batch_size=1, progress=False
    )
    held = ImageFolder(folder, "test")
    assert stats["rows"] == len(ImageFolder(folder, "train"))
    assert stats["eval_rows"] == len(held) == 1
    manifest = LD.read_manifest(out)
    assert manifest["num_classes"] == 2
    latents = LD.LatentSource(out, batch_size=1, seed=0)
    x, labels = latents.eval_array(1)
    np.testing.assert_array_equal(labels, held.labels)
    mean, _ = vae.encode_moments(_x1(L.center_crop(held.image(0), 16))[None])
    np.testing.assert_array_equal(x, np.asarray(vae.scale(mean)))  # the same compiled program


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_the_main_job_trains_on_a_folder(folder, tmp_path):
    """``configs/image_folder_rf.py`` from the command line: two steps of a class-conditional
    U-Net on the 8 x 8 crops of the folder, evaluated, and the data recorded with the run: the
    folder given by a relative path is stored absolute, and named after itself."""
    flags = [
        f"--config.data.path={os.path.relpath(folder, REPO)}",
        "--config.data.resolution=8",
        "--config.model.base_channels=8",
        "--config.model.channel_mults=(1,2)",
        "--config.model.conditional=True",
        "--config.train.batch_size=4",
        "--config.train.num_steps=2",
        "--config.train.progress=False",
        "--config.eval.samplers=('euler:1',)",
        "--config.eval.num_samples=4",
        "--config.eval.num_kernel_samples=4",
    ]
    cmd = [sys.executable, "-m", "flowjax.main", "--config=configs/image_folder_rf.py"]
    out = subprocess.run(
        [*cmd, f"--workdir={tmp_path / 'run'}", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 2 and np.isfinite(summary["final"]["sw_euler_nfe1"])
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    record = stored["dataset"]
    assert record["kind"] == "images" and record["element_shape"] == [8, 8, 3]
    assert record["num_classes"] == 2 and record["name"] == folder.name
    assert stored["data"]["path"] == str(folder) == record["path"]
    assert stored["data"]["name"] == folder.name
