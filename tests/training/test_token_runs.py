"""Training on mixed-size token batches: FLOPs of valid tokens only and the padding logged
(closed form), and a short run of the stand-in any-resolution network on a token source that
trains, evaluates on images and resumes exactly."""

import json
import os
import signal

import numpy as np
import pytest

from flowjax.data.tokens import pack_images
from flowjax.evaluation.settings import eval_settings
from flowjax.training import Experiment, accounting, train_and_evaluate
from flowjax.workflows import sample as sample_job
from tests.anyres_standin import TinyAnyRes, TokenSource, image, registered
from tests.training.conftest import tiny_config


def _closed_form_flops(n: int, f: int, d: int) -> float:
    """The stand-in's forward FLOPs of n tokens of f features at width d, written out."""
    return 2 * n * f * d + 6 * n * d * d + 4 * n * n * d + 2 * n * d * f


def test_token_batch_flops_count_valid_tokens_and_padding_is_reported():
    model = TinyAnyRes(patch_size=2, hidden_size=8)
    sizes = ((4, 6), (6, 6), (2, 2))  # grids 2x3, 3x3, 1x1 -> 6, 9, 1 valid tokens
    packed = pack_images(
        [image(i, s) for i, s in enumerate(sizes)], 2, max_tokens=12, pad_to_max=True
    )
    batch = {"x1": packed.tokens, "mask": packed.mask, "positions": packed.positions}
    batch["mask"] = np.concatenate([batch["mask"], np.zeros((1, 12), bool)])  # an empty row
    batch["positions"] = np.concatenate([batch["positions"], np.zeros((1, 12, 2), np.int32)])
    batch["x1"] = np.concatenate([batch["x1"], np.ones((1, 12, 4), np.float32)])
    np.testing.assert_array_equal(
        accounting.token_grids(batch["mask"], batch["positions"]), [[2, 3], [3, 3], [1, 1], [0, 0]]
    )
    cost = accounting.TokenCost(model, channels=1)(batch)
    f, d = 4, 8
    valid = sum(_closed_form_flops(n, f, d) for n in (6, 9, 1))
    padded = 4 * _closed_form_flops(12, f, d)
    assert cost.model_flops == pytest.approx(3 * valid, rel=1e-12)
    assert (cost.tokens, cost.examples, cost.slots) == (16, 4, 48)
    rates = cost.rates(2.0, num_devices=1, peak_per_device=None)
    assert rates["padding_fraction"] == pytest.approx(1 - 16 / 48)
    assert rates["padding_flops_fraction"] == pytest.approx(1 - valid / padded)
    assert rates["model_tflops_per_device"] == pytest.approx(3 * valid / 2.0 / 1e12)
    # A fixed-size batch has no padding: the fractions are 0 and the FLOPs are B forward passes.
    full = pack_images([image(i, (4, 4)) for i in range(3)], 2)
    same = accounting.TokenCost(model, 1)(
        {"x1": full.tokens, "mask": full.mask, "positions": full.positions}
    )
    assert same.padding() == {"padding_fraction": 0.0, "padding_flops_fraction": 0.0}
    assert same.model_flops == pytest.approx(3 * 3 * model.forward_flops((4, 4, 1)))


def _run_config(num_steps: int):
    config = tiny_config(
        num_steps=num_steps, batch_size=6, log_every=2, checkpoint_every=3, ema_decay=0.9
    )
    config.model = {"name": "tiny_anyres", "patch_size": 2, "hidden_size": 8, "max_tokens": 64}
    config.optim.lr, config.optim.warmup_steps = 3e-3, 1
    config.eval.num_samples = 6
    config.eval.metrics = ("sw",)
    return config


@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    """A 6-step run on the token source, checkpointed at steps 3 and 6 (shared by the tests
    of this module and by the sampling tests)."""
    workdir = str(tmp_path_factory.mktemp("token_run") / "run")
    with registered():
        summary = train_and_evaluate(_run_config(6), workdir, data=TokenSource(6))
    return workdir, summary


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_a_token_run_trains_evaluates_on_images_and_logs_its_padding(token_run):
    workdir, summary = token_run
    rows = [r for r in _metrics(workdir) if "train/loss" in r]
    losses = [r["train/loss"] for r in rows]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # Steps 3-4 and 5-6 are timed windows (the first window compiles): their padding is the
    # source's own, computed here from its batches.
    source = TokenSource(6)
    for row in rows[1:]:
        steps = (row["step"] - 1, row["step"])
        masks = [source.batch(s - 1)["mask"] for s in steps]
        expected = 1 - np.mean([m.mean() for m in masks])
        assert row["perf/padding_fraction"] == pytest.approx(expected, rel=1e-6)
        assert 0 < row["perf/padding_flops_fraction"] < 1
    assert np.isfinite(summary["final"]["sw_euler_nfe2"])
    assert os.path.getsize(summary["samples_png"]) > 0
    assert summary["dataset"]["element_shape"] == [8, 8, 1]


