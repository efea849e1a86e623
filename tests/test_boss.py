"""BOSS (docs/maths/boss.md): the DP against brute force, zero cost on straight flows, the cost
matrix against its definition, stored schedules, and the straightening objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import data as data_lib
from flowjax.exact_fields import GaussianMixtureField
from flowjax.objectives.straightening import BossStraightening, straightening_tuples
from flowjax.solvers import Euler, Heun, boss, sample
from flowjax.time import grids

MU = jnp.array([0.7, -1.2])


def straight_field(x, t, cond):
    """Point-mass data: every trajectory is a straight line at constant speed."""
    return (MU - x) / (1.0 - t[:, None])


@pytest.fixture(scope="module")
def mixture_costs():
    field = GaussianMixtureField.ring(4, radius=2.0, std=0.4)
    grid = grids.uniform_grid(8)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (64, 2))
    traj = boss.reference_trajectories(field.velocity, x0, grid)
    return field, grid, traj, boss.jump_costs(field.velocity, traj, grid)


def test_dp_equals_brute_force(mixture_costs):
    """Small N = 8, every K: on the mixture's real costs and on random costs."""
    *_, costs = mixture_costs
    rng = np.random.default_rng(0)
    random_costs = np.triu(rng.uniform(0.0, 1.0, (9, 9)), 1)
    for c in (costs, random_costs):
        for k in range(1, 9):
            path, cost = boss.bellman_path(c, k)
            want_path, want_cost = boss.brute_force_path(c, k)
            assert cost == pytest.approx(want_cost, rel=1e-12, abs=1e-15)
            assert boss.path_cost(c, path) == pytest.approx(cost, rel=1e-12, abs=1e-15)
            assert len(path) == k + 1 and path[0] == 0 and path[-1] == 8
            assert np.all(np.diff(path) > 0)
            if c is random_costs:  # continuous random costs: the optimum is unique
                np.testing.assert_array_equal(path, want_path)


