"""Straightness estimator: zero on straight constant-speed paths, hand-computed bent paths."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from flowjax.evaluation import straightness


def test_zero_for_straight_constant_speed_paths_on_any_grid():
    rng = np.random.default_rng(0)
    z0 = rng.normal(size=(4, 3, 2))
    z1 = rng.normal(size=(4, 3, 2))
    times = np.array([0.0, 0.1, 0.35, 0.4, 0.8, 1.0])
    traj = z0[None] + times[:, None, None, None] * (z1 - z0)[None]
    assert float(straightness(traj, times)) < 1e-10
    assert float(straightness(traj, times, time_weighted=True)) < 1e-10


def test_bent_path_uniform_grid_hand_value():
    # (0, 0) -> (1, 0) -> (1, 1) at t = 0, 1/2, 1: step velocities (2, 0), (0, 2), chord (1, 1);
    # squared deviations (1, 1) and (1, 1), mean 1.
    traj = np.array([[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 1.0]]])
    times = np.array([0.0, 0.5, 1.0])
    assert float(straightness(traj, times)) == pytest.approx(1.0, rel=1e-6)
    assert float(straightness(traj, times, time_weighted=True)) == pytest.approx(1.0, rel=1e-6)


def test_bent_path_non_uniform_grid_hand_value():
    # Same corners at t = 0, 1/4, 1: velocities (4, 0), (0, 4/3); deviations (3, -1), (-1, 1/3).
    # Unweighted: mean of (9, 1, 1, 1/9) = 25/9. Weighted: 1/4 * 5 + 3/4 * 5/9 = 5/3.
    traj = np.array([[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 1.0]]])
    times = np.array([0.0, 0.25, 1.0])
    assert float(straightness(traj, times)) == pytest.approx(25.0 / 9.0, rel=1e-6)
    assert float(straightness(traj, times, time_weighted=True)) == pytest.approx(5 / 3, rel=1e-6)


def test_straight_line_at_varying_speed_is_not_straight():
    times = np.linspace(0.0, 1.0, 9)
    z0, z1 = np.array([[0.0, 0.0]]), np.array([[2.0, 1.0]])
    traj = z0[None] + (times**2)[:, None, None] * (z1 - z0)[None]
    assert float(straightness(traj, times)) > 0.1


def test_uniform_grid_matches_rectified_flow_formula_and_jits():
    rng = np.random.default_rng(1)
    n = 5
    traj = rng.normal(size=(n + 1, 3, 4)).astype(np.float32)
    times = np.linspace(0.0, 1.0, n + 1).astype(np.float32)
    dt = 1.0 / n
    expected = np.mean(
        [((traj[k + 1] - traj[k]) / dt - (traj[n] - traj[0])) ** 2 for k in range(n)]
    )
    assert float(straightness(traj, times)) == pytest.approx(expected, rel=1e-5)
    assert float(jax.jit(straightness)(traj, times)) == pytest.approx(expected, rel=1e-5)


def test_validation_errors():
    traj = np.zeros((3, 2, 2))
    with pytest.raises(ValueError, match="matching trajectory"):
        straightness(traj, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="strictly monotone"):
        straightness(traj, np.array([0.0, 0.5, 0.5]))
    with pytest.raises(ValueError, match="at least 2 time points"):
        straightness(np.zeros((1, 2)), np.array([0.0]))
    with pytest.raises(ValueError, match=r"\[N \+ 1, B"):
        straightness(np.zeros(3), np.array([0.0, 0.5, 1.0]))
