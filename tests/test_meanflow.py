"""MeanFlow (docs/maths/meanflow.md): the target identity, the JVP, guidance, the convention
adapter, the dispersive loss and the flow-map sampler's kind checks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import convention, models, solvers
from flowjax.objectives import Dispersive, MeanFlow, effective_guidance_scale, kappa_for_scale
from flowjax.objectives import dispersive as disp
from flowjax.objectives.meanflow import guided_velocity, label_dropout_mask, meanflow_target
from flowjax.time import grids, laws
from tests import gaussian_fixture as gf
from tests.tolerance import assert_equal_up_to_rounding

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
    obj = MeanFlow(time_sampler=laws.Uniform(0.0, 0.95), equal_fraction=0.25, adaptive_p=0.0)
    loss, _ = obj.loss_fn(None, gaussian_ubar_apply(mu, 0.0), {"x1": x1}, KEY)
    assert float(loss) < 1e-8


def test_exact_average_velocity_satisfies_the_target_identity():
    """Gaussian closed form (q = 1, mu != 0, curved speeds), float32: with the marginal velocity
    as the tangent, u_tgt = v + (e - s) d/ds ubar equals ubar (tolerance 1e-4)."""
    mu, q = 1.0, 1.0
    k1, k2, k3 = jax.random.split(KEY, 3)
    s, e = laws.sample_pair(k1, (512,), laws.Uniform(0.0, 0.98), 0.25)
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
    s, e = laws.sample_pair(k1, (16,), laws.Uniform(0.1, 0.9), 0.0)
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


# -- agreement with the published loss (values and gradients) -------------------------------

NUM_CLASSES = 4  # null = 4


def _mf_params(key=jax.random.PRNGKey(11), dim=3, width=16):
    k = jax.random.split(key, 6)
    return {
        "w1": jax.random.normal(k[0], (dim, width)) / np.sqrt(dim),
        "a": jax.random.normal(k[1], (width,)),
        "b": jax.random.normal(k[2], (width,)),
        "emb": jax.random.normal(k[3], (NUM_CLASSES + 1, width)),
        "w2": jax.random.normal(k[4], (width, dim)) / np.sqrt(width),
        "c": jax.random.normal(k[5], (dim,)),
    }


def _u_mf(params, z, t, h, y):
    """A MeanFlow-native average velocity u(z, t, h, y) in the published convention (data at
    t = 0, noise at t = 1, h = t - r): a one-hidden-layer network with a params dict."""
    pre = z @ params["w1"] + t[:, None] * params["a"] + h[:, None] * params["b"]
    if y is not None:
        pre = pre + params["emb"][y]
    return jnp.tanh(pre) @ params["w2"] + (t * h)[:, None] * params["c"]


def _flowjax_apply(params, x, s, cond=None, *, t_end, **kwargs):
    """The same network in flowjax's convention: ubar(x, s, e) = -u_MF(x, 1 - s, e - s)."""
    return -_u_mf(params, x, 1.0 - s, t_end - s, cond)


def published_meanflow_loss(params, x, noise, t, r, labels, num_drop, cfg):
    """Independent transcription of the published MeanFlow JAX loss, in its own convention:
    z = (1 - t) x + t e, v = e - x, guidance on t in [t_lo, t_hi], label dropout on the first
    num_drop rows, JVP tangents (v_g, 1, 0) over (z, t, r), target sg(v_g - clip(t - r) du),
    loss sum_pixels (u - u_tgt)^2 / sg((loss + c)^p), mean over the batch."""
    b = x.shape[0]
    z = (1 - t)[:, None] * x + t[:, None] * noise
    v = noise - x
    v_g = v
    if labels is not None and (cfg["omega"] != 1.0 or cfg["kappa"] != 0.0):
        inside = (t >= cfg["t_lo"]) & (t <= cfg["t_hi"])
        omega = jnp.where(inside, cfg["omega"], 1.0)[:, None]
        kappa = jnp.where(inside, cfg["kappa"], 0.0)[:, None]
        zero = jnp.zeros_like(t)
        v_uncond = _u_mf(params, z, t, zero, jnp.full_like(labels, NUM_CLASSES))
        v_cond = _u_mf(params, z, t, zero, labels)
        v_g = omega * v + (1 - omega - kappa) * v_uncond + kappa * v_cond
    y_inp = labels
    if labels is not None:
        drop = jnp.arange(b) < num_drop
        y_inp = jnp.where(drop, NUM_CLASSES, labels)
        v_g = jnp.where(drop[:, None], v, v_g)

    def u_fn(z_, t_, r_):
        return _u_mf(params, z_, t_, t_ - r_, y_inp)

    u, du_dt = jax.jvp(u_fn, (z, t, r), (v_g, jnp.ones_like(t), jnp.zeros_like(r)))
    u_tgt = jax.lax.stop_gradient(v_g - jnp.clip(t - r, 0.0, 1.0)[:, None] * du_dt)
    loss = jnp.sum((u - u_tgt) ** 2, axis=1)
    loss = loss / jax.lax.stop_gradient((loss + cfg["c"]) ** cfg["p"])
    return jnp.mean(loss)


