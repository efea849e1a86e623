"""Own data through the training job and the sampling CLI: a run records its data (name,
shape, fingerprint), names it in its figures and summary, and ``flowjax.sample`` scores against
that data or says why it cannot."""

import json
import os
import sys

import jax
import numpy as np
import pytest

from flowjax import plotting
from flowjax.config_files import config_names
from flowjax.data import ToySource, sample_toy
from flowjax.training import train_and_evaluate
from flowjax.workflows import sample as sample_job


@pytest.fixture
def titles(monkeypatch):
    """The titles of the scatter figures written (the real plotting still runs)."""
    seen, real = [], plotting.scatter_panels

    def spy(*args, **kwargs):
        seen.append(kwargs.get("title"))
        return real(*args, **kwargs)

    monkeypatch.setattr(plotting, "scatter_panels", spy)
    return seen


@pytest.mark.slow
def test_array_data_run_records_its_data_and_is_sampled_against_it(tmp_path, make_config, titles):
    path = tmp_path / "moons.npz"
    np.savez(path, x=np.asarray(sample_toy("moons", jax.random.PRNGKey(1), 600)))
    config = make_config()
    config.data.kind, config.data.path = "array", str(path)
    workdir = str(tmp_path / "run")
    summary = train_and_evaluate(config, workdir)

    record = json.loads(open(os.path.join(workdir, "config.json")).read())["dataset"]
    assert record["name"] == "moons" and record["kind"] == "points"
    assert record["element_shape"] == [2] and record["built_from"] == "config"
    assert record["path"] == str(path) and len(record["fingerprint"]) == 64
    assert summary["dataset"] == record
    assert titles[-1].startswith("moons: EMA weights") and "checkerboard" not in titles[-1]

    # The CLI rebuilds the run's own data: the same noise, weights and held-out rows give the
    # training evaluator's final numbers.
    out = sample_job.run_sampling(workdir, "euler", 2, num_samples=128)
    assert "metrics_skipped" not in out
    for key in ("sw_euler_nfe2", "mmd_euler_nfe2", "energy_euler_nfe2"):
        np.testing.assert_allclose(out["metrics"][key], summary["final"][key], rtol=1e-5)

    # Changed data: samples, no scores, and the reason.
    x = np.load(path)["x"]
    x[0] += 0.5
    np.savez(path, x=x)
    changed = sample_job.run_sampling(workdir, "euler", 2, num_samples=128)
    assert changed["metrics"] == {} and "has changed since training" in changed["metrics_skipped"]
    assert all(os.path.getsize(f) > 0 for f in changed["files"])
    os.remove(path)
    gone = sample_job.run_sampling(workdir, "euler", 2, num_samples=128)
    assert gone["metrics"] == {} and "cannot be rebuilt" in gone["metrics_skipped"]
    assert "does not exist" in gone["metrics_skipped"]


@pytest.mark.slow
def test_data_passed_in_code_is_named_and_not_scored_against_the_config_data(
    tmp_path, make_config, titles
):
    config = make_config()  # its data section says checkerboard
    moons = ToySource("moons", batch_size=config.train.batch_size, seed=config.seed)
    workdir = str(tmp_path / "run")
    summary = train_and_evaluate(config, workdir, data=moons)
    record = json.loads(open(os.path.join(workdir, "config.json")).read())["dataset"]
    assert (record["name"], record["built_from"]) == ("moons", "code")
    assert summary["dataset"]["name"] == "moons"
    assert titles[-1].startswith("moons: EMA weights")

    out = sample_job.run_sampling(workdir, "euler", 2, num_samples=128)
    assert out["metrics"] == {}
    assert "data-based metrics skipped" in out["metrics_skipped"]
    assert "passed in code ('moons' (2,))" in out["metrics_skipped"]
    assert np.load(out["files"][1])["x"].shape == (128, 2)  # the samples are still written