def test_costs_match_their_definition(mixture_costs):
    field, grid, traj, costs = mixture_costs
    for i, j in [(0, 8), (2, 5), (6, 7)]:
        v = field.velocity(traj[i], jnp.full((64,), grid[i], jnp.float32))
        jump = traj[i] + (grid[j] - grid[i]) * v
        want = float(jnp.mean(jnp.sum((jump - traj[j]) ** 2, axis=1)))
        assert costs[i, j] == pytest.approx(want, rel=1e-5)
    assert np.all(np.isinf(costs[np.tril_indices(9)]))
    np.testing.assert_allclose(np.diag(costs, 1), 0.0, atol=1e-10)  # Euler reproduces itself
    # Full fine path: K = N has zero cost; if N % K == 0, V(0, K) <= the uniform path's cost.
    assert boss.bellman_path(costs, 8)[1] == pytest.approx(0.0, abs=1e-10)
    for k in (1, 2, 4):
        assert boss.bellman_path(costs, k)[1] <= boss.path_cost(costs, np.arange(0, 9, 8 // k))


def test_generic_solver_costs_use_the_solver_step(mixture_costs):
    field, grid, traj, _ = mixture_costs
    costs = boss.jump_costs(field.velocity, traj, grid, solver=Heun())
    i, j = 1, 6
    x, _ = sample(Heun(), field.velocity, traj[i], [grid[i], grid[j]]), None
    want = float(jnp.mean(jnp.sum((x - traj[j]) ** 2, axis=1)))
    assert costs[i, j] == pytest.approx(want, rel=1e-5)


def test_straight_field_costs_nothing(capsys):
    grid = grids.uniform_grid(12)
    x0 = jax.random.normal(jax.random.PRNGKey(1), (32, 2))
    schedule = boss.compute_schedule(straight_field, x0, 3, fine_steps=12, progress=True)
    bar = capsys.readouterr().err  # the search's progress bar, forced on
    assert "BOSS: dynamic programme" in bar and "3/3" in bar
    traj = boss.reference_trajectories(straight_field, x0, grid)
    costs = boss.jump_costs(straight_field, traj, grid)
    finite = costs[np.isfinite(costs)]
    assert finite.size == 12 * 13 // 2 and np.max(finite) < 1e-9
    assert schedule.cost < 1e-9 and schedule.num_steps == 3
    # Euler on the chosen grid is exact, as on any grid.
    x = sample(Euler(), straight_field, x0, schedule.grid)
    np.testing.assert_allclose(x, jnp.broadcast_to(MU, x.shape), rtol=1e-5, atol=1e-5)


def test_schedule_store_reuses_by_key(tmp_path, mixture_costs):
    field, *_ = mixture_costs
    store = boss.ScheduleStore(str(tmp_path / "boss_schedules.json"))
    calls = []

    def compute():
        calls.append(1)
        x0 = jax.random.normal(jax.random.PRNGKey(2), (16, 2))
        return boss.compute_schedule(field.velocity, x0, 3, fine_steps=9, step=7)

    key = boss.schedule_key("euler", 3, 9, 16, "euler", 7)
    first, reused = store.get_or_compute(key, compute)
    again, reused_again = store.get_or_compute(key, compute)
    assert (reused, reused_again, len(calls)) == (False, True, 1)
    assert again == first and again.grid.shape == (4,) and again.times[-1] == 1.0
    assert first.uniform_cost is not None and first.cost <= first.uniform_cost
    other = boss.schedule_key("euler", 3, 9, 16, "euler", 8)  # another checkpoint
    assert store.get(other) is None


def test_bad_input_gives_clear_errors(mixture_costs):
    *_, costs = mixture_costs
    with pytest.raises(ValueError, match="K=9 steps from a fine grid of N=8"):
        boss.bellman_path(costs, 9)
    with pytest.raises(ValueError, match="fine_steps >= 20"):
        boss.compute_schedule(straight_field, jnp.zeros((4, 2)), 20, fine_steps=10)
    with pytest.raises(ValueError, match="square"):
        boss.bellman_path(np.zeros((3, 4)), 1)
    with pytest.raises(ValueError, match=r"\[N \+ 1, M, \.\.\.\]"):
        boss.jump_costs(straight_field, jnp.zeros((5, 4, 2)), grids.uniform_grid(8))


def test_straightening_loss_is_zero_on_straight_trajectories():
    """The chord (x_b - x_a)/(b - a) equals the velocity of a straight constant-speed flow."""
    grid = grids.uniform_grid(10)
    x0 = jax.random.normal(jax.random.PRNGKey(3), (16, 2))
    traj = boss.reference_trajectories(straight_field, x0, grid)
    tuples = straightening_tuples(traj, grid, [0, 3, 7, 10])
    assert tuples["x_a"].shape == (48, 2) and tuples["a"].shape == (48,)
    batch = {k: jnp.asarray(v) for k, v in tuples.items()}

    def apply_fn(params, x, t, cond, **_):
        return straight_field(x, t, cond)

    loss, _ = BossStraightening().loss_fn(None, apply_fn, batch, jax.random.PRNGKey(0))
    assert float(loss) < 1e-9
    # ... and not zero for a curved flow.
    field = GaussianMixtureField.ring(4)
    traj = boss.reference_trajectories(field.velocity, x0, grid)
    batch = {k: jnp.asarray(v) for k, v in straightening_tuples(traj, grid, [0, 5, 10]).items()}
    loss, _ = BossStraightening().loss_fn(
        None, lambda p, x, t, c, **_: field.velocity(x, t), batch, jax.random.PRNGKey(0)
    )
    assert float(loss) > 1e-3


def test_array_source_batches_are_deterministic_and_sharded():
    base = data_lib.ToySource("8gaussians", batch_size=8, seed=0)
    arrays = {"x_a": np.arange(40.0).reshape(20, 2), "a": np.arange(20.0)}
    full = data_lib.ArraySource(arrays, base=base, batch_size=8, seed=3)
    halves = [
        data_lib.ArraySource(arrays, base=base, batch_size=8, seed=3, shard_index=i, shard_count=2)
        for i in range(2)
    ]
    b5 = full.get_batch(5)
    np.testing.assert_array_equal(b5["x_a"][:, 0], 2 * b5["a"])  # rows stay aligned
    np.testing.assert_array_equal(next(full.iterator(5))["a"], b5["a"])
    np.testing.assert_array_equal(np.concatenate([h.get_batch(5)["a"] for h in halves]), b5["a"])
    assert full.kind == "points" and full.element_shape == (2,)
    with pytest.raises(ValueError, match="same number of rows"):
        data_lib.ArraySource({"a": np.zeros(3), "b": np.zeros(4)}, base=base, batch_size=2, seed=0)