_CASES = {
    "unguided": dict(cond=False, omega=1.0, kappa=0.0, p=0.0, drop=0.0),
    "adaptive_p1": dict(cond=False, omega=1.0, kappa=0.0, p=1.0, drop=0.0),
    "guided": dict(cond=True, omega=0.6, kappa=0.3, p=1.0, drop=0.0),
    "label_dropout": dict(cond=True, omega=0.6, kappa=0.3, p=1.0, drop=0.3),
}


@pytest.mark.parametrize("jvp_all_rows", [False, True], ids=["jvp_needed_rows", "jvp_all_rows"])
@pytest.mark.parametrize("case", list(_CASES))
def test_loss_and_gradient_equal_the_published_loss(case, jvp_all_rows):
    """flowjax's loss_fn and its gradient w.r.t. the network's params equal the published loss
    on the same draws (converted: t = 1 - s, r = 1 - e, e_MF = x0), for guidance with an
    interval (MF t in [0, 0.8], our s in [0.2, 1]), adaptive weight p = 1, label dropout;
    with the JVP over the e > s rows only (default) and over the whole batch (published)."""
    spec = _CASES[case]
    b = 16
    k1, k2, key = jax.random.split(jax.random.PRNGKey(5), 3)
    x1 = jax.random.normal(k1, (b, 3)) + jnp.array([1.0, -1.0, 0.5])
    batch = {"x1": x1}
    if spec["cond"]:
        batch["label"] = jax.random.randint(k2, (b,), 0, NUM_CLASSES)
    t_lo, t_hi = 0.0, 0.8
    obj = MeanFlow(
        time_sampler=laws.LogitNormal(loc=0.4, scale=1.0),
        equal_fraction=0.5,
        adaptive_p=spec["p"],
        adaptive_c=0.01,
        num_classes=NUM_CLASSES if spec["cond"] else None,
        label_dropout=spec["drop"],
        omega=spec["omega"],
        kappa=spec["kappa"],
        guidance_interval=convention.interval_from_opposite((t_lo, t_hi)),
        jvp_all_rows=jvp_all_rows,
    )
    cfg = dict(omega=spec["omega"], kappa=spec["kappa"], t_lo=t_lo, t_hi=t_hi, p=spec["p"], c=0.01)
    draws = obj.draws(key, batch)
    t, r = 1.0 - draws["s"], 1.0 - draws["e"]
    labels = batch.get("label")
    num_drop = 0 if labels is None else int(jnp.sum(draws["dropped"]))
    if spec["drop"]:
        assert 0 < num_drop <= b // 2  # some rows dropped, all among the e = s rows
    if spec["omega"] != 1.0:  # the interval splits the guided rows
        assert 0 < int(jnp.sum(t <= t_hi)) < b

    params = _mf_params()

    def ours(p):
        return obj.loss_fn(p, _flowjax_apply, batch, key)[0]

    def theirs(p):
        return published_meanflow_loss(p, x1, draws["x0"], t, r, labels, num_drop, cfg)

    value, grad = jax.value_and_grad(ours)(params)
    ref_value, ref_grad = jax.value_and_grad(theirs)(params)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5)
    for name in params:
        scale = float(jnp.max(jnp.abs(ref_grad[name])))
        if name == "emb" and labels is None:
            np.testing.assert_array_equal(grad[name], 0.0)  # no label reaches the network
            continue
        assert scale > 1e-6, name  # every parameter group is exercised
        np.testing.assert_allclose(grad[name], ref_grad[name], rtol=1e-4, atol=1e-5 * scale)


def _jvp_row_counter():
    """An identity whose forward-mode rule records the rows it is differentiated on."""
    rows = []

    @jax.custom_jvp
    def probe(x):
        return x

    @probe.defjvp
    def _(primals, tangents):
        rows.append(primals[0].shape[0])
        return probe(primals[0]), tangents[0]

    return probe, rows


