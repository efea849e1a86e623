"""The training loop: outputs, exact resume, preemption, non-finite losses, corrupt checkpoints.

These run the real loop (orbax, the jitted step, the evaluator) on a 16-wide MLP.
"""

import json
import logging
import os
import signal

import chex
import jax
import numpy as np
import pytest

from flowjax.data import ToySource
from flowjax.training import (
    Checkpointer,
    Experiment,
    NonFiniteLossError,
    SetupError,
    read_metrics,
    train_and_evaluate,
)


class _Wrapped:
    """A data source that delegates to the toy source and meddles with selected batches."""

    def __init__(self, config, meddle):
        self.inner = ToySource(
            config.data.name, batch_size=config.train.batch_size, seed=config.seed
        )
        self.meddle = meddle
        for attr in ("kind", "name", "element_shape", "num_classes", "eval_array"):
            setattr(self, attr, getattr(self.inner, attr))

    def iterator(self, start_step=0):
        for step, batch in enumerate(self.inner.iterator(start_step), start_step):
            yield self.meddle(step, batch)


def _params(workdir, config, step=None):
    exp = Experiment(config)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    abstract = exp.abstract_state()
    state = ckpt.restore(step, abstract)[0] if step else ckpt.restore_latest(abstract)[0]
    ckpt.close()
    return state


def test_job_writes_its_outputs(tmp_path, make_config):
    config = make_config(tensorboard=True)
    summary = train_and_evaluate(config, str(tmp_path))
    for name in ("summary.json", "samples.png", "config.json", "metrics.jsonl"):
        assert (tmp_path / name).exists(), name
    assert os.listdir(tmp_path / "tensorboard")
    assert Checkpointer(str(tmp_path / "checkpoints")).steps() == [10, 20]
    records = read_metrics(str(tmp_path))
    assert [r["step"] for r in records if "train/loss" in r] == [5, 10, 15, 20]
    assert any("eval/sw_euler_nfe2" in r for r in records)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["final"] == summary["final"] and on_disk["step"] == 20
    assert set(summary["untrained"]) == {"sw_euler_nfe2", "mmd_euler_nfe2", "energy_euler_nfe2"}
    # Both the EMA weights (final) and the raw weights (final_raw) are scored.
    assert (
        set(on_disk["final_raw"]) == set(summary["final"])
        and on_disk["final_raw"] != on_disk["final"]
    )
    assert any("eval_raw/sw_euler_nfe2" in r for r in records)


def test_rerunning_a_finished_job_does_not_train_again(tmp_path, make_config):
    config = make_config()
    train_and_evaluate(config, str(tmp_path))
    summary = train_and_evaluate(config, str(tmp_path))
    assert summary["steps_run_this_session"] == 0 and summary["step"] == 20


