"""Subprocess worker for the 8-device tests: ``python sharded_worker.py MODE OUT_JSON [DIR]``.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set before JAX starts (the test
process itself keeps its single device). Each mode measures and writes numbers to ``OUT_JSON``;
the assertions live in ``test_sharded_training.py``.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
from jax import monitoring

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from flowjax import parallel  # noqa: E402
from flowjax.config_files import load_config  # noqa: E402
from flowjax.training import Checkpointer, Experiment  # noqa: E402
from tests.parallel.synthetic import SyntheticImages, tiny_dit_config  # noqa: E402

COMPILES = [0]


def _count_compiles(event, duration, **kwargs):
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILES[0] += 1


monitoring.register_event_duration_secs_listener(_count_compiles)


def _config(mesh, **train):
    c = tiny_dit_config(**train)
    c.mesh = dict(mesh)
    return c


def _host(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _experiment(mesh, devices=None, **train):
    c = _config(mesh, **train)
    return Experiment(c, data=SyntheticImages(c.train.batch_size), devices=devices)


def _run_steps(exp, num_steps):
    state = exp.init_state()
    init = _host(state.params)
    step = exp.jit_train_step()
    batches = exp.data.iterator(0)
    losses, cache_sizes, compiles = [], [], []
    for _ in range(num_steps):
        batch = exp.global_batch(next(batches))
        before = COMPILES[0]
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        compiles.append(COMPILES[0] - before)
        cache_sizes.append(step._cache_size())
    return state, init, dict(losses=losses, cache_sizes=cache_sizes, compiles=compiles)


def mode_step(out):
    devices = jax.devices()
    assert len(devices) == 8, devices
    single = {"data": -1, "fsdp": 1, "tensor": 1}
    ref_state, ref_init, ref = _run_steps(_experiment(single, devices[:1]), 2)
    ref_params = _host(ref_state.params)
    results = {"reference": ref}
    for name, mesh in {
        "data2_fsdp4": {"data": 2, "fsdp": 4, "tensor": 1},
        "data1_fsdp8": {"data": 1, "fsdp": 8, "tensor": 1},
        "data2_fsdp2_tensor2": {"data": 2, "fsdp": 2, "tensor": 2},
    }.items():
        exp = _experiment(mesh)
        state, init, run = _run_steps(exp, 2)
        params = _host(state.params)
        fc1 = state.params["block_0"]["fc1"]["kernel"]
        abstract = exp.abstract_state()
        total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
        run.update(
            init_max_diff=max(float(np.max(np.abs(a - b))) for a, b in zip(init, ref_init)),
            params_max_diff=max(float(np.max(np.abs(a - b))) for a, b in zip(params, ref_params)),
            fsdp=mesh["fsdp"],
            tensor=mesh["tensor"],
            fc1_shape=list(fc1.shape),
            fc1_spec=[str(s) for s in fc1.sharding.spec],
            fc1_shard_bytes=[int(s.data.nbytes) for s in fc1.addressable_shards],
            fc1_total_bytes=int(fc1.nbytes),
            state_bytes_per_device=parallel.bytes_per_device(abstract),
            state_total_bytes=int(total),
            batch_spec=[str(s) for s in exp.batch_sharding.spec],
        )
        results[name] = run
    out.update(results)


def mode_checkpoint(out, directory):
    devices = jax.devices()
    exp8 = _experiment({"data": 2, "fsdp": 4, "tensor": 1})
    state8, _, _ = _run_steps(exp8, 1)
    saved = _host(state8)
    ckpt8 = Checkpointer(os.path.join(directory, "ckpt8"), async_save=False)
    ckpt8.save(1, state8, {"devices": 8})
    ckpt8.close()
    np.savez(os.path.join(directory, "saved.npz"), *saved)

    exp4 = _experiment({"data": 2, "fsdp": 2, "tensor": 1}, devices[:4])
    state4, _ = Checkpointer(os.path.join(directory, "ckpt8")).restore(1, exp4.abstract_state())
    out["restored_4_equal"] = all(np.array_equal(a, b) for a, b in zip(_host(state4), saved))
    out["restored_4_devices"] = sorted(
        {len(x.sharding.device_set) for x in jax.tree.leaves(state4)}
    )
    out["restored_4_specs_match"] = all(
        x.sharding == s
        for x, s in zip(jax.tree.leaves(state4), jax.tree.leaves(exp4.state_sharding))
    )
    ckpt4 = Checkpointer(os.path.join(directory, "ckpt4"), async_save=False)
    ckpt4.save(1, state4, {"devices": 4})
    ckpt4.close()

    exp1 = _experiment({"data": -1, "fsdp": 1, "tensor": 1}, devices[:1])
    state1, _ = Checkpointer(os.path.join(directory, "ckpt4")).restore(1, exp1.abstract_state())
    out["restored_1_equal"] = all(np.array_equal(a, b) for a, b in zip(_host(state1), saved))
    out["restored_1_devices"] = sorted(
        {len(x.sharding.device_set) for x in jax.tree.leaves(state1)}
    )


def mode_errors(out):
    cases = {
        "mesh_product": dict(mesh={"data": 3, "fsdp": 1, "tensor": 1}),
        "batch": dict(mesh={"data": 8, "fsdp": 1, "tensor": 1}, batch_size=12),
        "accum": dict(mesh={"data": 8}, batch_size=16, grad_accum_steps=4),
        "rule_axis": dict(mesh={"data": 8}, rules=(("batch", "data"), ("embed", "model"))),
        "weight": dict(mesh={"data": 1, "fsdp": 1, "tensor": 8}),  # 2 heads over 8 devices
    }
    for name, case in cases.items():
        train = {k: case[k] for k in ("batch_size", "grad_accum_steps") if k in case}
        c = _config(case["mesh"], **train)
        if "rules" in case:
            c.sharding.rules = case["rules"]
        try:
            Experiment(c, data=SyntheticImages(c.train.batch_size))
            out[name] = None
        except ValueError as err:
            out[name] = str(err)
    out["compiles"] = COMPILES[0]
    out["imagenet"] = imagenet_setup()
    out["compiles_after_imagenet"] = COMPILES[0]


class _LatentStandIn:
    """Shape and classes of the ImageNet-256 SD-VAE latents; never read (setup only)."""

    kind, name, element_shape, num_classes = "images", "latents", (32, 32, 4), 1000


def imagenet_setup():
    """``configs/imagenet256_dit.py`` as shipped, on 8 devices: abstract state and shardings."""
    exp = Experiment(load_config("imagenet256_dit"), data=_LatentStandIn())
    abstract = exp.abstract_state()
    total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
    params = sum(x.size for x in jax.tree.leaves(abstract.params))
    return dict(
        mesh=dict(exp.mesh.shape),
        num_params=int(params),
        state_total_bytes=int(total),
        state_bytes_per_device=parallel.bytes_per_device(abstract),
        qkv_spec=[str(a) for a in exp.state_sharding.params["block_0"]["qkv"]["kernel"].spec],
        model_flops_per_step=exp.step_cost().model_flops,
        tokens_per_step=exp.step_cost().tokens,
    )


class _Latents(SyntheticImages):
    """Synthetic labelled ``32x32x4`` latents (the ImageNet latent configs' element shape)."""

    element_shape, num_classes = (32, 32, 4), 1000


def _shrunk(name: str):
    """``configs/<name>.py`` as shipped (mesh, rules, objective) with a tiny network;
    ``<name>+meanflow``: that config with the MeanFlow objective (plain squared error, label
    dropout on the leading rows, guidance in the target)."""
    name, _, objective = name.partition("+")
    c = load_config(name)
    if objective == "meanflow":
        c.objective = load_config("toy2d_meanflow").objective
        c.objective.label_dropout = 0.25
        c.objective.meanflow.update(omega=0.6, kappa=0.3)  # plain squared error: p = 0
    tiny = dict(variant=None, hidden_size=32, depth=1, num_heads=2, dtype="float32")
    tiny.update(feature_depth=1, segment_depth=1, frn_depth=1, projector_dim=32)
    if c.model.name == "dit":  # the DiT config names a variant: give the sizes instead
        c.model.update({k: tiny[k] for k in ("hidden_size", "depth", "num_heads")})
    c.model.update({k: v for k, v in tiny.items() if k in c.model})
    c.train.update(dict(batch_size=16, num_steps=3, progress=False, tensorboard=False))
    return c


def mode_multistage(out, names):
    """Each multi-stage latent config: 3 steps on its own mesh over 8 devices and on 1 device."""
    for name in names:
        c = _shrunk(name)
        runs = {}
        for label, devices in (("8", jax.devices()), ("1", jax.devices()[:1])):
            exp = Experiment(c, data=_Latents(16), devices=devices)
            state, _, info = _run_steps(exp, 3)
            runs[label] = dict(info, params=_host(state.params))
            if label == "8":
                specs = jax.tree.leaves(
                    jax.tree.map(lambda sh: tuple(map(str, sh.spec)), exp.state_sharding.params),
                    is_leaf=lambda x: isinstance(x, tuple),
                )
                out[name] = dict(
                    mesh=dict(exp.mesh.shape),
                    losses_8=info["losses"],
                    sharded_weights=sum(any(a != "None" for a in sp) for sp in specs),
                    weights=len(specs),
                )
        diff = max(
            float(np.max(np.abs(a - b))) for a, b in zip(runs["8"]["params"], runs["1"]["params"])
        )
        out[name].update(losses_1=runs["1"]["losses"], params_max_diff=diff)


if __name__ == "__main__":
    mode, path = sys.argv[1], sys.argv[2]
    result: dict = {"device_count": jax.device_count()}
    if mode == "step":
        mode_step(result)
    elif mode == "checkpoint":
        mode_checkpoint(result, sys.argv[3])
    elif mode == "errors":
        mode_errors(result)
    elif mode == "multistage":
        mode_multistage(result, sys.argv[3:])
    else:
        raise SystemExit(f"unknown mode {mode}")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