class _StopAtThree(TokenSource):
    """The token source, sending this process a SIGTERM as it hands out the third batch: the
    loop finishes step 3, saves a checkpoint and stops (a preemption)."""

    def iterator(self, start_step: int = 0):
        for step, batch in enumerate(super().iterator(start_step), start_step):
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch


@pytest.mark.slow
def test_a_token_run_resumes_exactly(token_run, tmp_path):
    """Preempted at step 3 and resumed: the losses and final scores of the straight run."""
    workdir, summary = token_run
    resumed = str(tmp_path / "resumed")
    with registered():
        first = train_and_evaluate(_run_config(6), resumed, data=_StopAtThree(6))
        assert first["preempted"] and first["step"] == 3
        again = train_and_evaluate(_run_config(6), resumed, data=TokenSource(6))
    straight = {r["step"]: r["train/loss"] for r in _metrics(workdir) if "train/loss" in r}
    second = {r["step"]: r["train/loss"] for r in _metrics(resumed) if "train/loss" in r}
    assert second == straight
    assert again["final"] == summary["final"]


# -- sampling any size, another rotary rule ------------------------------------------------------


def _sample(workdir, **options):
    with registered():
        return sample_job.run_sampling(workdir, "euler", 2, num_samples=4, **options)


@pytest.mark.slow
def test_a_token_run_samples_any_size_and_any_rotary_rule(token_run):
    workdir, _ = token_run
    trained = _sample(workdir)
    wide = _sample(workdir, height=12, width=16)
    x = np.load(wide["files"][1])["x"]
    assert x.shape == (4, 12, 16, 1) and np.all(np.isfinite(x))
    assert wide["label"] == trained["label"] + "_12x16"
    assert wide["files"][0].endswith("euler_nfe2_12x16.png")
    assert "sampled at 12x16, not the 8x8" in wide["metrics_skipped"]
    # The rule replaces model.rope: at the trained grid (scale 1) NTK is plain RoPE; at twice
    # the grid it changes the samples. (float32 programs compiled apart: rounding of the
    # angles, far below the 0.01 the rules differ by.)
    same = _sample(workdir, rope="ntk")
    assert same["rope"] == "ntk" and same["files"][1].endswith("_rope-ntk.npz")
    np.testing.assert_allclose(
        np.load(same["files"][1])["x"], np.load(trained["files"][1])["x"], atol=1e-4
    )
    plain = np.load(_sample(workdir, height=16, width=16)["files"][1])["x"]
    ntk = np.load(_sample(workdir, height=16, width=16, rope="ntk")["files"][1])["x"]
    assert np.abs(ntk - plain).max() > 1e-2


@pytest.mark.slow
def test_sampling_options_are_checked_before_any_work(token_run, tmp_path):
    workdir, _ = token_run
    with pytest.raises(ValueError, match="give both --height and --width"):
        _sample(workdir, height=12)
    with pytest.raises(ValueError, match="distinct non-negative channel indices"):
        _sample(workdir, guidance_channels="0,0")
    with pytest.raises(ValueError, match="not a multiple of the patch 2"):
        _sample(workdir, height=9, width=8)
    with pytest.raises(ValueError, match="more than max_tokens=64"):
        _sample(workdir, height=18, width=18)
    with pytest.raises(ValueError, match="unknown"):
        _sample(workdir, rope="nope")
    # A network without a rope field: refused from its config.json, before anything is loaded.
    other = tmp_path / "mlp_run"
    other.mkdir()
    stored = json.loads(open(os.path.join(workdir, "config.json")).read())
    stored["model"] = {"name": "mlp", "hidden": 8, "depth": 1}
    (other / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="has no field 'rope'; a rotary spec is for any-res"):
        _sample(str(other), rope="ntk")


def test_a_network_whose_weights_fix_the_size_is_refused_another_size():
    config = _run_config(1)
    config.model = {"name": "mlp", "hidden": 8, "depth": 1}
    exp = Experiment(config, data=TokenSource(6))
    params = exp.init_state().params
    with pytest.raises(ValueError, match="model 'mlp'.* cannot take 12x16 images: its weights"):
        sample_job.SampleOptions(height=12, width=16)._sized(config, exp, params)
    assert sample_job.SampleOptions(8, 8)._sized(config, exp, params) is exp.data


def test_guidance_channels_are_an_eval_setting():
    for given, parsed in (("2,0", (0, 2)), ((0, 1), (0, 1)), (None, None)):
        config = _run_config(1)
        config.eval.guidance_channels = given
        assert eval_settings(config).guidance_channels == parsed
    config.eval.guidance_channels = (1, 1)
    with pytest.raises(ValueError, match="distinct non-negative channel indices"):
        eval_settings(config)
