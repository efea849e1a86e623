"""Flow-matching objective, losses and classifier-free guidance (docs/maths/flow_matching.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowjax import data as data_lib
from flowjax import objectives, paths
from flowjax.config_files import load_config
from flowjax.objectives import L2, FlowMatching, PseudoHuber, cfg_velocity, drop_labels
from flowjax.objectives.flow_matching import binned_means
from flowjax.time import laws

KEY = jax.random.PRNGKey(0)


def point_mass_velocity(mu):
    """Exact marginal velocity of point-mass data at mu: v(x, t) = (mu - x) / (1 - t)."""

    def apply_fn(params, x, t, cond, **kwargs):
        return (mu - x) / (1.0 - t[:, None])

    return apply_fn


def test_exact_velocity_has_zero_loss_on_point_mass_data():
    mu = jnp.array([1.5, -0.5, 2.0])
    batch = {"x1": jnp.broadcast_to(mu, (256, 3))}
    obj = FlowMatching(time_sampler=laws.Uniform(t_max=0.99))
    loss, metrics = obj.loss_fn(None, point_mass_velocity(mu), batch, KEY)
    assert float(loss) < 1e-9
    assert set(metrics) >= {"loss", "loss_t0", "loss_t3"}


def test_marginal_velocity_minimises_the_loss_on_gaussian_data():
    """For x1 ~ N(mu, q^2), the closed-form marginal velocity beats any perturbation of it."""
    mu, q = 1.0, 0.5

    def gaussian_velocity(scale):
        def apply_fn(params, x, t, cond, **kwargs):
            t = t[:, None]
            coef = (t * q**2 - (1 - t)) / (t**2 * q**2 + (1 - t) ** 2)
            return mu + scale * coef * (x - t * mu)

        return apply_fn

    x1 = mu + q * jax.random.normal(jax.random.PRNGKey(1), (20000, 1))
    obj = FlowMatching()
    losses = [
        float(obj.loss_fn(None, gaussian_velocity(s), {"x1": x1}, KEY)[0]) for s in (0.8, 1.0, 1.2)
    ]
    assert losses[1] < losses[0] and losses[1] < losses[2]


def test_loss_uses_the_path_target():
    """With an oracle returning the path's conditional target, the loss is zero for any path."""
    x1 = jax.random.normal(KEY, (64, 4))
    for path in (paths.LinearPath(), paths.CosinePath()):
        captured = {}

        def apply_fn(params, x, t, cond, captured=captured, **kwargs):
            captured["xt"], captured["t"] = x, t
            return jnp.zeros_like(x)

        obj = FlowMatching(path=path)
        key = jax.random.PRNGKey(3)
        loss, _ = obj.loss_fn(None, apply_fn, {"x1": x1}, key)
        k_t, k_noise, _, _ = jax.random.split(key, 4)
        x0 = jax.random.normal(k_noise, x1.shape)
        np.testing.assert_allclose(
            captured["xt"], path.interpolate(x0, x1, captured["t"]), rtol=1e-6, atol=1e-6
        )
        target = path.target_velocity(x0, x1, captured["t"])
        np.testing.assert_allclose(loss, jnp.mean(target**2), rtol=1e-5)


def test_label_dropout_rate_and_extremes():
    labels = jnp.arange(10000) % 7
    dropped = drop_labels(KEY, labels, 0.25, null_label=7)
    frac = float(jnp.mean(dropped == 7))
    assert abs(frac - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 10000)
    kept = dropped != 7
    assert bool(jnp.all(dropped[kept] == labels[kept]))
    assert bool(jnp.all(drop_labels(KEY, labels, 0.0, 7) == labels))
    assert bool(jnp.all(drop_labels(KEY, labels, 1.0, 7) == 7))


def test_label_dropout_needs_a_conditional_objective():
    with pytest.raises(ValueError, match="num_classes"):
        FlowMatching(label_dropout=0.1)
    with pytest.raises(ValueError, match="label"):
        FlowMatching(num_classes=3).loss_fn(None, None, {"x1": jnp.zeros((2, 2))}, KEY)


