"""MeanFlow (ALGORITHMS.md §3.6): the target identity, the JVP, guidance, the convention adapter,
the dispersive loss and the flow-map sampler's kind checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import convention, models, solvers, timesteps
from flowjax.objectives import Dispersive, MeanFlow, effective_guidance_scale, kappa_for_scale
from flowjax.objectives import dispersive as disp
from flowjax.objectives.meanflow import guided_velocity, meanflow_target
from tests import gaussian_fixture as gf

KEY = jax.random.PRNGKey(0)


def _col(a):
    return a[:, None]


def gaussian_ubar_apply(mu, q):
    """The exact average velocity of the Gaussian fixture as an ``apply_fn``."""

    def apply_fn(params, x, t, cond=None, *, t_end, capture=None, **kwargs):
        return gf.average_velocity(x, _col(t), _col(t_end), mu, q)

    return apply_fn


def test_equal_rows_reduce_to_flow_matching():
    """With e = s in every row, p = 0 and no guidance the loss is the summed FM loss."""
    seen = {}

    def record(x, t, e):
        seen.update(x=np.asarray(x), t=np.asarray(t), e=np.asarray(e))

    def apply_fn(params, x, t, cond=None, *, t_end, **kwargs):
        jax.debug.callback(record, x, t, t_end)  # primal values, also under the JVP
        return jnp.tanh(x) * (1.0 + t_end[:, None]) + t[:, None]

    x1 = jax.random.normal(jax.random.PRNGKey(1), (64, 3)) + 2.0
    obj = MeanFlow(equal_fraction=1.0, adaptive_p=0.0)
    loss, metrics = obj.loss_fn(None, apply_fn, {"x1": x1}, KEY)
    x_s, s = seen["x"], seen["t"]
    np.testing.assert_array_equal(seen["e"], s)
    x0 = (x_s - s[:, None] * x1) / (1.0 - s[:, None])
    u = jnp.tanh(x_s) * (1.0 + s[:, None]) + s[:, None]
    expected = jnp.mean(jnp.sum((u - (x1 - x0)) ** 2, axis=1))
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    np.testing.assert_allclose(metrics["mse"], expected / 3, rtol=1e-4)


def test_point_mass_exact_average_velocity_has_zero_loss():
    """q = 0: the conditional velocity is the marginal one, so the exact ubar has zero loss
    (a wrong tangent sign, (v, -1, 0), would leave du = -2 v / (1 - s) != 0)."""
    mu = jnp.array([1.5, -0.5])
    x1 = jnp.broadcast_to(mu, (256, 2))
    obj = MeanFlow(time_sampler=timesteps.Uniform(0.0, 0.95), equal_fraction=0.25, adaptive_p=0.0)
    loss, _ = obj.loss_fn(None, gaussian_ubar_apply(mu, 0.0), {"x1": x1}, KEY)
    assert float(loss) < 1e-8


def test_exact_average_velocity_satisfies_the_target_identity():
    """Gaussian closed form (q = 1, mu != 0, curved speeds), float32: with the marginal velocity
    as the tangent, u_tgt = v + (e - s) d/ds ubar equals ubar (tolerance 1e-4)."""
    mu, q = 1.0, 1.0
    k1, k2, k3 = jax.random.split(KEY, 3)
    s, e = timesteps.sample_pair(k1, (512,), timesteps.Uniform(0.0, 0.98), 0.25)
    x = jax.random.normal(k2, (512, 4)) * 1.5
    x_s = gf.mean(_col(s), mu) + gf.std(_col(s), q) * x
    v = gf.velocity(x_s, _col(s), mu, q)
    apply_fn = gaussian_ubar_apply(mu, q)

    def net(x_, s_, e_):
        return apply_fn(None, x_, s_, t_end=e_), {}

    u, u_tgt, _ = meanflow_target(net, x_s, s, e, v)
    scale = float(jnp.max(jnp.abs(u)))
    assert float(jnp.max(jnp.abs(u - u_tgt))) < 1e-4 * max(scale, 1.0)
    assert float(jnp.max(jnp.abs(e - s))) > 0.5  # the identity was exercised on long jumps
    # A wrong identity (d/de instead of d/ds) is far off: the check can fail.
    wrong = jax.jvp(net, (x_s, s, e), (v, jnp.zeros_like(s), jnp.ones_like(e)), has_aux=True)[1]
    assert float(jnp.max(jnp.abs(u - (v + (e - s)[:, None] * wrong)))) > 1e-2


@pytest.fixture(scope="module")
def tiny_average_net():
    model = models.make_model(
        {"name": "mlp", "hidden": 32, "depth": 2, "time_scale": 1.0}, use_end_time=True
    )
    params = models.init_params(model, KEY, (3,))
    # non-zero output layer so the function is not constant
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(KEY, p.shape), params)
    return model, params, models.make_apply_fn(model)


def test_jvp_matches_central_finite_differences(tiny_average_net):
    _, params, apply_fn = tiny_average_net
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(4), 3)
    s, e = timesteps.sample_pair(k1, (16,), timesteps.Uniform(0.1, 0.9), 0.0)
    x = jax.random.normal(k2, (16, 3))
    v = jax.random.normal(k3, (16, 3))

    def net(x_, s_, e_):
        return apply_fn(params, x_, s_, None, t_end=e_), {}

    u, u_tgt, _ = meanflow_target(net, x, s, e, v)
    du = (u_tgt - v) / (e - s)[:, None]
    h = 3e-3  # truncation O(h^2) vs float32 rounding O(eps / h): both ~1e-4 here
    fd = (net(x + h * v, s + h, e)[0] - net(x - h * v, s - h, e)[0]) / (2 * h)
    rel = float(jnp.linalg.norm(du - fd) / jnp.linalg.norm(fd))
    assert rel < 1e-3, rel


def test_guidance_fixed_point_and_effective_scale():
    """Iterating u_c <- omega v_c + kappa u_c + (1 - omega - kappa) v_u (training to its own
    target) converges to CFG with scale omega / (1 - kappa)."""
    v_c, v_u = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.5])
    for omega, kappa in ((1.0, 0.5), (0.2, 0.92), (3.0, 0.0)):
        u = jnp.zeros(2)
        for _ in range(2000):
            u = guided_velocity(v_c, u, v_u, omega, kappa)
        w = effective_guidance_scale(omega, kappa)
        np.testing.assert_allclose(u, v_u + w * (v_c - v_u), rtol=1e-5)
        assert kappa_for_scale(omega, w) == pytest.approx(kappa)
    assert effective_guidance_scale(0.2, 0.92) == pytest.approx(2.5)  # MeanFlow L/2, XL/2


def test_guided_target_respects_dropout_and_the_interval():
    def apply_fn(params, x, t, cond, *, t_end, **kwargs):
        return jnp.where(cond[:, None] == 3, -1.0, 2.0) * jnp.ones_like(x)  # null = 3

    obj = MeanFlow(num_classes=3, omega=0.5, kappa=0.25, guidance_interval=(0.3, 1.0))
    s = jnp.array([0.1, 0.5, 0.5, 0.9])
    v_c = jnp.ones((4, 2))
    labels = jnp.array([0, 1, 2, 0])
    dropped = jnp.array([False, False, True, False])
    v = obj.target_velocity(None, apply_fn, jnp.zeros((4, 2)), s, v_c, labels, dropped)
    guided = 0.5 * 1.0 + 0.25 * 2.0 + 0.25 * (-1.0)
    np.testing.assert_allclose(v[:, 0], [1.0, guided, 1.0, guided])


def test_meanflow_errors():
    with pytest.raises(ValueError, match="class-conditional"):
        MeanFlow(omega=2.0)
    with pytest.raises(ValueError, match="kappa must be < 1"):
        MeanFlow(num_classes=2, kappa=1.0)
    with pytest.raises(ValueError, match="equal_fraction"):
        MeanFlow(equal_fraction=1.5)


def test_meanflow_convention_adapter():
    """A MeanFlow-native average velocity (data at tau = 0) satisfying MeanFlow's own identity,
    u = v - (t - r) du/dt along (v, 0, 1), converts to one satisfying ours."""
    mu, q = 0.7, 0.8

    def m(tau):
        return (1.0 - tau) * mu

    def sd(tau):
        return jnp.sqrt((1.0 - tau) ** 2 * q**2 + tau**2)

    def u_mf(z, r, t, cond=None):  # (z_t - z_r) / (t - r), z_r the MF flow map from t back to r
        r, t = _col(r), _col(t)
        z_r = m(r) + sd(r) / sd(t) * (z - m(t))
        return (z - z_r) / (t - r)

    def v_mf(z, t):  # d z / d tau, toward noise
        t = _col(t)
        sd_dot = ((1.0 - t) * -(q**2) + t) / sd(t)
        return -mu + sd_dot * (z - m(t)) / sd(t)

    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    r, t = timesteps.sample_pair(k1, (64,), timesteps.Uniform(0.05, 0.95), 0.0)
    z = jax.random.normal(k2, (64, 2))
    # MeanFlow's identity in its own convention holds for u_mf:
    _, du = jax.jvp(
        lambda z_, r_, t_: u_mf(z_, r_, t_),
        (z, r, t),
        (v_mf(z, t), jnp.zeros_like(r), jnp.ones_like(t)),
    )
    np.testing.assert_allclose(u_mf(z, r, t), v_mf(z, t) - _col(t - r) * du, atol=1e-4)
    # ...and its conversion satisfies ours, with s = 1 - t, e = 1 - r.
    ubar = convention.average_velocity_from_meanflow(u_mf)
    s, e = 1.0 - t, 1.0 - r
    v_ours = convention.velocity_from_opposite(lambda x, tau, c: v_mf(x, tau))(z, s)
    u, u_tgt, _ = meanflow_target(lambda x_, s_, e_: (ubar(x_, s_, None, e_), {}), z, s, e, v_ours)
    np.testing.assert_allclose(u, u_tgt, atol=1e-4)
    np.testing.assert_allclose(u, gf.average_velocity(z, _col(s), _col(e), mu, q), atol=1e-4)


def test_meanflow_network_adapter_feeds_t_and_h():
    seen = {}

    def apply_fn(params, x, t, cond=None, *, t_end, **kwargs):
        seen.update(t=np.asarray(t), h=np.asarray(t_end - t))
        return x

    apply = convention.meanflow_network(apply_fn)
    s, e = jnp.array([0.2, 0.5]), jnp.array([0.7, 0.5])
    out = apply(None, jnp.ones((2, 1)), s, None, t_end=e)
    np.testing.assert_allclose(seen["t"], 1.0 - s)
    np.testing.assert_allclose(seen["h"], e - s, atol=1e-7)
    np.testing.assert_array_equal(out, -jnp.ones((2, 1)))
    assert convention.interval_from_opposite((0.0, 0.75)) == (0.25, 1.0)
    assert convention.logit_normal_loc_from_opposite(-0.4) == 0.4


# -- dispersive loss ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", disp.VARIANTS)
def test_dispersive_is_permutation_invariant(variant):
    h = jax.random.normal(KEY, (16, 3, 2))
    perm = jax.random.permutation(jax.random.PRNGKey(1), 16)
    d = Dispersive(weight=1.0, layers=("a",), variant=variant)
    np.testing.assert_allclose(d({"a": h}), d({"a": h[perm]}), rtol=1e-5, atol=1e-6)


def test_dispersive_infonce_l2_properties():
    h = jax.random.normal(KEY, (32, 5))
    base = float(disp.infonce_l2(h))
    assert float(disp.infonce_l2(1.5 * h)) < base  # scaling the features apart lowers it
    np.testing.assert_allclose(
        disp.infonce_l2(h, normalize="max"), disp.infonce_l2(7.0 * h, normalize="max"), rtol=1e-5
    )
    same = jnp.ones((8, 5))
    assert float(disp.infonce_l2(same)) == pytest.approx(0.0, abs=1e-6)  # the bound log 1
    assert float(disp.infonce_l2(h)) < 0.0 and float(disp.infonce_l2(h, normalize="max")) < 0.0


@pytest.mark.parametrize("dim", [16, 256, 24576])
def test_dispersive_infonce_l2_is_active_at_realistic_feature_sizes(dim):
    """Unit-variance features, batch 32: D_ij = ||h_i - h_j||^2 / D ~ 2 chi2_D / D off the
    diagonal, so the loss is near log(1/B + (B - 1)/B (1 + 4/D)^(-D/2)) (E exp(-D_ij)), far
    from the floor log(1/B) where the undivided distance sits (its off-diagonal terms
    underflow: gradient exactly 0 from D = 256 on)."""
    b = 32
    h = jax.random.normal(jax.random.PRNGKey(dim), (b, dim))
    value, grad = jax.value_and_grad(disp.infonce_l2)(h)
    floor = -np.log(b)
    assert float(value) - floor > 1.0, float(value)
    expected = np.log(1 / b + (b - 1) / b * (1 + 4 / dim) ** (-dim / 2))
    np.testing.assert_allclose(value, expected, atol=0.25)  # sampling noise at D = 16
    assert bool(jnp.all(jnp.isfinite(grad)))
    # The gradient pushes features apart: it has the size of the loss's dependence on h.
    assert float(jnp.linalg.norm(grad)) > 1e-2 / np.sqrt(dim) * np.sqrt(b)


def test_dispersive_distances_have_an_exact_zero_diagonal():
    """A large common offset makes |h_i|^2 + |h_i|^2 - 2 h_i.h_i round away from 0; the
    diagonal is set, and coinciding features reach the bound log 1 = 0 exactly."""
    h = 1e3 + jax.random.normal(KEY, (8, 300))
    d = disp._sq_dists(h)
    np.testing.assert_array_equal(jnp.diag(d), 0.0)
    same = jnp.broadcast_to(1e3 + jax.random.normal(KEY, (300,)), (8, 300))
    assert float(disp.infonce_l2(same)) == 0.0
    grad = jax.grad(disp.infonce_l2)(same)
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_dispersive_covariance_equals_the_direct_formula():
    h = jax.random.normal(KEY, (12, 6)) + jnp.arange(6.0)
    n = h / jnp.linalg.norm(h, axis=1, keepdims=True)
    c = jnp.cov(n.T, bias=True)
    direct = jnp.sum(c**2) - jnp.sum(jnp.diag(c) ** 2)
    np.testing.assert_allclose(disp.covariance(h), direct, rtol=1e-4)


def test_meanflow_with_dispersive_features(tiny_average_net):
    model, params, apply_fn = tiny_average_net
    x1 = jax.random.normal(KEY, (32, 3))
    plain = MeanFlow(equal_fraction=0.5)
    reg = MeanFlow(equal_fraction=0.5, dispersive=Dispersive(weight=0.5, layers=("feature_1",)))
    loss0, _ = plain.loss_fn(params, apply_fn, {"x1": x1}, KEY)
    loss1, m1 = reg.loss_fn(params, apply_fn, {"x1": x1}, KEY)
    np.testing.assert_allclose(loss1, loss0 + m1["dispersive"], rtol=1e-5)
    assert float(m1["dispersive"]) < 0.0
    with pytest.raises(ValueError, match="available: \\['feature_0', 'feature_1'\\]"):
        bad = MeanFlow(dispersive=Dispersive(layers=("feature_9",)))
        bad.loss_fn(params, apply_fn, {"x1": x1}, KEY)


# -- sampler kinds -----------------------------------------------------------------------------


def test_flowmap_sampler_is_exact_for_the_exact_average_velocity():
    mu, q = 1.0, 0.5
    u = solvers.average_velocity(lambda x, t, c, e: gf.average_velocity(x, _col(t), _col(e), mu, q))
    x0 = jax.random.normal(KEY, (64, 2))
    exact = gf.flow_map(x0, 0.0, 1.0, mu, q)
    for grid in ([0.0, 1.0], [0.0, 0.5, 1.0], [0.0, 0.1, 0.3, 1.0]):
        x1 = solvers.sample(solvers.FlowMap(), u, x0, grid)
        np.testing.assert_allclose(x1, exact, atol=1e-5)
    diag = solvers.diagonal_velocity(u)  # u(x, t, t) = v(x, t): RK4 converges to the same map
    x1 = solvers.sample(solvers.RK4(), diag, x0, timesteps.uniform_grid(32))
    np.testing.assert_allclose(x1, exact, atol=1e-4)


def test_sampler_kind_mismatch_is_a_clear_error(tiny_average_net):
    model, params, apply_fn = tiny_average_net
    x0 = jnp.zeros((4, 3))
    u = solvers.average_velocity(lambda x, t, c, e: x)
    v = solvers.instantaneous_velocity(lambda x, t, c: x)
    with pytest.raises(
        ValueError, match="average-velocity model .* sample it with solver 'flowmap'"
    ):
        solvers.sample(solvers.Euler(), u, x0, [0.0, 1.0])
    with pytest.raises(ValueError, match="integrates an average-velocity model"):
        solvers.sample(solvers.FlowMap(), v, x0, [0.0, 1.0])
    # Untagged functions reach the network, which checks its own call.
    with pytest.raises(ValueError, match="average-velocity network"):
        solvers.sample(solvers.Euler(), lambda x, t, c: apply_fn(params, x, t, c), x0, [0.0, 1.0])
