"""Velocity networks: zero output at initialisation and clear conditioning errors."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from flowjax.models import MLPVelocity, UNetVelocity, make_apply_fn, make_model

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize(
    "model, shape",
    [
        (MLPVelocity(hidden=32, depth=2), (4, 2)),
        (MLPVelocity(hidden=32, depth=1, num_classes=3), (4, 5)),
        (UNetVelocity(base_channels=8, channel_mults=(1, 2), num_res_blocks=1), (2, 8, 8, 1)),
    ],
)
def test_untrained_network_predicts_zero_velocity(model, shape):
    x = jax.random.normal(KEY, shape)
    t = jnp.full((shape[0],), 0.3)
    cond = None if model.num_classes is None else jnp.arange(shape[0]) % (model.num_classes + 1)
    params = model.init(KEY, x, t, cond)["params"]
    out = make_apply_fn(model)(params, x, t, cond)
    assert out.shape == x.shape
    assert float(jnp.max(jnp.abs(out))) == 0.0


def test_conditioning_errors_are_clear():
    x, t = jnp.zeros((2, 2)), jnp.zeros((2,))
    with pytest.raises(ValueError, match="takes no t_end"):
        MLPVelocity(hidden=8, depth=1).init(KEY, x, t, None, t_end=t)
    with pytest.raises(ValueError, match="average-velocity"):
        MLPVelocity(hidden=8, depth=1, use_end_time=True).init(KEY, x, t, None)
    with pytest.raises(ValueError, match="class-conditional"):
        MLPVelocity(hidden=8, depth=1, num_classes=3).init(KEY, x, t, None)
    with pytest.raises(ValueError, match="unconditional"):
        MLPVelocity(hidden=8, depth=1).init(KEY, x, t, jnp.zeros((2,), jnp.int32))


def test_average_velocity_network_depends_on_the_end_time():
    model = MLPVelocity(hidden=16, depth=1, use_end_time=True)
    x, t = jax.random.normal(KEY, (3, 2)), jnp.full((3,), 0.2)
    params = model.init(KEY, x, t, None, t_end=t)["params"]
    # Move the output layer off zero so the output reflects the conditioning.
    params = jax.tree.map(lambda p: p + 0.1, params)
    a = model.apply({"params": params}, x, t, None, t_end=t + 0.1)
    b = model.apply({"params": params}, x, t, None, t_end=t + 0.5)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4


def test_make_model_validates_options():
    cfg = ml_collections.ConfigDict(dict(name="mlp", hidden=8, depth=1, widht=3))
    with pytest.raises(ValueError, match="widht"):
        make_model(cfg)
    with pytest.raises(ValueError, match="unknown model"):
        make_model(ml_collections.ConfigDict(dict(name="resnet")))
    with pytest.raises(ValueError, match="class labels"):
        make_model(ml_collections.ConfigDict(dict(name="mlp", conditional=True)))