@pytest.mark.parametrize(
    "fraction, batch, expected", [(0.75, 16, [4]), (0.5, 7, [4]), (0.0, 8, [8]), (1.0, 8, [])]
)
def test_the_jvp_runs_only_on_rows_where_e_can_exceed_s(fraction, batch, expected):
    """The default runs the JVP on the trailing B - floor(equal_fraction B) rows only (none at
    equal_fraction 1); ``jvp_all_rows=True`` on all B; the loss and gradients agree."""
    probe, rows = _jvp_row_counter()
    params = _mf_params()

    def apply_fn(p, x, s, cond=None, *, t_end, **kwargs):
        return _flowjax_apply(p, probe(x), s, cond, t_end=t_end)

    x1 = jax.random.normal(KEY, (batch, 3))
    results = []
    for all_rows in (False, True):
        obj = MeanFlow(equal_fraction=fraction, jvp_all_rows=all_rows)
        rows.clear()
        results.append(
            jax.value_and_grad(lambda p, o=obj: o.loss_fn(p, apply_fn, {"x1": x1}, KEY)[0])(params)
        )
        assert rows == (expected if not all_rows else [batch])
    (v0, g0), (v1, g1) = results
    assert_equal_up_to_rounding((v0, g0), (v1, g1))  # two float32 programs


def test_label_dropout_rows():
    """'leading' (default, published): the first K rows, K = #{u_i < p}, all with e = s;
    'random': the rows with u_i < p themselves; both from the same uniforms."""
    b, p = 64, 0.2
    key = jax.random.PRNGKey(2)
    u = jax.random.uniform(key, (b,))
    lead = label_dropout_mask(key, b, p)
    rand = label_dropout_mask(key, b, p, "random")
    np.testing.assert_array_equal(rand, u < p)
    np.testing.assert_array_equal(lead, np.arange(b) < int(np.sum(u < p)))
    assert 0 < int(jnp.sum(lead)) < b and not np.array_equal(lead, rand)
    # Inside the objective: the null label reaches the network exactly on those rows.
    obj = MeanFlow(num_classes=3, label_dropout=p, equal_fraction=0.75)
    batch = {"x1": jnp.zeros((b, 2)), "label": jnp.arange(b) % 3}
    key = jax.random.PRNGKey(8)
    draws = obj.draws(key, batch)
    key_drop = jax.random.split(key, 4)[2]
    expected = np.arange(b) < int(np.sum(jax.random.uniform(key_drop, (b,)) < p))
    np.testing.assert_array_equal(draws["dropped"], expected)
    np.testing.assert_array_equal(draws["y_in"] == 3, expected)
    assert bool(jnp.all(draws["e"][expected] == draws["s"][expected]))  # only e = s rows
    seen = []  # the labels of each network call, in call order (the e = s rows come first)

    def apply_fn(params, x, s, cond, *, t_end, **kwargs):
        seen.append(np.asarray(cond))
        return x

    obj.loss_fn(None, apply_fn, batch, key)
    np.testing.assert_array_equal(np.concatenate(seen) == 3, expected)
    random_obj = MeanFlow(num_classes=3, label_dropout=p, label_dropout_rows="random")
    assert not np.array_equal(random_obj.draws(key, batch)["dropped"], expected)
    with pytest.raises(ValueError, match="label_dropout_rows must be one of"):
        MeanFlow(num_classes=3, label_dropout=p, label_dropout_rows="equal")


def test_registry_passes_meanflow_fields_and_keeps_dataclass_defaults():
    from flowjax.config_files import load_config
    from flowjax.objectives import make_objective

    cfg = load_config("digits_meanflow")
    obj = make_objective(cfg.objective, num_classes=10)
    assert obj.label_dropout_rows == "leading" and obj.label_dropout == 0.1 and obj.kappa == 0.5
    cfg.objective.meanflow.label_dropout_rows = "random"
    cfg.objective.dispersive.weight = 0.25
    obj = make_objective(cfg.objective, num_classes=10)
    assert obj.label_dropout_rows == "random" and obj.dispersive == Dispersive(weight=0.25)
    del cfg.objective.meanflow["label_dropout_rows"]
    del cfg.objective.meanflow["equal_fraction"]
    obj = make_objective(cfg.objective, num_classes=10)
    assert obj.label_dropout_rows == MeanFlow.label_dropout_rows
    assert obj.equal_fraction == MeanFlow.equal_fraction
    cfg.objective.meanflow.unknown = 1.0
    with pytest.raises(ValueError, match="unknown key.*valid keys"):
        make_objective(cfg.objective, num_classes=10)


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
    r, t = laws.sample_pair(k1, (64,), laws.Uniform(0.05, 0.95), 0.0)
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
    # The features of the two row groups (plain pass, JVP pass) rejoin in batch order.
    whole = dataclasses.replace(reg, jvp_all_rows=True)
    _, m2 = whole.loss_fn(params, apply_fn, {"x1": x1}, KEY)
    np.testing.assert_allclose(m1["dispersive"], m2["dispersive"], rtol=1e-5)
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
    x1 = solvers.sample(solvers.RK4(), diag, x0, grids.uniform_grid(32))
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
