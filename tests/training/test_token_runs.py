"""Training on mixed-size token batches: FLOPs of valid tokens only and the padding logged
(closed form), and a short run of the stand-in any-resolution network on a token source that
trains, evaluates on images and resumes exactly."""

import json
import os
import signal

import numpy as np
import pytest

from flowjax.data.tokens import pack_images
from flowjax.training import accounting, train_and_evaluate
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
    config.model = {"name": "tiny_anyres", "patch_size": 2, "hidden_size": 8, "max_tokens": 16}
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
