"""The any-resolution configs (digits_fitv2, digits_nextdit, photos_fitv2, imagenet256_fitv2,
imagenet256_nextdit): each builds its data and states its recipe; the data's patch, token
limit and the network's agree. Building the networks needs ``flowjax.models.fitv2`` /
``nextdit``: those parts are skipped where the models are not installed."""

from __future__ import annotations

import importlib.util

import jax
import numpy as np
import pytest

from flowjax.config_files import load_config
from flowjax.data import make_source
from flowjax.data.mixed_sizes import DigitsMixedSource, PhotosMixedSource
from flowjax.training.validate import validate_config

MIXED = {
    "digits_fitv2": ("fitv2", DigitsMixedSource, "logit_normal,loc=0,scale=1"),
    "digits_nextdit": ("nextdit", DigitsMixedSource, "uniform"),
    "photos_fitv2": ("fitv2", PhotosMixedSource, "logit_normal,loc=0,scale=1"),
}


def _needs_model(name: str) -> None:
    """Skip unless the network ``name`` is installed (it is registered when it is)."""
    if importlib.util.find_spec(f"flowjax.models.{name}") is None:
        pytest.skip(f"flowjax.models.{name} is not installed")


@pytest.mark.parametrize("config", sorted(MIXED))
def test_mixed_size_configs_build_their_data_and_agree_with_the_network(config):
    model, source_cls, time_sampler = MIXED[config]
    c = validate_config(load_config(config))
    source = make_source(c.data, batch_size=4, seed=0)
    assert isinstance(source, source_cls) and source.kind == "images"
    assert c.model.name == model and c.objective.name == "flow_matching"
    assert c.objective.time_sampler == time_sampler
    # the data's patch and token limit are the network's; RoPE's train grid is sqrt(L_max)
    p = c.model.patch_size
    assert c.data.patch_size == source.patch_size == p
    assert c.data.max_tokens == c.model.max_tokens == c.model.train_grid**2
    assert max((h // p) * (w // p) for h, w in source.sizes) <= c.model.max_tokens
    assert source.element_shape[:2] == tuple(c.data.eval_size)
    assert c.model.conditional == (source.num_classes is not None)
    batch = source.get_batch(0)
    assert batch["x1"].shape[-1] == p * p * source.element_shape[-1]
    assert batch["x1"].shape[1] in {b.length for b in source.buckets}


@pytest.mark.parametrize("config", ["imagenet256_fitv2", "imagenet256_nextdit"])
def test_imagenet_anyres_configs_state_the_published_recipe(config):
    c = validate_config(load_config(config))
    assert c.data.kind == "latents" and c.model.conditional
    assert (c.model.patch_size, c.model.max_tokens, c.model.train_grid) == (2, 256, 16)
    assert c.model.dtype == "bfloat16" and c.model.param_dtype == "float32"
    assert (c.optim.name, c.optim.lr, c.optim.b1, c.optim.b2) == ("adamw", 1e-4, 0.9, 0.999)
    assert c.optim.weight_decay == 0.0 and c.train.ema_decay == 0.9999
    assert c.train.batch_size == 256 and c.objective.label_dropout == 0.1
    assert dict(c.sharding.rules)["batch"] == ("data", "fsdp")
    if config == "imagenet256_fitv2":  # ALGORITHMS §13
        assert (c.model.hidden_size, c.model.depth, c.model.num_heads) == (1152, 36, 16)
        assert c.optim.grad_clip == 1.0 and c.optim.warmup_steps == 50_000
        assert c.objective.time_sampler == "logit_normal,loc=0,scale=1"
    else:  # ALGORITHMS §14
        assert (c.model.hidden_size, c.model.depth, c.model.num_heads) == (2304, 24, 32)
        assert c.optim.grad_clip == 2.0 and c.objective.time_sampler == "uniform"
    with pytest.raises(ValueError, match="flowjax latents"):
        make_source(c.data, batch_size=4, seed=0)  # the latent set is the user's to make


@pytest.mark.slow
@pytest.mark.parametrize("config", ["digits_fitv2", "digits_nextdit"])
def test_mixed_size_configs_train_on_batches_of_two_buckets(config):
    """A shrunk network of the config takes two train steps on batches of different padded
    lengths (the step is traced once per bucket) with finite losses."""
    _needs_model(MIXED[config][0])
    from flowjax.training.experiment import Experiment

    c = load_config(config)
    c.model.update(dict(hidden_size=32, depth=1, num_heads=2))
    c.train.update(dict(batch_size=4, num_steps=2))
    c.mesh = dict(data=1, fsdp=1, tensor=1)
    exp = Experiment(validate_config(c))
    lengths = {exp.data.plan(k)[0].length: k for k in range(50)}
    assert len(lengths) >= 2
    state, step = exp.init_state(), exp.jit_train_step()
    for k in list(lengths.values())[:2]:
        state, metrics = step(state, exp.global_batch(exp.data.get_batch(k)))
        assert np.isfinite(float(metrics["loss"]))


@pytest.mark.slow
def test_imagenet256_fitv2_has_the_published_parameter_count():
    """FiTv2-XL/2: about 671M parameters (ALGORITHMS §13), on 32x32x4 latents."""
    _needs_model("fitv2")
    from flowjax.models.registry import init_params, make_model

    c = load_config("imagenet256_fitv2")
    model = make_model(c.model, num_classes=1000)
    shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0), (32, 32, 4), 1000))
    count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
    assert count == pytest.approx(671e6, rel=0.01)
