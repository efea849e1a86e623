"""Two processes joined by ``jax.distributed.initialize`` on 127.0.0.1 train a tiny DiT.

One of them receives SIGTERM; both must stop after the same step and save one checkpoint; a
single process then restores it (onto a 1-device mesh) and continues with the losses and
parameters of an uninterrupted single-process run.
"""

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import portpicker
import pytest

from flowjax.training import Checkpointer, Experiment, read_metrics, train_and_evaluate
from tests.parallel.synthetic import REPO, SyntheticImages, tiny_dit_config

WORKER = os.path.join(REPO, "tests", "parallel", "multiprocess_worker.py")


def _launch(workdir, nprocs=2, devices_each=2, stop=3):
    port = portpicker.pick_unused_port()
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(i), str(nprocs), str(port), str(workdir), str(stop)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(nprocs)
    ]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=600)
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for code, _, err in outs:
        assert code == 0, err[-4000:]
    return [json.loads(out.strip().splitlines()[-1]) for _, out, _ in outs]


def _losses(workdir):
    return {r["step"]: r["train/loss"] for r in read_metrics(str(workdir)) if "train/loss" in r}


def _params(workdir, config, step):
    exp = Experiment(config, data=SyntheticImages(config.train.batch_size))
    ckpt = Checkpointer(os.path.join(str(workdir), "checkpoints"), async_save=False)
    state, _ = ckpt.restore(step, exp.abstract_state())
    ckpt.close()
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


@pytest.mark.slow
def test_two_processes_preempt_together_and_one_process_resumes(tmp_path):
    config = tiny_dit_config(preemption_check_every=4, checkpoint_every=0)
    multi = tmp_path / "multi"
    summaries = _launch(multi)
    # SIGTERM reached only the last process during step 3; the processes agree at step 4.
    for s in summaries:
        assert s["devices"] == 4 and s["preempted"] and s["step"] == 4, s
    assert Checkpointer(str(multi / "checkpoints")).steps() == [4]
    records = [r for r in read_metrics(str(multi)) if "train/loss" in r]
    assert [r["step"] for r in records] == [2, 4]  # written once, by process 0
    # Throughput from the second log on (the first interval includes compilation); no MFU on
    # a CPU, whose peak FLOP/s is not in the table.
    assert "perf/tokens_per_s" not in records[0]
    assert records[1]["perf/tokens_per_s"] > 0 and records[1]["perf/model_tflops_per_device"] > 0
    tokens_per_example = 16  # 8x8 images in 2x2 patches
    assert records[1]["perf/tokens_per_s"] == pytest.approx(
        tokens_per_example * records[1]["perf/examples_per_s"]
    )
    assert "perf/mfu" not in records[1]

    resumed = train_and_evaluate(config, str(multi), data=SyntheticImages(16))
    assert resumed["steps_run_this_session"] == 4 and resumed["step"] == 8

    straight = tmp_path / "straight"
    train_and_evaluate(config, str(straight), data=SyntheticImages(16))
    a, b = _losses(multi), _losses(straight)
    assert sorted(a) == sorted(b) == [2, 4, 6, 8]
    np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(b)], rtol=1e-5)
    chex.assert_trees_all_close(
        _params(multi, config, 8), _params(straight, config, 8), rtol=0, atol=1e-5
    )