def _toy_conditional_velocity(x, t, labels):
    # Depends on x, t and the label in a non-trivial way; label 5 is "null".
    return jnp.sin(x * (labels[:, None] + 1.0)) + t[:, None] * labels[:, None]


def test_cfg_scale_one_zero_and_affinity():
    x = jax.random.normal(KEY, (8, 3))
    t = jnp.linspace(0.05, 0.95, 8)
    labels = jnp.arange(8) % 5
    null = jnp.full_like(labels, 5)
    v_c = _toy_conditional_velocity(x, t, labels)
    v_u = _toy_conditional_velocity(x, t, null)
    guided = lambda w: cfg_velocity(_toy_conditional_velocity, w, 5)(x, t, labels)  # noqa: E731
    np.testing.assert_allclose(guided(1.0), v_c, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(guided(0.0), v_u, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(guided(3.5), v_u + 3.5 * (v_c - v_u), rtol=1e-5, atol=1e-5)


def test_cfg_is_one_batched_call_and_respects_the_interval():
    calls = []

    def v(x, t, labels):
        calls.append(x.shape[0])
        return _toy_conditional_velocity(x, t, labels)

    x = jax.random.normal(KEY, (6, 2))
    t = jnp.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.9])
    labels = jnp.arange(6) % 5
    out = cfg_velocity(v, 4.0, 5, interval=(0.3, 0.7))(x, t, labels)
    assert calls == [12]
    v_c = _toy_conditional_velocity(x, t, labels)
    v_u = _toy_conditional_velocity(x, t, jnp.full_like(labels, 5))
    inside = (t >= 0.3) & (t <= 0.7)
    expected = jnp.where(inside[:, None], v_u + 4.0 * (v_c - v_u), v_c)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="interval"):
        cfg_velocity(v, 2.0, 5, interval=(0.8, 0.2))


def test_cfg_on_a_subset_of_channels_guides_only_those():
    """FiT / Lumina-Next as released: channels (0, 2) of x [B, H, W, 4] take the guided
    velocity, channels 1 and 3 the conditional one."""
    x = jax.random.normal(KEY, (3, 2, 2, 4))
    t = jnp.array([0.2, 0.5, 0.8])
    labels = jnp.array([0, 3, 1])

    def v(x_, t_, labels_):
        return jnp.sin(x_ * (labels_[:, None, None, None] + 1.0)) + t_[:, None, None, None]

    v_c, v_u = v(x, t, labels), v(x, t, jnp.full_like(labels, 5))
    out = cfg_velocity(v, 4.0, 5, channels=(2, 0))(x, t, labels)
    guided = v_u + 4.0 * (v_c - v_u)
    for c, expected in ((0, guided), (1, v_c), (2, guided), (3, v_c)):
        np.testing.assert_allclose(out[..., c], expected[..., c], rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(guided - v_c)[..., 1].max()) > 0.1  # the two do differ there
    with pytest.raises(ValueError, match="beyond the 4 channels"):
        cfg_velocity(v, 4.0, 5, channels=(4,))(x, t, labels)
    for bad in ((0, 0), (-1,), ("a",), ()):
        with pytest.raises(ValueError, match="distinct non-negative channel indices"):
            cfg_velocity(v, 4.0, 5, channels=bad)


def test_pseudo_huber_limits():
    d = 16
    huber = PseudoHuber(c=1.0)
    small = jnp.full((1, d), 1e-2)  # ||delta||^2 = 1.6e-3: quadratic regime, rel. error ~4e-4
    np.testing.assert_allclose(huber(small, 0 * small), d * 1e-4 / 2.0, rtol=2e-3)
    large = jnp.full((1, d), 1e3)
    np.testing.assert_allclose(huber(large, 0 * large), np.sqrt(d) * 1e3 - 1.0, rtol=1e-5)
    assert PseudoHuber().constant(d) == pytest.approx(0.00054 * 4.0)  # iCT
    assert PseudoHuber(normalize=True).constant(d) == pytest.approx(0.00054 * d)  # 2-RF++
    assert PseudoHuber(c=0.3, normalize=True).constant(d) == 0.3
    with pytest.raises(ValueError, match="c must be > 0"):
        PseudoHuber(c=0.0)
    np.testing.assert_allclose(
        PseudoHuber(c=1.0, normalize=True)(large, 0 * large),
        (np.sqrt(d) * 1e3 - 1.0) / d,
        rtol=1e-5,
    )
    np.testing.assert_allclose(L2()(large, 0 * large), 1e6, rtol=1e-6)


