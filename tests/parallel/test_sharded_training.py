"""Sharded training on 8 simulated CPU devices (subprocesses: the test process keeps 1 device).

``sharded_worker.py`` runs the real ``Experiment`` (pjit with per-leaf shardings from the
logical-axis rules) and reports numbers; the properties are asserted here.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from flowjax.training import Checkpointer, Experiment
from tests.parallel.synthetic import REPO, SyntheticImages, tiny_dit_config

WORKER = os.path.join(REPO, "tests", "parallel", "sharded_worker.py")


def _worker(mode, tmp_path, *extra):
    out = tmp_path / f"{mode}.json"
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8"
    )
    proc = subprocess.run(
        [sys.executable, WORKER, mode, str(out), *map(str, extra)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["device_count"] == 8
    return result


@pytest.mark.slow
def test_sharded_step_matches_single_device_and_shards_the_weights(tmp_path):
    r = _worker("step", tmp_path)
    ref = r.pop("reference")
    assert ref["compiles"] == [1, 0]
    for name, run in r.items():
        if name == "device_count":
            continue
        # Same initial parameters whatever the mesh (partitionable threefry), then the same
        # losses and updated parameters as one device, to float32 round-off.
        assert run["init_max_diff"] == 0.0, name
        np.testing.assert_allclose(run["losses"], ref["losses"], rtol=1e-5, err_msg=name)
        assert run["params_max_diff"] < 1e-5, (name, run["params_max_diff"])
        # A second call reuses the compiled step.
        assert run["compiles"] == [1, 0] and run["cache_sizes"] == [1, 1], name
        # FSDP (embed -> fsdp) and tensor parallelism (mlp -> tensor) really split the weight.
        assert run["fc1_spec"] == ["fsdp", "tensor"], name
        per_device = run["fc1_total_bytes"] // (run["fsdp"] * run["tensor"])
        assert run["fc1_shard_bytes"] == [per_device] * 8, name
        assert run["batch_spec"] == ["('data', 'fsdp')"], name
        # The whole state (params, Adam moments, EMA) per device is close to total / fsdp (only
        # biases and scalars are replicated); tensor parallelism splits the MLP and attention
        # weights further.
        per_device, total = run["state_bytes_per_device"], run["state_total_bytes"]
        assert total / (run["fsdp"] * run["tensor"]) <= per_device < 1.3 * total / run["fsdp"]


@pytest.mark.slow
def test_checkpoint_restores_bit_exactly_across_mesh_shapes(tmp_path):
    r = _worker("checkpoint", tmp_path, tmp_path)
    # 8 devices (data 2 x fsdp 4) -> 4 devices (2 x 2) -> 1 device, bit for bit.
    assert r["restored_4_equal"] and r["restored_4_devices"] == [4]
    assert r["restored_4_specs_match"]
    assert r["restored_1_equal"] and r["restored_1_devices"] == [1]
    # And onto this process's single device, straight from the 8-device checkpoint.
    config = tiny_dit_config()
    exp = Experiment(config, data=SyntheticImages(config.train.batch_size))
    state, meta = Checkpointer(str(tmp_path / "ckpt8")).restore(1, exp.abstract_state())
    saved = np.load(tmp_path / "saved.npz")
    leaves = jax.tree.leaves(state)
    assert meta["devices"] == 8 and len(leaves) == len(saved.files)
    for i, leaf in enumerate(leaves):
        np.testing.assert_array_equal(np.asarray(leaf), saved[f"arr_{i}"])


@pytest.mark.slow
def test_bad_configs_fail_clearly_and_imagenet_config_builds_before_compiling(tmp_path):
    r = _worker("errors", tmp_path)
    assert "has 3 devices but 8 are available" in r["mesh_product"]
    assert "batch_size=12 is not divisible by the data-parallel size 8" in r["batch"]
    assert "times grad_accum_steps=4" in r["accum"]
    assert "names mesh axis 'model'" in r["rule_axis"]
    assert "['block_0']['proj']['kernel']" in r["weight"] and "does not divide" in r["weight"]
    assert r["compiles"] == 0
    # configs/imagenet256_dit.py as a TPU user launches it, built here with eval_shape only:
    # DiT-XL/2 FSDP over all 8 devices, ~1/8 of the state per device, nothing compiled.
    im = r["imagenet"]
    assert im["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert abs(im["num_params"] - 675e6) / 675e6 < 0.01
    assert im["qkv_spec"] == ["fsdp", "None", "tensor", "None"]
    assert im["state_total_bytes"] / 8 <= im["state_bytes_per_device"]
    assert im["state_bytes_per_device"] < 1.01 * im["state_total_bytes"] / 8
    assert im["tokens_per_step"] == 256 * 256
    assert r["compiles_after_imagenet"] == 0


@pytest.mark.slow
def test_multistage_latent_configs_train_sharded_like_dit(tmp_path):
    # configs/imagenet256_dfm.py with a tiny network, its own mesh and rules over 8 devices:
    # the same losses and parameters as on one device, and its weights really split.
    r = _worker("multistage", tmp_path, "imagenet256_dfm")
    for name in ("imagenet256_dfm",):
        run = r[name]
        assert run["mesh"]["fsdp"] == 8, run["mesh"]
        assert np.all(np.isfinite(run["losses_8"]))
        np.testing.assert_allclose(run["losses_8"], run["losses_1"], rtol=1e-5)
        assert run["params_max_diff"] < 1e-5
        assert run["sharded_weights"] >= run["weights"] // 3, run


@pytest.mark.slow
def test_meanflow_step_with_its_two_row_groups_matches_one_device(tmp_path):
    # The MeanFlow step runs a plain pass on the e = s rows and the JVP on the rest (12 + 4
    # rows of a batch of 16 sharded 8 ways): the same losses and parameters as on one device.
    r = _worker("multistage", tmp_path, "imagenet256_dit+meanflow")
    run = r["imagenet256_dit+meanflow"]
    assert run["mesh"]["fsdp"] == 8, run["mesh"]
    assert np.all(np.isfinite(run["losses_8"]))
    np.testing.assert_allclose(run["losses_8"], run["losses_1"], rtol=1e-5)
    assert run["params_max_diff"] < 1e-5
