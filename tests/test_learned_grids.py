"""Learned grids (flowjax.solvers.learned): exact on straight flows, never worse than uniform on
the Gaussian closed form, valid grids, finite gradients at t = 0 and 1, determinism, storage
and clear errors."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import solvers
from flowjax.solvers import learned
from flowjax.time import grids
from tests import gaussian_fixture as gf

ALL = ["euler", "heun", "midpoint", "rk4", "dpm++2m", "dpm++3m", "unipc2", "dpm++3m-unic"]
NFE = {"euler": 4, "heun": 4, "midpoint": 4, "rk4": 8, "dpm++3m": 6, "dpm++3m-unic": 6}
MU, Q = jnp.array([1.5, -0.5, 0.8]), 0.4


def straight_field(x, t, cond):
    """Data x1 = A x0 + MU (A = 0.5): x_t = (1 - t + A t) x0 + t MU is a straight line at
    constant speed (A = 0 is point-mass data, whose field is singular at t = 1)."""
    a, tb = 0.5, t[:, None]
    return (a - 1.0) * (x - tb * MU) / (1.0 - tb + a * tb) + MU


def gauss_field(x, t, cond):
    return gf.velocity(x, t[:, None], MU, Q)


def gauss_exact(x0):
    return gf.flow_map(x0, 0.0, 1.0, MU, Q)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def noise(key, m=32):
    return jax.random.normal(jax.random.PRNGKey(key), (m, 3), jnp.float64)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_straight_field_stays_exact(name):
    """Every consistent solver is exact on straight trajectories for every grid, so learning
    (whatever Adam does with rounding-level gradients) leaves the error at zero."""
    solver = solvers.make_solver(name)
    x0 = noise(0)
    sched = learned.learn_grid(
        solver, straight_field, x0, NFE.get(name, 4), x_ref=0.5 * x0 + MU, iters=20, lr=0.2
    )
    grid = jnp.asarray(sched.grid)
    x = solvers.sample(solver, straight_field, noise(1), grid)
    assert sched.loss < 1e-26 and sched.initial_loss < 1e-26
    np.testing.assert_allclose(x, 0.5 * noise(1) + MU, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_gaussian_learned_beats_uniform_and_gradients_finite(name):
    """On the Gaussian closed form the learned grid's held-out error is <= the uniform grid's,
    the grid stays strictly increasing inside [0, 1] with exact ends, and the gradient with
    respect to the logits is finite (the ends t = 0 and t = 1 are where logit(t) is infinite
    for DPM-Solver++ / UniC)."""
    solver = solvers.make_solver(name)
    nfe = NFE.get(name, 4)
    x0 = noise(0)
    loss = learned.grid_loss_fn(solver, gauss_field, x0, None, gauss_exact(x0), 0.0, 1.0)
    k = solver.num_steps_for_nfe(nfe)
    grad = jax.grad(loss)(jnp.zeros(k))
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    sched = learned.learn_grid(solver, gauss_field, x0, nfe, x_ref=gauss_exact(x0), iters=50)
    g = sched.grid
    assert g[0] == 0.0 and g[-1] == 1.0 and np.all(np.diff(g) > 0) and len(g) == k + 1
    held = noise(5, 256)

    def err(grid):
        x = solvers.sample(solver, gauss_field, held, jnp.asarray(grid))
        return float(jnp.sqrt(jnp.mean((x - gauss_exact(held)) ** 2)))

    uniform = err(grids.uniform_grid(k))
    assert sched.loss <= sched.initial_loss
    assert err(g) <= uniform, (err(g), uniform)
    assert err(g) < 0.9 * uniform  # learning actually helps on this curved flow


def test_grid_parametrisation_valid_for_extreme_logits():
    logits = jnp.asarray([30.0, -30.0, 0.0, 5.0, -200.0])
    g = np.asarray(learned.grid_from_logits(logits, 0.0, 1.0))
    assert g[0] == 0.0 and g[-1] == 1.0 and np.all(np.diff(g) >= 0)
    mid = learned.grid_from_logits(jnp.zeros(4), 0.0, 1.0)
    np.testing.assert_allclose(mid, grids.uniform_grid(4), atol=1e-15)


def test_best_init_is_the_fixed_grid_with_the_lowest_calibration_loss():
    """init="best" evaluates each candidate grid on the calibration batch only, starts from
    the lowest, and the learned loss is at most that (the best iterate is kept)."""
    solver = solvers.make_solver("euler")
    x0 = noise(0)
    x_ref = gauss_exact(x0)
    spec, losses = learned.resolve_init("best", solver, gauss_field, x0, None, x_ref, 4)
    assert set(losses) == set(learned.INIT_CANDIDATES)
    for name, value in losses.items():
        grid = jnp.asarray(grids.grid_from_spec(name, 4))
        x = solvers.sample(solver, gauss_field, x0, grid)
        assert value == pytest.approx(float(learned.endpoint_loss(x, x_ref)), rel=1e-10)
    assert losses[spec] == min(losses.values()) < max(losses.values())
    sched = learned.learn_grid(solver, gauss_field, x0, 4, x_ref=x_ref, init="best", iters=3)
    assert sched.init == spec and sched.initial_loss == pytest.approx(losses[spec], rel=1e-10)
    assert sched.loss <= min(losses.values())
    # One step: the candidates that need two (log-SNR) are skipped, not an error.
    _, one = learned.resolve_init("best", solver, gauss_field, x0, None, x_ref, 1)
    assert "uniform" in one and "logsnr" not in one
    assert learned.resolve_init("edm", solver, gauss_field, x0, None, x_ref, 4) == ("edm", {})


def test_optimise_returns_the_best_iterate_not_the_last():
    """Adam with a large step on (p - 1)^2 from 0 overshoots: the losses go 1, 0.25, 0.004,
    then up again. The returned parameters are those of the lowest loss in the history
    (an inner iterate: neither the start nor the end)."""

    def loss(p):
        return jnp.sum((p - 1.0) ** 2)

    best, info = learned.optimise(loss, jnp.zeros(1), iters=6, lr=0.5)
    history = np.asarray(info["history"])
    k = int(np.argmin(history))
    assert 0 < k < len(history) - 1 and history[-1] > 2 * history[k], history
    assert info["loss"] == history[k] and info["initial_loss"] == history[0]
    np.testing.assert_allclose(float(loss(best)), history[k], rtol=1e-12)


def test_learned_grid_is_never_worse_than_its_initial_grid():
    """The initial grid is iterate 0 and the best iterate is kept, so the stored grid's own
    calibration loss (recomputed here from its times) is at most the initial grid's. With a
    step far too large every later iterate is worse: the learned grid is the initial one."""
    solver = solvers.make_solver("euler")
    x0 = noise(0, 16)
    x_ref = gauss_exact(x0)
    sched = learned.learn_grid(solver, gauss_field, x0, 4, x_ref=x_ref, iters=10, lr=2.0)

    def calibration_loss(grid):
        x = solvers.sample(solver, gauss_field, x0, jnp.asarray(grid))
        return float(learned.endpoint_loss(x, x_ref))

    initial = calibration_loss(grids.uniform_grid(4))
    assert sched.initial_loss == pytest.approx(initial, rel=1e-12)
    assert calibration_loss(sched.grid) <= initial * (1 + 1e-12)
    np.testing.assert_allclose(sched.grid, grids.uniform_grid(4), atol=1e-12)
    # a step that does improve: the stored grid has the loss the optimiser reported
    better = learned.learn_grid(solver, gauss_field, x0, 4, x_ref=x_ref, iters=10, lr=0.5)
    assert calibration_loss(better.grid) == pytest.approx(better.loss, rel=1e-9)
    assert better.loss < 0.8 * initial


def test_calibration_deterministic_and_slack():
    solver = solvers.make_solver("heun")
    x0 = noise(0)
    a = learned.learn_grid(solver, gauss_field, x0, 4, reference="rk4:64", iters=10, seed=3)
    b = learned.learn_grid(solver, gauss_field, x0, 4, reference="rk4:64", iters=10, seed=3)
    assert a.times == b.times and a.loss == b.loss and a.key == b.key
    assert not np.allclose(a.times, [0.0, 0.5, 1.0])  # it did learn something
    # The seed is part of the key: another seed is another stored schedule.
    other = learned.learn_grid(solver, gauss_field, x0, 4, reference="rk4:64", iters=1, seed=4)
    assert other.key != a.key and "seed=4" in other.key
    # Slack: errors inside the ball cost nothing; a huge slack leaves nothing to learn.
    c = learned.learn_grid(solver, gauss_field, x0, 4, reference="rk4:64", iters=5, slack=10.0)
    assert c.loss == 0.0 and c.initial_loss == 0.0
    e = jnp.ones((4, 3))
    assert float(learned.endpoint_loss(e, jnp.zeros((4, 3)), 0.5)) == pytest.approx(0.25)
    assert float(jax.grad(lambda y: learned.endpoint_loss(y, y, 0.5))(e)[0, 0]) == 0.0


def test_store_roundtrip(tmp_path):
    solver = solvers.make_solver("midpoint")
    x0 = noise(0, 8)
    sched = learned.learn_grid(solver, gauss_field, x0, 4, reference="rk4:32", iters=5, step=7)
    store = learned.LearnedStore(str(tmp_path / learned.STORE_NAME))
    got, reused = store.get_or_compute(sched.key, lambda: sched)
    assert not reused
    again, reused = store.get_or_compute(sched.key, lambda: 1 / 0)
    assert reused and again == sched
    assert store.latest("grid", "midpoint", 4) == sched
    assert store.latest("grid", "midpoint", 6) is None
    # A later checkpoint is another key; latest() prefers it, the older one stays stored.
    newer = dataclasses.replace(sched, step=9, times=(0.0, 0.3, 1.0))
    store.put(newer)
    reloaded = learned.LearnedStore(store.path)
    assert reloaded.load_all() == {sched.key: sched, newer.key: newer}
    assert reloaded.latest("grid", "midpoint", 4) == newer
    assert "step=7" in sched.key and "M=8" in sched.key and "ref=rk4:32" in sched.key


def _schedule(**kw):
    fields = dict(
        kind="grid", solver="midpoint", nfe=4, times=(0.0, 0.5, 1.0), loss=0.1,
        initial_loss=0.2, init="uniform", reference="rk4:32", num_calibration=8, seed=0,
    )  # fmt: skip
    return learned.LearnedSchedule(**{**fields, **kw})


def test_calibrations_from_other_initial_grids_do_not_collide(tmp_path):
    # "best" that resolved to "uniform" and an explicit "uniform" are different requests.
    explicit = _schedule(requested_init="uniform")
    best = _schedule(requested_init="best", times=(0.0, 0.4, 1.0))
    shifted = _schedule(init="shifted", requested_init="shifted", times=(0.0, 0.7, 1.0))
    keys = {explicit.key, best.key, shifted.key}
    assert len(keys) == 3 and "init=best" in best.key and "init=uniform" in explicit.key
    store = learned.LearnedStore(str(tmp_path / learned.STORE_NAME))
    for schedule in (explicit, best, shifted):
        store.put(schedule)
    assert learned.LearnedStore(store.path).load_all() == {
        s.key: s for s in (explicit, best, shifted)
    }
    assert (
        store.get(learned.schedule_key("grid", "midpoint", 4, 8, "rk4:32", 0, init="best")) == best
    )


def test_store_files_from_before_the_init_key_are_read(tmp_path):
    # An entry written under the old key (no init, no requested_init field) is found under
    # the key of the grid it recorded starting from.
    old = _schedule().to_dict()
    del old["requested_init"]
    path = tmp_path / learned.STORE_NAME
    old_key = "grid|midpoint|NFE=4|M=8|ref=rk4:32|seed=0|slack=0|step=-1"
    path.write_text(json.dumps({old_key: old}))
    store = learned.LearnedStore(str(path))
    key = learned.schedule_key("grid", "midpoint", 4, 8, "rk4:32", 0, init="uniform")
    assert list(store.load_all()) == [key] and store.get(key) == _schedule()
    assert store.latest("grid", "midpoint", 4) == _schedule()


def test_bad_input_errors_clearly():
    solver = solvers.make_solver("euler")
    x0 = noise(0, 8)
    with pytest.raises(ValueError, match="reference resolution"):
        learned.learn_grid(solver, gauss_field, x0, 16, reference="rk4:8")
    with pytest.raises(ValueError, match="element shape"):
        learned.learn_grid(solver, gauss_field, x0, 4, element_shape=(2,))
    with pytest.raises(ValueError, match=r"\[M, \.\.\.\]"):
        learned.learn_grid(solver, gauss_field, jnp.zeros((3,)), 4)
    with pytest.raises(ValueError, match="reference"):
        learned.learn_grid(solver, gauss_field, x0, 4, reference="rk4")
    with pytest.raises(ValueError, match="batch size"):
        learned.learn_grid(solver, gauss_field, x0, 4, cond=jnp.zeros((3,), jnp.int32))
    with pytest.raises(ValueError, match="multiple of 2"):
        learned.learn_grid(solvers.make_solver("heun"), gauss_field, x0, 5)
