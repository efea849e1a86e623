"""The selection logic of SMC, search over paths and RBF on its own (docs/maths/sde_search.md).

The end-to-end tests of test_search.py end with an argmax over particles, which hides most of a
method's own logic. Here each selection step is checked by itself against what it must do: SMC's
reweighting (the increments telescope), its ESS (from normalised weights) and trigger, its
multinomial resampling frequencies (chi-square) and the weights after; on a Gaussian problem
whose reward-tilted target is known in closed form, SMC's final particles follow that target.
Search over paths keeps its best copies; RBF accepts the step's best proposal when its quota
runs out, and its two threshold rules accept differently on a hand-built reward sequence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import search
from flowjax.search.rbf import THRESHOLDS, update
from flowjax.search.search_over_paths import keep_best
from flowjax.search.smc import effective_sample_size, resample, reweight
from tests.search.test_search import PROPOSALS, STEPS

# -- SMC ----------------------------------------------------------------------------------------


def test_smc_log_weight_increments_telescope_to_the_last_reward():
    """Without resampling, log w after rewards r_0..r_K is r_K / lambda (float64 throughout)."""
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(5, 3, 4))  # grid points, problems, particles
    lam = 0.3
    logw, prev = np.zeros((3, 4)), np.zeros((3, 4))
    for r in rewards:
        logw, prev = reweight(logw, r, prev, lam), r
    np.testing.assert_allclose(logw, rewards[-1] / lam, rtol=1e-12, atol=1e-12)


def test_smc_ess_comes_from_normalised_weights_and_triggers_resampling_below_the_threshold():
    n, threshold = 8, 0.5
    for k in range(1, n + 1):
        # k particles of equal weight and n - k of weight zero: ESS = k exactly.
        logw = jnp.where(jnp.arange(n) < k, 0.0, -jnp.inf)[None, :]
        for shift in (-40.0, 0.0, 40.0):  # the ESS of the normalised weights ignores a shift
            ess = float(effective_sample_size(logw + shift)[0])
            assert ess == pytest.approx(k, rel=1e-5), (k, shift)
            _, after, ess2, do = resample(jax.random.key(0), logw + shift, threshold)
            assert bool(do[0]) == (k < threshold * n), (k, shift)  # k = 4 = 0.5 n: no resample
            assert float(ess2[0]) == pytest.approx(k, rel=1e-5)
    rng = np.random.default_rng(1)
    ess = np.asarray(effective_sample_size(jnp.asarray(3 * rng.normal(size=(50, n)))))
    assert np.all(ess >= 1 - 1e-5) and np.all(ess <= n * (1 + 1e-5))


def test_smc_resampling_draws_parents_in_proportion_to_the_weights_and_resets_them():
    levels, per_level = 4, 1000
    n = levels * per_level
    level = np.repeat(np.arange(levels), per_level)
    logw = np.stack(
        [
            1.2 * level,  # weight grows with the level (ESS 0.46 n)
            -1.2 * level + 5.0,  # the reverse, shifted
            np.full(n, 3.0),  # uniform: ESS = n, never resampled
        ]
    ).astype(np.float32)
    idx, after, ess, do = resample(jax.random.key(3), jnp.asarray(logw), 0.5)
    idx, after = np.asarray(idx), np.asarray(after)
    assert np.asarray(do).tolist() == [True, True, False]
    for row in (0, 1):
        # Chi-square of the parents' levels against n * p_level (3 dof; 21.1 is p = 1e-4).
        p = np.exp(logw[row, ::per_level] - logw[row].max()) * per_level
        expected = n * p / p.sum()
        counts = np.bincount(level[idx[row]], minlength=levels)
        chi2 = float(np.sum((counts - expected) ** 2 / expected))
        assert chi2 < 21.1, (row, counts.tolist(), expected.tolist())
        np.testing.assert_array_equal(after[row], 0.0)  # uniform weights after resampling
    np.testing.assert_array_equal(idx[2], np.arange(n))  # not resampled: the identity ...
    np.testing.assert_array_equal(after[2], logw[2])  # ... and the weights are kept
    assert float(ess[2]) == pytest.approx(n, rel=1e-3)  # float32 sum of n squares: n eps


def _affine_moments(prop):
    """Mean and variance per coordinate of the proposal's samples: with the exact Gaussian
    velocity every step is affine in x plus Gaussian noise, x' = A x + b + c xi, so the samples
    are Gaussian; A, b, c are read off the step itself and the moments propagated in float64."""
    step = jax.jit(
        lambda x, noise, k: prop.advance(
            prop.evaluate(x, prop.times(x.dtype)[k], None), x, k, noise
        )
    )
    mean, var = np.zeros(2), np.ones(2)
    zero, one = jnp.zeros((1, 2)), jnp.ones((1, 2))
    for k in range(prop.num_steps):
        b, a, c = (
            np.asarray(step(*xn, k)[0], np.float64)
            for xn in [(zero, zero), (one, zero), (zero, one)]
        )
        a, c = a - b, c - b
        mean, var = a * mean + b, a**2 * var + c**2
    return mean, var


@pytest.mark.parametrize("threshold", [1.0, 0.5])
def test_smc_particles_follow_the_reward_tilted_target_in_closed_form(threshold):
    """Reward a x[0] with temperature lambda: the target p(x) exp(a x[0] / lambda) of a Gaussian
    p = N(m, v) is N(m + v a / lambda, v) in coordinate 0 and p itself in coordinate 1.

    threshold 1: resampled at every step, so the final weights are uniform and the particles
    themselves are the tilted sample; threshold 0.5: the weighted particles estimate it."""
    prop = PROPOSALS["sde"]
    a, lam, problems, n = 1.0, 0.5, 16, 1000
    mean, var = _affine_moments(prop)
    want_mean = mean + np.array([var[0] * a / lam, 0.0])
    res = search.smc(
        prop,
        lambda x: a * x[:, 0],
        jax.random.key(7),
        budget=n * STEPS,
        num_problems=problems,
        temperature=lam,
        ess_threshold=threshold,
    )
    x = np.asarray(res.info["particles"], np.float64)  # [P, n, 2]
    logw = np.asarray(res.info["log_weights"], np.float64)
    assert x.shape == (problems, n, 2) and logw.shape == (problems, n)
    if threshold == 1.0:
        np.testing.assert_array_equal(logw, 0.0)  # the last step resampled every problem
    w = np.exp(logw - logw.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    means = np.einsum("pn,pnd->pd", w, x)  # per problem
    variances = np.einsum("pn,pnd->pd", w, (x - means[:, None]) ** 2)
    # Over 48 problems of 2000 particles the per-problem estimates spread by 0.023 (mean) and
    # 0.02 (variance), so at 1000 particles the averages over 16 problems have standard errors
    # of about 0.008 and 0.007: the tolerances are 5 of them.
    np.testing.assert_allclose(means.mean(0), want_mean, atol=0.04)
    np.testing.assert_allclose(variances.mean(0), var, atol=0.035)
    assert np.all(np.asarray(res.info["resamples"]) >= 1)


# -- search over paths --------------------------------------------------------------------------


def test_search_over_paths_keeps_the_best_copies_of_each_problem():
    problems, m, beam = 3, 6, 2
    rewards = np.array(
        [
            [0.3, 2.0, -1.0, 0.5, 1.5, 0.0],
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
            [1.0, 7.0, 1.0, 7.0, 2.0, 7.0],
        ],
        np.float32,
    )
    xs = jnp.arange(problems * m, dtype=jnp.float32)[:, None] * jnp.ones((1, 2))  # x = its index
    kept = np.asarray(keep_best(xs, jnp.asarray(rewards.reshape(-1)), problems, beam))
    assert kept.shape == (problems * beam, 2)
    ids = kept[:, 0].astype(int).reshape(problems, beam) - m * np.arange(problems)[:, None]
    # Best first; on ties the earlier copy.
    assert ids.tolist() == [[1, 4], [0, 1], [1, 3]]


# -- RBF ----------------------------------------------------------------------------------------


def _rbf_trace(rewards, threshold, quota=3, num_steps=4, bar=1.0):
    """Feed proposal rewards one by one to RBF's update (one problem; proposal i is x = i);
    return, after each, (grid index, current state's id, bar, step's best id)."""
    one = lambda v, dtype=jnp.float32: jnp.asarray([v], dtype)  # noqa: E731
    st = dict(
        x=jnp.full((1, 1), -1.0),
        u=jnp.full((1, 1), -10.0),
        bar=one(bar),
        k=one(0, jnp.int32),
        quota=one(quota, jnp.int32),
        used=one(0, jnp.int32),
        bx=jnp.full((1, 1), -1.0),
        bu=jnp.full((1, 1), -10.0),
        br=one(-jnp.inf),
        counts=jnp.zeros((1, num_steps - 1), jnp.int32),
    )
    trace = []
    for i, r in enumerate(rewards):
        xp = jnp.full((1, 1), float(i))
        st = update(
            st, xp, 10 * xp, one(r), base_quota=quota, last=num_steps - 2, threshold=threshold
        )
        x, u = float(st["x"][0, 0]), float(st["u"][0, 0])
        assert u == 10 * x  # the state's velocity travels with it
        trace.append((int(st["k"][0]), int(x), float(st["bar"][0]), int(st["bx"][0, 0])))
    return trace, np.asarray(st["counts"][0]).tolist()


# Bar 1.0; quota 3 per step; steps 0 and 1 are searched, step 2 is the last.
SEQUENCE = [0.5, 0.9, 0.2, 0.95, 0.97, 0.93, 0.1, 0.8, 0.3]


def test_rbf_forced_acceptance_takes_the_best_proposal_of_the_step():
    for threshold in THRESHOLDS:
        trace, _ = _rbf_trace(SEQUENCE[:3], threshold)
        assert [t[:2] for t in trace] == [(0, -1), (0, -1), (1, 1)], threshold  # not 2, the last


@pytest.mark.parametrize(
    "threshold, accepted, bars, counts, last_best",
    [
        # The bar stays at the best reward so far (1.0): 0.95 and 0.97 do not beat it, so step 1
        # spends its quota and takes its best (0.97, proposal 4); the last step's best is 0.8.
        ("running_best", [-1, -1, 1, 1, 1, 4], [1.0] * 6, [3, 3, 3], 7),
        # The bar drops to the accepted 0.9: 0.95 (proposal 3) is accepted at once and the
        # last step's best is 0.97 (proposal 4).
        ("accepted", [-1, -1, 1, 3, 3, 3], [1.0, 1.0, 0.9, 0.95, 0.95, 0.95], [3, 1, 5], 4),
    ],
)
def test_rbf_threshold_rules_accept_differently(threshold, accepted, bars, counts, last_best):
    trace, got_counts = _rbf_trace(SEQUENCE, threshold)
    assert [t[1] for t in trace[:6]] == accepted
    np.testing.assert_allclose([t[2] for t in trace[:6]], bars, rtol=1e-6)
    assert trace[-1][0] == 2 and trace[-1][3] == last_best  # the last step keeps its best
    assert got_counts == counts