def test_binned_means():
    values = jnp.array([1.0, 3.0, 10.0, 20.0, 100.0])
    t = jnp.array([0.1, 0.2, 0.3, 0.6, 1.0])
    out = binned_means(values, t)
    assert float(out["loss_t0"]) == pytest.approx(2.0)
    assert float(out["loss_t1"]) == pytest.approx(10.0)
    assert float(out["loss_t2"]) == pytest.approx(20.0)
    assert float(out["loss_t3"]) == pytest.approx(100.0)


def _tiny_image_config(name: str, **model):
    """``configs/<name>.py``'s model and objective on the shrunk digits DiT config."""
    from tests.parallel.synthetic import tiny_dit_config

    config = tiny_dit_config()
    own = load_config(name)
    config.model, config.objective = own.model, own.objective
    config.model.update(model)
    return config


def _tiny_bfm_config():
    """Without the representation encoder (it would train the digits classifier; the
    alignment has its own tests in tests/objectives/test_blockwise.py)."""
    config = _tiny_image_config(
        "digits_bfm", hidden_size=16, num_heads=2, feature_depth=1, projector_dim=16
    )
    config.objective.blockwise.update(encoder="none", align_weight=0.0)
    return config


# Objectives whose networks take images (and not the toy config's points): a config builder.
IMAGE_OBJECTIVES = {
    "decomposable": lambda: _tiny_image_config("digits_dfm", hidden_size=32, depth=1, num_heads=2),
    "blockwise": _tiny_bfm_config,
}


@pytest.mark.parametrize("name", objectives.objective_names())
def test_every_registered_objective_trains_through_its_declared_hooks(name):
    """From the registry, so a new objective is tested without editing this list: it is an
    ``Objective``, builds from a config, and its loss has finite value and gradients on a
    batch holding exactly its declared ``batch_keys``."""
    from flowjax.training import Experiment
    from tests.parallel.synthetic import SyntheticImages
    from tests.training.conftest import tiny_config

    if name in IMAGE_OBJECTIVES:  # networks over images: the objective's own config, shrunk
        config = IMAGE_OBJECTIVES[name]()
        exp = Experiment(config, data=SyntheticImages(config.train.batch_size))
    else:  # the config's points, given as a source: the batch below holds the declared keys
        config = tiny_config()
        config.objective.name = name
        source = data_lib.make_source(config.data, batch_size=config.train.batch_size, seed=0)
        exp = Experiment(config, data=source)
    assert isinstance(exp.objective, objectives.Objective)
    params = exp.init_state().params
    keys = jax.random.split(jax.random.PRNGKey(0), len(exp.objective.batch_keys) + 1)
    shape = (8, *exp.data.element_shape)
    batch = {k: jax.random.normal(kk, shape) for k, kk in zip(exp.objective.batch_keys, keys)}
    if exp.num_classes is not None:
        batch["label"] = jnp.arange(8) % exp.num_classes
    (loss, metrics), grads = jax.value_and_grad(exp.objective.loss_fn, has_aux=True)(
        params, exp.apply_fn, batch, keys[-1]
    )
    assert np.isfinite(float(loss)) and all(np.isfinite(float(v)) for v in metrics.values())
    norms = {g: float(optax.tree.norm(grads[g])) for g in grads}
    assert all(np.isfinite(n) for n in norms.values())
    for group in exp.objective.frozen:  # frozen groups get no gradient from the loss
        assert norms[group] == 0.0, norms
    assert sum(norms.values()) > 0.0
