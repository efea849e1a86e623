"""Logical-axis rules, mesh construction and throughput accounting (no compilation)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
import pytest
from jax.sharding import PartitionSpec as P

from flowjax import parallel
from flowjax.models import DiT
from flowjax.parallel.rules import normalize_rules, state_shardings
from flowjax.training import Experiment, accounting
from tests.parallel.synthetic import SyntheticImages, tiny_dit_config


def test_mesh_always_has_the_standard_axes_and_checks_the_device_count():
    mesh = parallel.make_mesh({"data": -1})
    assert mesh.axis_names == ("data", "fsdp", "tensor") and mesh.size == jax.device_count()
    with pytest.raises(ValueError, match="but 1 are available"):
        parallel.make_mesh({"data": 2})
    with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
        parallel.make_mesh({"data": -1, "fsdp": -1})


def test_rules_are_validated_against_the_mesh():
    mesh = parallel.make_mesh({"data": -1})
    assert parallel.validate_rules(parallel.DEFAULT_RULES, mesh) == parallel.DEFAULT_RULES
    with pytest.raises(ValueError, match="names mesh axis 'model'.*config.sharding.rules"):
        parallel.validate_rules((("embed", ("fsdp", "model")),), mesh)
    with pytest.raises(ValueError, match="must be a pair"):
        normalize_rules([("embed",)])
    assert normalize_rules([["batch", ["data", "fsdp"]], ["kv", None]]) == (
        ("batch", ("data", "fsdp")),
        ("kv", None),
    )


def test_state_shardings_follow_the_logical_names():
    """Params, both Adam moments and the EMA copy get the weight's sharding; scalars replicate."""
    config = tiny_dit_config()
    config.sharding.rules = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"))
    exp = Experiment(config, data=SyntheticImages(16))
    sh = exp.state_sharding
    fc1 = P("fsdp", "tensor")
    assert sh.params["block_0"]["fc1"]["kernel"].spec == fc1
    assert sh.ema_params["block_0"]["fc1"]["kernel"].spec == fc1
    is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)  # noqa: E731
    (adam,) = [x for x in jax.tree.leaves(sh.opt_state, is_leaf=is_adam) if is_adam(x)]
    assert adam.mu["block_0"]["fc1"]["kernel"].spec == fc1
    assert adam.nu["block_0"]["fc1"]["kernel"].spec == fc1
    assert adam.count.spec == P() and sh.step.spec == P() and sh.rng.spec == P()
    # "heads" has no rule here: replicated along that dimension.
    assert sh.params["block_0"]["qkv"]["kernel"].spec == P("fsdp", None, None, None)


def test_unannotated_models_are_replicated():
    config = tiny_dit_config()
    config.model = ml_collections.ConfigDict(
        dict(name="unet", base_channels=8, num_res_blocks=1, conditional=True)
    )
    exp = Experiment(config, data=SyntheticImages(16))
    assert all(s.spec == P() for s in jax.tree.leaves(exp.state_sharding))


def test_bytes_per_device_divides_sharded_leaves():
    mesh = parallel.make_mesh({"data": -1})
    model = DiT(patch_size=2, hidden_size=32, depth=1, num_heads=2)
    x, t = jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,))
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t)
    shardings = state_shardings(boxed, mesh, parallel.DEFAULT_RULES)
    shapes = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        nn.meta.unbox(boxed),
        shardings,
    )
    total = sum(s.size * s.dtype.itemsize for s in jax.tree.leaves(shapes))
    assert parallel.bytes_per_device(shapes) == total  # one device holds everything


def test_peak_flops_table_and_mfu_formula():
    assert accounting.peak_flops_per_device("TPU v4") == 275e12
    assert accounting.peak_flops_per_device("TPU v5 lite") == 197e12
    assert accounting.peak_flops_per_device("TPU v5p") == 459e12
    assert accounting.peak_flops_per_device("NVIDIA A100-SXM4-80GB") == 312e12
    assert accounting.peak_flops_per_device("NVIDIA H100 80GB HBM3") == 989e12
    assert accounting.peak_flops_per_device("cpu") is None
    cost = accounting.StepCost(model_flops=8e15, tokens=256 * 256, examples=256)
    rates = cost.rates(seconds_per_step=2.0, num_devices=8, peak_per_device=1e15)
    assert rates["tokens_per_s"] == 256 * 256 / 2.0
    assert rates["model_tflops_per_device"] == pytest.approx(500.0)
    assert rates["mfu"] == pytest.approx(0.5)
    assert "mfu" not in cost.rates(2.0, 8, None)


def test_dit_step_cost_counts_three_forward_passes_per_example():
    model = DiT(patch_size=2, hidden_size=64, depth=2, num_heads=4)
    cost = accounting.step_cost(model, (8, 8, 1), 32)
    forward = accounting.forward_flops_per_example(model, (8, 8, 1))
    assert cost.tokens == 16 * 32 and cost.model_flops == 3 * 32 * forward