def _parse(monkeypatch, config: str, *overrides: str):
    """The config the command line builds from ``--config=<config> <overrides>`` (the config
    flag reads its overrides from ``sys.argv``)."""
    from absl import flags
    from ml_collections import config_flags

    from flowjax.config_files import resolve

    values = flags.FlagValues()
    argv = ["main", f"--config={resolve(config)}", *overrides]
    monkeypatch.setattr(sys, "argv", argv)
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
    values(argv)
    return values.config


def _own_images(root):
    """An 8x8 grey image set both ways: ``images.npz`` (x in [-1, 1], labels 0..2) and the
    folder ``shapes/`` with one subfolder per class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8)
    labels = np.arange(12) % 3
    np.savez(root / "images.npz", x=pixels[..., None] / 127.5 - 1.0, label=labels)
    for i, (image, label) in enumerate(zip(pixels, labels)):
        (root / "shapes" / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "shapes" / f"c{label}" / f"{i}.png")


@pytest.mark.parametrize("config", config_names())
def test_every_config_takes_own_images_from_the_command_line(tmp_path, monkeypatch, config):
    """``--config.data.kind=array --config.data.path=FILE`` and ``kind=image_folder`` are field
    overrides on any config (the data section has every kind's fields); relative paths are
    stored absolute and the data is named after its file / folder, and the config builds the
    source: images with their labels."""
    from flowjax.data import make_source
    from flowjax.training.validate import validate_config

    _own_images(tmp_path)
    monkeypatch.chdir(tmp_path)
    common = ["--config.train.batch_size=4"]
    array = _parse(
        monkeypatch, config, *common, "--config.data.kind=array", "--config.data.path=images.npz"
    )
    folder = _parse(
        monkeypatch,
        config,
        *common,
        "--config.data.kind=image_folder",
        "--config.data.path=shapes/",
        "--config.data.resolution=8",
        "--config.data.channels=1",
    )
    for cfg, path, name in ((array, "images.npz", "images"), (folder, "shapes", "shapes")):
        cfg = validate_config(cfg)
        assert cfg.data.path == str(tmp_path / path) and cfg.data.name == name
        source = make_source(cfg.data, batch_size=4, seed=0)
        assert (source.name, source.kind, source.element_shape) == (name, "images", (8, 8, 1))
        assert source.num_classes == 3
        batch = next(source.iterator(0))
        assert batch["x1"].shape == (4, 8, 8, 1) and set(np.unique(batch["label"])) <= {0, 1, 2}


def test_digits_config_builds_its_network_on_own_images(tmp_path, monkeypatch):
    """The digits U-Net job set up (data, objective, network shapes; nothing compiled) on an
    array of images with labels and on an image folder: the class-conditional network gets
    the data's three classes and its element shape (training then runs the one train step
    every config shares; ``test_the_main_job_trains_on_a_folder`` runs it on a folder)."""
    from flowjax.training.experiment import Experiment
    from flowjax.training.validate import validate_config

    _own_images(tmp_path)
    monkeypatch.chdir(tmp_path)
    folder = ["--config.data.resolution=8", "--config.data.channels=1"]
    for kind, path, extra in (("array", "images.npz", []), ("image_folder", "shapes", folder)):
        config = _parse(
            monkeypatch,
            "digits_rf",
            f"--config.data.kind={kind}",
            f"--config.data.path={path}",
            "--config.train.batch_size=4",
            *extra,
        )
        exp = Experiment(validate_config(config))
        assert exp.num_classes == 3 and exp.data.element_shape == (8, 8, 1)
        params = exp.abstract_state().params
        # three classes and the null label of classifier-free guidance; grey in, grey out
        assert params["ConditioningEmbedding_0"]["y_embed"]["embedding"].shape[0] == 3 + 1
        assert params["Conv_0"]["kernel"].shape[2] == 1 == params["Conv_3"]["kernel"].shape[3]
