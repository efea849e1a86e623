"""configs/imagenet256_bfm.py (shrunk) trains a few steps on 8 simulated CPU devices, with FSDP
and tensor parallelism over the blockwise network, and its segment-wise sampler runs on the
sharded parameters (a subprocess: the device count is set before JAX starts)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.parallel.synthetic import REPO

SCRIPT = r"""
import json, sys
import jax, numpy as np
from tests.parallel.synthetic import SyntheticImages
from flowjax.config_files import load_config
from flowjax.training import Experiment
from flowjax.evaluation.evaluator import Evaluator

class Latents(SyntheticImages):
    element_shape, num_classes, name = (32, 32, 4), 1000, "latents"
    has_eval_data = True

c = load_config("imagenet256_bfm")
c.model.update(dict(hidden_size=32, num_heads=2, feature_depth=1, segment_depth=1, frn_depth=1,
                    projector_dim=16, dtype="float32"))
c.mesh = dict(data=2, fsdp=2, tensor=2)
c.train.update(dict(batch_size=8, num_steps=3))
c.eval.update(dict(samplers=("euler:6", "euler:6@frn"), num_samples=8, cfg_scale=1.5))
exp = Experiment(c, data=Latents(8))
state = exp.init_state()
step = exp.jit_train_step()
losses = []
for _, batch in zip(range(3), exp.batches(0)):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
ev = Evaluator.for_experiment(c, exp, "unused")
samples = ev.sample(state.ema_params)
kernel = state.params["segment_5"]["block_0"]["fc1"]["kernel"]
out = dict(
    devices=jax.device_count(), losses=losses, fc1_spec=[str(a) for a in kernel.sharding.spec],
    shapes={k: list(v.shape) for k, v in samples.items()},
    finite=all(bool(np.isfinite(v).all()) for v in samples.values()),
    segments=sorted(k for k in state.params if k.startswith("segment_")),
    calls=ev.network_calls, flops=exp.step_cost().model_flops,
)
json.dump(out, open(sys.argv[1], "w"))
"""


@pytest.mark.slow
def test_imagenet_bfm_config_trains_and_samples_on_eight_devices(tmp_path):
    out = tmp_path / "out.json"
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8"
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)],
        cwd=REPO,
        env=dict(env, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["devices"] == 8
    assert len(r["losses"]) == 3 and all(np.isfinite(r["losses"])) and max(r["losses"]) < 10
    assert r["fc1_spec"] == ["fsdp", "tensor"]  # the weights really are split
    assert r["segments"] == [f"segment_{k}" for k in range(6)]  # K = 6, the official setting
    assert r["shapes"] == {"euler_nfe6": [8, 32, 32, 4], "euler_nfe6_frn": [8, 32, 32, 4]}
    assert r["finite"]
    assert r["calls"] == {"euler_nfe6": {"full": 6}, "euler_nfe6_frn": {"features": 6, "frn": 6}}
    assert r["flops"] > 0
