"""FreeFlow, data-free flow-map distillation (docs/maths/freeflow.md): the exact student has zero
loss, the JVP in delta, the correction direction, teacher initialisation and freezing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import models, solvers
from flowjax.objectives import FreeFlow
from flowjax.objectives.freeflow import FreeFlowNetworks
from flowjax.time import laws
from tests import gaussian_fixture as gf
from tests.tolerance import assert_equal_up_to_rounding

KEY = jax.random.PRNGKey(0)
MU, Q = 1.0, 0.6


def _col(a):
    return a[:, None]


def gaussian_apply(student_shift=0.0):
    """Teacher = exact Gaussian velocity; fake = the same (exact for the exact student);
    student = the exact average velocity from the prior, F(z, d) = (Phi_{0->d}(z) - z) / d."""

    def apply_fn(params, x, t, cond=None, *, method=None, t_end=None, **kwargs):
        if method in ("teacher_velocity", "fake_velocity"):
            return gf.velocity(x, _col(t), MU, Q)
        return gf.average_velocity(x, _col(t), _col(t_end), MU, Q) + student_shift

    return apply_fn


def test_exact_student_has_zero_loss_in_both_objectives():
    obj = FreeFlow(delta_sampler=laws.Uniform(0.0, 1.0), correction_fraction=0.25)
    batch = {"x1": jnp.zeros((512, 3))}  # only the shape is used
    loss, m = obj.loss_fn(None, gaussian_apply(), batch, KEY)
    assert float(m["generating_velocity_mse"]) < 1e-9  # Dg = 0: the optimality condition
    assert float(m["pred_loss"]) < 1e-5  # w * ||F - tgt||^2 with tgt == F
    assert float(m["corr_loss"]) == 0.0  # g_psi = v_T: no correction
    # A wrong student is penalised by both.
    _, bad = obj.loss_fn(None, gaussian_apply(0.1), batch, KEY)
    assert float(bad["generating_velocity_mse"]) > 1e-3 and float(bad["pred_loss"]) > 0.1


@pytest.mark.slow
def test_one_step_sample_is_the_student_flow_map_from_the_prior():
    """``flowmap:1`` on FreeFlowNetworks is ``x1 = z + F_student(z, 0, 1)``: it reads the
    student only (changing the fake or the teacher leaves it; changing the student does not)."""
    mlp = {"name": "mlp", "hidden": 8, "depth": 1, "time_scale": 1.0}
    model = FreeFlowNetworks(
        student=models.make_model(mlp, use_end_time=True),
        fake=models.make_model(mlp),
        teacher=models.make_model(mlp),
    )
    params = models.init_params(model, KEY, (2,))
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(KEY, p.shape), params)
    apply_fn = models.make_apply_fn(model)
    z = jax.random.normal(KEY, (5, 2))

    @jax.jit
    def one_step(p):  # one trace for every parameter set
        u = solvers.average_velocity(lambda x, t, c, e: apply_fn(p, x, t, c, t_end=e))
        return solvers.sample(solvers.FlowMap(), u, z, [0.0, 1.0])

    zeros, ones = jnp.zeros((5,)), jnp.ones((5,))
    f_1 = apply_fn(params, z, zeros, None, t_end=ones)
    assert float(jnp.max(jnp.abs(f_1))) > 1e-2
    np.testing.assert_allclose(one_step(params), z + f_1, rtol=1e-6, atol=1e-6)
    others = {**params, "fake": jax.tree.map(jnp.zeros_like, params["fake"])}
    others["teacher"] = jax.tree.map(lambda p: -p, params["teacher"])
    np.testing.assert_array_equal(one_step(others), one_step(params))
    student = {**params, "student": jax.tree.map(lambda p: 1.1 * p, params["student"])}
    assert float(jnp.max(jnp.abs(one_step(student) - one_step(params)))) > 1e-3


# -- gradient routing: which parameter group each term trains ----------------------------------


def _group_params(key, dim=3, width=8):
    def group(k, end_time):
        k = jax.random.split(k, 4)
        p = {
            "w1": jax.random.normal(k[0], (dim, width)),
            "a": jax.random.normal(k[1], (width,)),
            "w2": jax.random.normal(k[2], (width, dim)) / np.sqrt(width),
        }
        if end_time:
            p["b"] = jax.random.normal(k[3], (width,))
        return p

    ks, kf, kt = jax.random.split(key, 3)
    return {"student": group(ks, True), "fake": group(kf, False), "teacher": group(kt, False)}


def _group_apply(params, x, t, cond=None, *, method=None, t_end=None, **kwargs):
    """Student u(x, t, t_end), fake and teacher velocities: small tanh networks, one group each."""
    name = {"fake_velocity": "fake", "teacher_velocity": "teacher"}.get(method, "student")
    p = params[name]
    pre = x @ p["w1"] + t[:, None] * p["a"]
    if name == "student":
        pre = pre + t_end[:, None] * p["b"]
    return jnp.tanh(pre) @ p["w2"]


@pytest.fixture(scope="module")
def routed_grads():
    """Gradients of each loss term w.r.t. every parameter group (one trace per term)."""
    obj = FreeFlow(correction_fraction=0.5, r_sampler=laws.Uniform(0.05, 0.95))
    params = _group_params(jax.random.PRNGKey(3))
    batch = {"x1": jnp.zeros((16, 3))}

    def term(name):
        return jax.grad(lambda p: obj.loss_fn(p, _group_apply, batch, KEY)[1][name])(params)

    return {name: term(name) for name in ("pred_loss", "corr_loss", "fake_loss", "loss")}


def _norm(tree):
    return float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree))))


@pytest.mark.parametrize(
    "term, trains",
    [("pred_loss", "student"), ("corr_loss", "student"), ("fake_loss", "fake")],
)
def test_each_term_trains_only_its_group(routed_grads, term, trains):
    """L_pred and L_corr move only the student (sg on the teacher, on x_f and on the correction
    direction g_psi - v_T); L_fake moves only the fake (sg on x_hat); the teacher gets exactly
    zero gradient from every term."""
    grads = routed_grads[term]
    for group in ("student", "fake", "teacher"):
        if group == trains:
            assert _norm(grads[group]) > 1e-4, (term, group)
        else:
            for leaf in jax.tree.leaves(grads[group]):
                np.testing.assert_array_equal(leaf, 0.0, err_msg=f"{term} -> {group}")


def test_total_gradient_is_the_sum_of_the_routed_terms(routed_grads):
    total = routed_grads["loss"]
    for leaf in jax.tree.leaves(total["teacher"]):
        np.testing.assert_array_equal(leaf, 0.0)
    # each term's gradient is its own float32 program: equal up to summation order
    assert_equal_up_to_rounding(total["fake"], routed_grads["fake_loss"]["fake"])
    parts = jax.tree.map(
        lambda a, b: a + b,
        routed_grads["pred_loss"]["student"],
        routed_grads["corr_loss"]["student"],
    )
    assert_equal_up_to_rounding(total["student"], parts)


def test_student_jvp_in_delta_matches_finite_differences():
    model = models.make_model(
        {"name": "mlp", "hidden": 32, "depth": 2, "time_scale": 1.0}, use_end_time=True
    )
    params = models.init_params(model, KEY, (3,))
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(KEY, p.shape), params)
    apply_fn = models.make_apply_fn(model)
    z = jax.random.normal(KEY, (8, 3))
    delta = jnp.linspace(0.1, 0.9, 8)

    def F(d):
        return apply_fn(params, z, jnp.zeros_like(d), None, t_end=d)

    _, dF = jax.jvp(F, (delta,), (jnp.ones_like(delta),))
    # dF is ~100x smaller than F here, so float32 rounding (eps |F| / h) rules out a small h: a
    # fourth-order stencil at h = 0.05 keeps both the truncation and the rounding near 1e-4.
    h = 0.05
    fd = (8 * (F(delta + h) - F(delta - h)) - (F(delta + 2 * h) - F(delta - 2 * h))) / (12 * h)
    assert float(jnp.linalg.norm(dF - fd) / jnp.linalg.norm(fd)) < 1e-3


def test_correction_moves_student_samples_toward_the_teacher():
    """Teacher: point mass at b; student: point mass at a (F(z, 1) = theta - z); exact fake
    velocity of the student. One SGD step on L_corr moves theta from a toward b."""
    a, b = jnp.array([1.0, -1.0]), jnp.array([-0.5, 2.0])

    def apply_fn(params, x, t, cond=None, *, method=None, t_end=None, **kwargs):
        one_minus = jnp.maximum(1.0 - _col(t), 1e-3)
        if method == "teacher_velocity":
            return (b - x) / one_minus
        if method == "fake_velocity":
            return (jax.lax.stop_gradient(params["theta"]) - x) / one_minus
        return params["theta"] - x  # the student: x_hat = z + F(z, 1) = theta

    obj = FreeFlow(correction_fraction=0.5, r_sampler=laws.Uniform(0.0, 0.9))
    params = {"theta": a}
    batch = {"x1": jnp.zeros((64, 2))}

    def corr(p):
        return obj.loss_fn(p, apply_fn, batch, KEY)[1]["corr_loss"]

    theta = a - 0.1 * jax.grad(corr)(params)["theta"]
    assert float(jnp.linalg.norm(theta - b)) < float(jnp.linalg.norm(a - b))
    direction = (theta - a) / jnp.linalg.norm(theta - a)
    np.testing.assert_allclose(direction, (b - a) / jnp.linalg.norm(b - a), atol=1e-5)


def test_freeflow_errors():
    with pytest.raises(ValueError, match="correction_fraction"):
        FreeFlow(correction_fraction=1.0)
    with pytest.raises(ValueError, match="class-conditional teacher"):
        FreeFlow(teacher_cfg_scale=2.0)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    from flowjax.training import train_and_evaluate
    from tests.training.conftest import tiny_config

    workdir = str(tmp_path_factory.mktemp("ff_teacher"))
    config = tiny_config(num_steps=10)
    config.model.time_scale = 1.0
    train_and_evaluate(config, workdir)
    return workdir, config


def test_freeflow_starts_from_the_teacher_and_keeps_it_frozen(teacher_run, tmp_path):
    from flowjax.training import Experiment, load_run, train_and_evaluate

    workdir, config = teacher_run
    _, _, teacher_params, _ = load_run(workdir)
    ff = config.copy_and_resolve_references()
    ff.objective.name = "freeflow"
    ff.init.workdir = workdir
    ff.eval.samplers = ("flowmap:1",)
    exp = Experiment(ff)
    state = exp.init_state(loaded=teacher_params)
    params = state.params
    for group in ("teacher", "fake"):
        for x, y in zip(jax.tree.leaves(params[group]), jax.tree.leaves(teacher_params)):
            np.testing.assert_array_equal(x, y)
    # The student starts as the teacher's velocity at t = 0, for every jump length.
    z = jax.random.normal(KEY, (16, 2))
    zeros = jnp.zeros((16,))
    v0 = exp.apply_fn(params, z, zeros, None, method="teacher_velocity")
    for d in (0.3, 1.0):
        u = exp.apply_fn(params, z, zeros, None, t_end=jnp.full((16,), d))
        np.testing.assert_allclose(u, v0, atol=1e-6)
    # No optimizer state for the frozen teacher; training leaves it unchanged.
    opt_leaves = jax.tree.leaves(state.opt_state)
    assert (
        sum(x.size for x in opt_leaves)
        < 3 * sum(x.size for x in jax.tree.leaves(params["student"]))
        + 2 * sum(x.size for x in jax.tree.leaves(params["fake"]))
        + 10
    )
    out = str(tmp_path / "ff")
    summary = train_and_evaluate(ff, out)
    assert summary["step"] == ff.train.num_steps
    _, _, trained, _ = load_run(out)
    for x, y in zip(jax.tree.leaves(trained["teacher"]), jax.tree.leaves(teacher_params)):
        np.testing.assert_array_equal(x, y)
    moved = [
        not np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(trained["student"]), jax.tree.leaves(params["student"]))
    ]
    assert any(moved)
    assert "sw_flowmap_nfe1" in summary["final"]
