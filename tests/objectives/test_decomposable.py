"""Decomposable Flow Matching: S = 1 is flow matching, masking, the training time sampler,
the staged sampler's schedule, the network's FLOPs, and the errors at the public boundary."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import pyramid, solvers
from flowjax.models import DecomposableDiT, make_apply_fn
from flowjax.objectives import DecomposableFlowMatching, FlowMatching, make_objective
from flowjax.time import laws
from tests.tolerance import assert_equal_up_to_rounding

SHAPE = (8, 8, 1)
B = 8


def _net(num_stages, **kw):
    return DecomposableDiT(
        num_stages=num_stages,
        patch_size=1,
        hidden_size=16,
        depth=1,
        num_heads=2,
        num_classes=10,
        **kw,
    )


def _params(model, key=0):
    x = jnp.zeros((1, *SHAPE))
    params = model.init(jax.random.PRNGKey(key), x, jnp.zeros(1), jnp.zeros(1, jnp.int32))
    # Randomise the zero-initialised heads and gates so the output depends on every input.
    leaves, tree = jax.tree.flatten(params["params"])
    keys = jax.random.split(jax.random.PRNGKey(key + 1), len(leaves))
    leaves = [leaf + 0.1 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


def _batch(key=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(key))
    return {
        "x1": jnp.tanh(jax.random.normal(k1, (B, *SHAPE))),
        "label": jax.random.randint(k2, (B,), 0, 10),
    }


def test_one_stage_is_flow_matching_with_the_same_draws_loss_and_gradients():
    model = _net(1)
    params, apply = _params(model), make_apply_fn(model)
    dfm = DecomposableFlowMatching(num_stages=1, num_classes=10, label_dropout=0.3)
    fm = FlowMatching(time_sampler=laws.LogitNormal(0.0, 1.0), num_classes=10, label_dropout=0.3)

    def fm_apply(p, x, t, cond, **kw):  # the same network, seeing the image as its one stage
        return apply(p, x[:, None], t, cond, **kw)[:, 0]

    batch, key = _batch(), jax.random.PRNGKey(7)
    (l_dfm, _), g_dfm = jax.value_and_grad(dfm.loss_fn, has_aux=True)(params, apply, batch, key)
    (l_fm, _), g_fm = jax.value_and_grad(fm.loss_fn, has_aux=True)(params, fm_apply, batch, key)
    assert_equal_up_to_rounding((l_dfm, g_dfm), (l_fm, g_fm))  # two float32 programs


def test_a_masked_stage_cannot_reach_the_output_or_the_loss():
    model = _net(2)
    params, apply = _params(model), make_apply_fn(model)
    x = jax.random.normal(jax.random.PRNGKey(3), (B, 2, *SHAPE))
    t, y = jnp.full((B,), 0.4), jnp.arange(B) % 10
    times = jnp.stack([t, jnp.zeros(B)], axis=1)
    w = jax.random.normal(jax.random.PRNGKey(4), (B, 2, *SHAPE))

    def probe(x_, mask):
        out = apply(params, x_, t, y, stage_times=times, stage_mask=mask)
        return jnp.sum(w * out)

    masked = jnp.tile(jnp.array([[1.0, 0.0]]), (B, 1))
    grad = jax.grad(probe)(x, masked)
    assert float(jnp.abs(grad[:, 1]).max()) == 0.0  # exactly: the masked stage is zeroed
    assert float(jnp.abs(grad[:, 0]).max()) > 0.0
    changed = x.at[:, 1].set(5.0 * x[:, 1] + 1.0)
    np.testing.assert_array_equal(
        apply(params, x, t, y, stage_times=times, stage_mask=masked),
        apply(params, changed, t, y, stage_times=times, stage_mask=masked),
    )
    # ... while a started stage does reach the output.
    assert float(jnp.abs(jax.grad(probe)(x, jnp.ones((B, 2)))[:, 1]).max()) > 0.0

    # Loss: with stage 1 always the one generated, stage 2's prediction gets no gradient.
    obj = DecomposableFlowMatching(num_stages=2, stage_probs=(1.0, 0.0), num_classes=10)

    def loss_with_offsets(offsets):
        def shifted(p, x_, t_, c, **kw):
            return apply(p, x_, t_, c, **kw) + offsets[None, :, None, None, None]

        return obj.loss_fn(params, shifted, _batch(), jax.random.PRNGKey(5))[0]

    g = jax.grad(loss_with_offsets)(jnp.zeros(2))
    assert float(g[1]) == 0.0 and float(g[0]) != 0.0


def test_training_sampler_masks_later_stages_and_follows_p_q():
    obj = DecomposableFlowMatching(num_stages=3, stage_probs=(0.7, 0.2, 0.1))
    n = 40_000
    q, times, mask = jax.jit(obj.sample_stage_times, static_argnums=1)(jax.random.PRNGKey(0), n)
    q, times, mask = map(np.asarray, (q, times, mask))
    idx = np.arange(3)[None, :]
    later = idx > q[:, None]
    assert np.all(times[later] == 0.0) and np.all(mask[later] == 0.0)
    assert np.all(mask[~later] == 1.0) and np.all((times[~later] > 0) & (times[~later] < 1))
    freq = np.bincount(q, minlength=3) / n
    np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.01)  # ~4.5 binomial sd
    logit = lambda t: np.log(t) - np.log1p(-t)  # noqa: E731
    current = times[np.arange(n), q]
    earlier = times[idx < q[:, None]]
    assert abs(logit(current).mean()) < 0.03 and abs(logit(current).std() - 1) < 0.03
    assert abs(logit(earlier).mean() - 1.5) < 0.05  # the paper's location
    # Two stages, the paper's p_q = (0.9, 0.1).
    q2, _, _ = DecomposableFlowMatching().sample_stage_times(jax.random.PRNGKey(1), n)
    assert abs(float(jnp.mean(q2 == 0)) - 0.9) < 0.01


@pytest.mark.parametrize("tau", [0.9, 0.7])
def test_staged_schedule_is_monotone_hits_tau_and_ends_at_one(tau):
    obj = DecomposableFlowMatching(thresholds=(tau,))
    phases = obj.schedule(40, solvers.Euler())
    assert [len(p) - 1 for p in phases] == [30, 10]  # the paper's (T_1, T_2)
    t1, t2 = phases
    assert np.all(t1[:, 1] == 0.0)  # stage 2 waits, masked, during phase 1
    np.testing.assert_allclose(t1[:, 0], tau * np.linspace(0, 1, 31), atol=1e-12)
    assert t1[-1, 0] == tau and t1[0, 0] == 0.0
    np.testing.assert_allclose(t2[:, 0], tau + (1 - tau) * t2[:, 1], atol=1e-12)
    allt = np.concatenate(phases)
    assert np.all(np.diff(allt, axis=0) >= 0)
    assert np.all(allt[-1] == 1.0)
    assert obj.phase_steps(8) == (6, 2) and obj.phase_steps(2) == (1, 1)


def test_three_stage_schedule_chains_the_thresholds():
    obj = DecomposableFlowMatching(
        num_stages=3, stage_probs=(0.8, 0.1, 0.1), thresholds=(0.8, 0.6), phase_weights=(1, 1, 1)
    )
    phases = obj.schedule(6, solvers.Euler())
    allt = np.concatenate(phases)
    assert np.all(np.diff(allt, axis=0) >= 0) and np.all(allt[-1] == 1.0)
    assert phases[0][-1, 0] == 0.8 and phases[1][-1, 1] == 0.6
    np.testing.assert_allclose(phases[1][-1, 0], 0.8 + 0.2 * 0.6)


def test_staged_sampler_calls_the_network_on_the_schedule_and_each_stage_travels_one():
    obj = DecomposableFlowMatching(thresholds=(0.8,))
    calls = []

    def velocity(params, x, t, cond, *, stage_times, stage_mask):
        jax.debug.callback(
            lambda *a: calls.append([np.asarray(v) for v in a]), t, stage_times, stage_mask
        )
        return jnp.ones_like(x) * params  # a constant field: Euler moves each stage by its dt

    x0 = jax.random.normal(jax.random.PRNGKey(0), (3, *obj.noise_shape(SHAPE)))
    for solver, nfe, evals in [(solvers.Euler(), 8, 8), (solvers.Heun(), 8, 8)]:
        calls.clear()
        run = obj.make_sampler(velocity, solver, nfe, "uniform")
        out = run(jnp.float32(1.0), x0, None)
        jax.effects_barrier()
        assert out.shape == (3, *SHAPE)
        assert len(calls) == evals
        # Every stage travels exactly from 0 to 1: x_s = eps_s + 1.
        expected = pyramid.recompose([p + 1.0 for p in pyramid.unpack(x0)])
        np.testing.assert_allclose(out, expected, atol=1e-5)
    # Euler: phase 1 (6 calls) has only stage 1 active at t_1 = 0.8 k/6; stage 2 at 0.
    calls.clear()
    obj.make_sampler(velocity, solvers.Euler(), 8, "uniform")(jnp.float32(1.0), x0, None)
    jax.effects_barrier()
    t = np.stack([c[1][0] for c in calls])
    masks = np.stack([c[2][0] for c in calls])
    np.testing.assert_array_equal(masks, [[1, 0]] * 6 + [[1, 1]] * 2)
    np.testing.assert_allclose(t[:6, 0], 0.8 * np.arange(6) / 6, atol=1e-6)
    assert np.all(t[:6, 1] == 0) and np.all(np.diff(t, axis=0) >= -1e-7)
    np.testing.assert_allclose([c[0][0] for c in calls], [*t[:6, 0], *t[6:, 1]], atol=1e-7)


def test_sampler_with_the_network_runs_under_jit():
    model = _net(2)
    params, apply = _params(model), make_apply_fn(model)
    obj = DecomposableFlowMatching(num_classes=10)
    run = obj.make_sampler(apply, solvers.Euler(), 4, "uniform")
    x0 = jax.random.normal(jax.random.PRNGKey(0), (B, *obj.noise_shape(SHAPE)))
    out = run(params, x0, jnp.arange(B) % 10)
    assert out.shape == (B, *SHAPE) and bool(jnp.all(jnp.isfinite(out)))


def test_forward_flops_match_xla_cost_analysis():
    x, t, y = jnp.zeros((2, 16, 16, 4)), jnp.zeros(2), jnp.zeros(2, jnp.int32)
    counts = []
    for depth in (1, 2):
        model = DecomposableDiT(
            num_stages=2, patch_size=2, hidden_size=64, depth=depth, num_heads=2, num_classes=10
        )
        params = model.init(jax.random.PRNGKey(0), x, t, y)["params"]
        xp = jnp.zeros((2, 2, 16, 16, 4))
        cost = jax.jit(make_apply_fn(model)).lower(params, xp, t, y).compile().cost_analysis()
        xla = float((cost[0] if isinstance(cost, list) else cost)["flops"])
        counts.append((xla, 2 * model.forward_flops((16, 16, 4))))
    for xla, ours in counts:
        assert 1.0 <= xla / ours < 1.05, (xla, ours)
    per_block = (counts[1][0] - counts[0][0]) / (counts[1][1] - counts[0][1])
    assert (
        1.0 <= per_block < 1.06
    )  # width 64: element-wise work is a larger share than at DiT sizes


def test_bad_configuration_is_refused_with_clear_errors():
    with pytest.raises(ValueError, match="thresholds must give 1 value"):
        DecomposableFlowMatching(thresholds=(0.5, 0.6))
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        DecomposableFlowMatching(thresholds=(1.2,))
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        DecomposableFlowMatching(thresholds=(0.0,))
    with pytest.raises(ValueError, match="summing to 1"):
        DecomposableFlowMatching(stage_probs=(0.5, 0.6))
    with pytest.raises(ValueError, match="2 non-negative probabilities"):
        DecomposableFlowMatching(stage_probs=(1.0,))
    with pytest.raises(ValueError, match="set stage_probs"):
        DecomposableFlowMatching(num_stages=3)
    with pytest.raises(ValueError, match="phase_weights"):
        DecomposableFlowMatching(phase_weights=(1.0, 0.0))
    with pytest.raises(ValueError, match="num_stages must be"):
        DecomposableFlowMatching(num_stages=0)
    obj = DecomposableFlowMatching()
    with pytest.raises(ValueError, match="cannot be halved"):
        obj.noise_shape((7, 8, 1))
    with pytest.raises(ValueError, match="cannot be halved 2"):
        _net(3).check_input((1, 6, 8, 1))
    with pytest.raises(ValueError, match="patch_size=4"):
        DecomposableDiT(num_stages=2, patch_size=4).check_input((1, 4, 4, 1))
    with pytest.raises(ValueError, match="use one of: euler, heun, midpoint, rk4"):
        obj.make_sampler(lambda *a, **k: None, solvers.make_solver("dpm++2m"), 8, "uniform")
    with pytest.raises(ValueError, match="too few"):
        obj.make_sampler(lambda *a, **k: None, solvers.Euler(), 1, "uniform")
    with pytest.raises(ValueError, match="model.name='decomposable_dit'"):
        obj.build_model(lambda use_end_time: _net(1))
    import ml_collections

    cfg = ml_collections.ConfigDict(dict(name="decomposable", decomposable=dict(tau=0.5)))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['tau'\] in objective.decomposable"):
        make_objective(cfg)
    cfg.decomposable = dict(thresholds=(0.7,), current_sampler="logit_normal,loc=0.5")
    built = make_objective(cfg)
    assert built.thresholds == (0.7,) and built.current_sampler == laws.LogitNormal(0.5, 1.0)


def test_thresholds_set_at_sampling_time_equal_an_objective_built_with_them():
    """``"euler:8@tau=0.6,phases=1/1"`` on a default objective samples exactly as an objective
    whose config holds those values (built from its config section, sampled without options),
    and the network sees the stage times of that schedule, written out here by hand."""
    import ml_collections

    from flowjax.evaluation.evaluator import eval_spec_label, parse_eval_spec

    pieces, options = parse_eval_spec("euler:8@tau=0.6,phases=1/1")
    assert options == {"thresholds": (0.6,), "phase_weights": (1.0, 1.0)}
    assert eval_spec_label(pieces, options) == "euler_nfe8_tau0.6_phases1-1"
    model = _net(2)
    params, apply = _params(model), make_apply_fn(model)
    x0 = jax.random.normal(
        jax.random.PRNGKey(0), (B, *DecomposableFlowMatching().noise_shape(SHAPE))
    )
    cond = jnp.arange(B) % 10
    configured = make_objective(
        ml_collections.ConfigDict(
            dict(name="decomposable", decomposable=dict(thresholds=(0.6,), phase_weights=(1, 1)))
        ),
        num_classes=10,
    )
    default = DecomposableFlowMatching(num_classes=10)
    assert default.thresholds != configured.thresholds
    euler = solvers.Euler()
    built = configured.make_sampler(apply, euler, 8, "uniform")(params, x0, cond)
    chosen = default.make_sampler(apply, euler, 8, "uniform", **options)(params, x0, cond)
    plain = default.make_sampler(apply, euler, 8, "uniform")(params, x0, cond)
    np.testing.assert_array_equal(chosen, built)
    assert float(jnp.max(jnp.abs(chosen - plain))) > 1e-3
    # The override's schedule: 4 + 4 Euler steps; phase 1 moves stage 1 to tau = 0.6 with
    # stage 2 masked at 0; phase 2 moves stage 2 over [0, 1] and stage 1 over [0.6, 1].
    calls = []

    def velocity(params, x, t, cond, *, stage_times, stage_mask):
        jax.debug.callback(
            lambda *a: calls.append([np.asarray(v)[0] for v in a]), t, stage_times, stage_mask
        )
        return jnp.zeros_like(x)

    default.make_sampler(velocity, euler, 8, "uniform", **options)(None, x0, None)
    jax.effects_barrier()
    u = np.arange(4) / 4
    want_times = np.concatenate([np.stack([0.6 * u, 0 * u], 1), np.stack([0.6 + 0.4 * u, u], 1)])
    np.testing.assert_allclose(np.stack([c[1] for c in calls]), want_times, atol=1e-6)
    np.testing.assert_array_equal(np.stack([c[2] for c in calls]), [[1, 0]] * 4 + [[1, 1]] * 4)
    np.testing.assert_allclose([c[0] for c in calls], [*0.6 * u, *u], atol=1e-6)
    with pytest.raises(ValueError, match="thresholds must give 1 value"):
        DecomposableFlowMatching().make_sampler(
            apply, solvers.Euler(), 8, "uniform", thresholds=(0.5, 0.7)
        )
    with pytest.raises(ValueError, match="needs numbers joined by '/'"):
        parse_eval_spec("euler:8@tau=high")
