"""configs/digits_bfm.py end to end (shrunk): train, evaluate per-segment samplers, sample with
``flowjax.sample``'s library (even split, per-segment form, inference FLOPs), then the Feature
Residual Approximation stage started from the first run, sampled with ``@frn``."""

import jax
import numpy as np
import pytest

from flowjax.config_files import load_config
from flowjax.training import load_run, train_and_evaluate
from flowjax.workflows import sample as sample_job


def _config(tmp_path, **blockwise):
    c = load_config("digits_bfm")
    c.data.data_dir = str(tmp_path / "tfds")
    c.model.update(dict(hidden_size=16, num_heads=2, feature_depth=1, projector_dim=16))
    c.objective.blockwise.encoder_cache_dir = str(tmp_path / "cache")
    c.objective.blockwise.update(blockwise)
    c.eval.feature_cache_dir = str(tmp_path / "cache")
    c.train.update(dict(batch_size=8, num_steps=3, log_every=1, eval_every=0, checkpoint_every=3))
    c.train.update(dict(progress=False, tensorboard=False, async_checkpoint=False, ema_decay=0.0))
    c.optim.warmup_steps = 0
    c.eval.update(dict(samplers=("euler:2", "euler:1|heun:2"), num_samples=16))
    return c


@pytest.mark.slow
def test_digits_bfm_trains_samples_and_runs_the_frn_stage(tmp_path):
    stage1 = str(tmp_path / "stage1")
    summary = train_and_evaluate(_config(tmp_path), stage1)
    assert {"fd_euler_nfe2", "fd_euler_nfe1+heun_nfe2"} <= set(summary["final"])

    out = sample_job.run_sampling(stage1, "euler", 4, num_samples=16)
    assert out["label"] == "euler_nfe4" and out["network_calls"] == {"full": 4}
    _, exp, _, _ = load_run(stage1)
    per_eval = exp.model.forward_flops((8, 8, 1))
    cfg = 2.0 if exp.config.eval.cfg_scale != 1.0 else 1.0
    assert out["inference_flops_per_sample"] == pytest.approx(4 * per_eval * cfg)
    assert out["grid"] == [[0.0, 0.25, 0.5], [0.5, 0.75, 1.0]]
    spec = sample_job.run_sampling(stage1, None, None, spec="euler:1|heun:2", num_samples=16)
    assert spec["label"] == "euler_nfe1+heun_nfe2" and spec["nfe"] == 3
    with pytest.raises(ValueError, match="does not split evenly over K=2"):
        sample_job.run_sampling(stage1, "euler", 3, num_samples=16)
    with pytest.raises(ValueError, match="BOSS and learned grids are for single-network"):
        sample_job.run_sampling(stage1, "boss", 4, num_samples=16)

    stage2 = str(tmp_path / "stage2")
    c2 = _config(tmp_path, frn=True)
    c2.init.workdir = stage1
    c2.eval.samplers = ("euler:2@frn",)
    train_and_evaluate(c2, stage2)
    _, _, p1, _ = load_run(stage1)
    _, _, p2, _ = load_run(stage2)
    for name in p1:  # only G_psi moved (the EMA of a constant stays it, to round-off)
        diff = max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(p1[name]), jax.tree.leaves(p2[name]))
        )
        assert (diff > 1e-4) if name == "frn" else (diff < 1e-6), (name, diff)
    frn = sample_job.run_sampling(stage2, None, None, spec="euler:4@frn", num_samples=16)
    assert frn["network_calls"] == {"features": 2, "frn": 4}
    full = sample_job.run_sampling(stage2, None, None, spec="euler:4@full", num_samples=16)
    assert frn["inference_flops_per_sample"] != full["inference_flops_per_sample"]