def test_preempted_and_resumed_run_is_bit_identical(tmp_path, make_config):
    """SIGTERM at step 7 (mid-interval): save, stop, resume -> same params as 20 straight steps."""
    config = make_config()
    straight = tmp_path / "straight"
    train_and_evaluate(config, str(straight))

    def sigterm_at_7(step, batch):
        if step == 6:  # the 7th batch: the loop finishes step 7, then honours the signal
            os.kill(os.getpid(), signal.SIGTERM)
        return batch

    interrupted = tmp_path / "interrupted"
    first = train_and_evaluate(config, str(interrupted), data=_Wrapped(config, sigterm_at_7))
    assert first["preempted"] and first["step"] == 7
    assert Checkpointer(str(interrupted / "checkpoints")).steps() == [7]
    assert not (interrupted / "summary.json").exists()
    second = train_and_evaluate(config, str(interrupted))
    assert second["steps_run_this_session"] == 13

    # The whole state (parameters, EMA, optimizer moments, step), bit for bit and same tree.
    chex.assert_trees_all_equal(_params(str(straight), config), _params(str(interrupted), config))
    # The interrupted run's metrics file has exactly one record per logged step.
    steps = [r["step"] for r in read_metrics(str(interrupted)) if "train/loss" in r]
    assert steps == sorted(set(steps))


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, make_config):
    config = make_config(checkpoint_every=5, log_every=4)

    def nan_from_13(step, batch):
        if step >= 12:  # batch 12 is consumed by step 13
            batch = {"x1": batch["x1"] * np.nan}
        return batch

    with pytest.raises(NonFiniteLossError, match="at step 13") as info:
        train_and_evaluate(config, str(tmp_path), data=_Wrapped(config, nan_from_13))
    assert "step 10" in str(info.value)
    assert Checkpointer(str(tmp_path / "checkpoints")).steps() == [5, 10]
    state = _params(str(tmp_path), config)
    assert int(state.step) == 10
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(state.params))


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(tmp_path, make_config, caplog):
    config = make_config()
    train_and_evaluate(config, str(tmp_path))
    for root, _, files in os.walk(tmp_path / "checkpoints" / "20"):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"\x00garbage")
    config.train.num_steps = 24
    with caplog.at_level(logging.WARNING):
        summary = train_and_evaluate(config, str(tmp_path))
    assert "step 20" in caplog.text and "unreadable" in caplog.text
    assert len(os.listdir(tmp_path / "checkpoints.unreadable")) == 1  # kept, moved aside
    assert summary["steps_run_this_session"] == 14  # resumed from step 10


def test_setup_errors_are_clear(tmp_path, make_config):
    config = make_config()
    config.data.kind = "tfds"
    config.data.name = "cifar10"
    config.data.data_dir = str(tmp_path / "tfds")
    with pytest.raises(SetupError, match="tfds build cifar10"):
        train_and_evaluate(config, str(tmp_path / "w"))
    config = make_config(batch_size=30)
    config.mesh = {"data": -1, "fsdp": 1}
    config.objective.time_sampler = "lognormal"
    with pytest.raises(SetupError, match="unknown time sampler"):
        train_and_evaluate(config, str(tmp_path / "w2"))


def test_untrained_baseline_uses_the_cheapest_sampler_and_equals_the_reference(make_config):
    # The summary's untrained baseline is scored with the fewest-NFE sampler: justified because
    # a freshly initialised network (zero output layer) leaves the noise unchanged under any
    # solver, so the cheap and the reference samplers give identical samples.
    from flowjax.evaluation.evaluator import Evaluator
    from flowjax.training import Experiment

    config = make_config()
    config.eval.samplers = ("heun:4", "euler:1", "rk4:8")
    exp = Experiment(config)
    ev = Evaluator.for_experiment(config, exp, "/nonexistent")
    assert ev.baseline_label == "euler_nfe1" and ev.reference_label == "rk4_nfe8"
    samples = ev.sample(exp.init_state().ema_params, [ev.baseline_label, ev.reference_label])
    np.testing.assert_array_equal(samples["euler_nfe1"], np.asarray(ev.x0))
    np.testing.assert_array_equal(samples["rk4_nfe8"], np.asarray(ev.x0))


def test_per_segment_sampler_strings_need_an_objective_with_its_own_sampler(make_config):
    from flowjax.evaluation.evaluator import Evaluator
    from flowjax.training import Experiment

    config = make_config()
    exp = Experiment(config)
    for spec in ("euler:1|euler:1", "euler:2@frn"):
        config.eval.samplers = (spec,)
        refused = "for objectives whose own sampler|the options of objective FlowMatching: none"
        with pytest.raises(ValueError, match=refused):
            Evaluator.for_experiment(config, exp, "/nonexistent")


def test_init_state_compiles_once_and_is_deterministic(make_config):
    from flowjax.training import Experiment

    exp = Experiment(make_config())
    first, second = exp.init_state(), exp.init_state()
    assert exp._jit_init._cache_size() == 1
    chex.assert_trees_all_equal(first.params, second.params)
