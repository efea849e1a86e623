"""Particle search under an NFE budget (docs/maths/sde_search.md).

The proposals use the exact velocity of the Gaussian closed form (section 11), so every check
is about the search itself: budgets (NFE counted independently by a callback in the velocity),
RBF's rollover on rewards whose outcome is controlled, reduction to plain sampling under a
constant reward, nested seeds, and clear errors for bad input. Noise at t=0, data at t=1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import search
from flowjax.search.search_over_paths import cost_per_beam
from flowjax.solvers import sde
from tests import gaussian_fixture as gf

MU = jnp.asarray([1.0, -0.5])
Q = 0.5
STEPS = 6
ROWS = {"n": 0}


def velocity(x, t, cond=None):
    return gf.velocity(x, t[:, None], MU, Q)


def counting_velocity(x, t, cond=None):
    """The same velocity; every call adds its number of rows to ROWS (outside of jit)."""
    jax.debug.callback(lambda n: ROWS.__setitem__("n", ROWS["n"] + int(n)), x.shape[0])
    return velocity(x, t, cond)


def reward_x(x):
    return x[:, 0]


PROPOSALS = {
    kind: search.make_proposal(velocity, kind, num_steps=STEPS, element_shape=(2,))
    for kind in search.PROPOSALS
}
COUNTED = search.make_proposal(counting_velocity, "vp-sde", num_steps=STEPS, element_shape=(2,))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["bon", "smc", "sop", "rbf"])
def test_nfe_is_counted_exactly_and_never_exceeds_the_budget(method):
    problems = 3
    sop_beam = cost_per_beam(STEPS, STEPS // 2, 2, 1)  # NFE of one beam particle (19)
    for budget in (STEPS + 1, 9 * STEPS):
        if method == "sop" and budget < sop_beam:
            with pytest.raises(ValueError, match="smaller than one beam particle"):
                search.search(method, COUNTED, reward_x, jax.random.key(0), budget=budget)
            continue
        ROWS["n"] = 0
        res = search.search(
            method, COUNTED, reward_x, jax.random.key(0), budget=budget, num_problems=problems
        )
        jax.block_until_ready(res)
        jax.effects_barrier()
        nfe = int(res.nfe)
        assert ROWS["n"] == problems * nfe, (method, budget)  # independent count, per problem
        assert nfe <= budget, (method, budget, nfe)
        assert res.samples.shape == (problems, 2) and res.rewards.shape == (problems,)
        if method == "rbf":
            assert nfe == budget
        else:  # the largest particle count that fits is used
            assert budget - nfe < {"bon": STEPS, "smc": STEPS, "sop": sop_beam}[method]


def _pinned(h0):
    """A linear-path velocity whose Tweedie estimate is x1_hat(x, t) = (h0 t, 0) for every x,
    so rewards of proposals are fixed by the grid time alone (even for SDE proposals)."""

    def v(x, t, cond=None):
        h = jnp.stack([h0 * t, jnp.zeros_like(t)], axis=-1)
        return (h - x) / (1.0 - t)[:, None]

    return v


RBF_PROPOSAL = search.make_proposal(_pinned(1.0), "sde", num_steps=STEPS, element_shape=(2,))
S1 = 1.0 / STEPS


def _drop(x):
    """Reward by grid time on the pinned velocity: 1 at s_0, 0 at s_1, 0.5 from s_2 on."""
    return jnp.where(x[:, 0] < 0.5 * S1, 1.0, jnp.where(x[:, 0] < 1.5 * S1, 0.0, 0.5))


@pytest.mark.parametrize(
    "name, reward, threshold, expected",
    [
        # No proposal improves: every step uses its base quota q, the last takes the rest.
        ("constant", lambda x: jnp.zeros(x.shape[0]), "running_best", lambda q: [q] * 4),
        # Every first proposal improves: one proposal per step, the rest rolls to the end.
        ("always", lambda x: x[:, 0], "running_best", lambda q: [1] * 4),
        # Only step 0 improves: step 1 gets its own quota plus the q - 1 step 0 left over.
        (
            "once",
            lambda x: jnp.minimum(x[:, 0], 0.5 * S1),
            "running_best",
            lambda q: [1, 2 * q - 1, q, q],
        ),
        # Step 0 is forced to accept 0 (below the initial 1); 0.5 at step 1 beats the accepted 0
        # but not the running best 1: only the "accepted" rule takes it at once.
        ("drop", _drop, "running_best", lambda q: [q] * 4),
        ("drop", _drop, "accepted", lambda q: [q, 1, 2 * q - 1, q]),
    ],
)
def test_rbf_rolls_unused_budget_over(name, reward, threshold, expected):
    budget, n0 = 53, 3
    res = search.rbf(
        RBF_PROPOSAL,
        reward,
        jax.random.key(1),
        budget=budget,
        num_problems=2,
        num_initial=n0,
        threshold=threshold,
    )
    q = (budget - n0) // (STEPS - 1)
    counts = np.asarray(res.info["proposals_per_step"])
    want = expected(q)
    want.append(budget - n0 - sum(want))
    assert counts.tolist() == [want, want], name
    assert int(res.nfe) == budget and bool(np.all(res.info["reached_last_step"]))


N_PLAIN = 1500


FINE = 30  # grid steps: SoP re-solves the same stretch many times, so its Euler bias adds up
FINE_PROPOSALS = {
    kind: search.make_proposal(velocity, kind, num_steps=FINE, element_shape=(2,))
    for kind in ("sde", "vp-sde")
}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["bon", "smc", "sop", "rbf"])
def test_constant_reward_reduces_to_plain_sampling(method):
    """Selected samples are distributed as plain samples of the same proposal (SDE, VP-SDE)."""
    const = search.make_reward("constant")
    opts = {"sop": {"width": 2, "start": FINE // 2, "back": 2}}.get(method, {})
    budget = cost_per_beam(FINE, FINE // 2, 2, 2) if method == "sop" else 3 * FINE
    for kind, prop in FINE_PROPOSALS.items():
        if method == "sop" and kind == "vp-sde":
            # Re-solving restarts from the exact path marginal, plain sampling from the Euler
            # chain's: on 30 VP steps they differ by ~8% in std (discretisation, not search).
            continue
        res = search.search(
            method, prop, const, jax.random.key(2), budget=budget, num_problems=N_PLAIN, **opts
        )
        x = np.asarray(res.samples)
        plain = np.asarray(
            sde.sample_sde(
                prop.velocity_fn,
                jax.random.normal(jax.random.key(3), (20_000, 2)),
                np.asarray(prop.grid),
                jax.random.key(4),
                path=prop.path,
                diffusion=prop.diffusion,
            )
        )
        se = float(plain.std(0).max()) / np.sqrt(N_PLAIN)
        msg = f"{method} {kind}"
        np.testing.assert_allclose(x.mean(0), plain.mean(0), atol=5 * se, err_msg=msg)
        np.testing.assert_allclose(x.std(0), plain.std(0), rtol=0.08, err_msg=msg)


def test_best_of_n_is_monotone_in_the_budget_with_nested_seeds():
    prop = PROPOSALS["sde"]
    rewards = [
        np.asarray(
            search.best_of_n(prop, reward_x, jax.random.key(5), budget=b, num_problems=8).rewards
        )
        for b in (STEPS, 3 * STEPS, 7 * STEPS)
    ]
    assert np.all(np.diff(np.stack(rewards), axis=0) >= 0)
    assert np.any(np.diff(np.stack(rewards), axis=0) > 0)


@pytest.mark.slow
def test_search_raises_the_reward_above_plain_sampling():
    prop = PROPOSALS["vp-sde"]
    kw = dict(budget=8 * STEPS, num_problems=64)
    plain = float(
        jnp.mean(
            search.best_of_n(
                prop, reward_x, jax.random.key(6), budget=STEPS, num_problems=64
            ).rewards
        )
    )
    for method in ("bon", "smc", "rbf"):
        r = float(jnp.mean(search.search(method, prop, reward_x, jax.random.key(6), **kw).rewards))
        assert r > plain + 0.2, (method, r, plain)


def test_bad_input_fails_clearly_before_any_work():
    prop = PROPOSALS["sde"]
    ROWS["n"] = 0
    key = jax.random.key(0)
    for method in search.METHODS:
        with pytest.raises(ValueError, match="smaller than"):
            search.search(method, COUNTED, reward_x, key, budget=STEPS - 1)
    with pytest.raises(ValueError, match="one value per sample"):
        search.best_of_n(prop, lambda x: x, key, budget=2 * STEPS, num_problems=4)
    with pytest.raises(ValueError, match="one value per sample"):
        search.rbf(prop, lambda x: jnp.sum(x), key, budget=2 * STEPS, num_problems=4)
    with pytest.raises(ValueError, match="non-finite"):
        search.smc(prop, lambda x: jnp.log(x[:, 0] - 100.0), key, budget=2 * STEPS)
    with pytest.raises(ValueError, match="must return floats"):
        search.best_of_n(prop, lambda x: x[:, 0] > 0, key, budget=2 * STEPS)
    with pytest.raises(ValueError, match="one row per problem"):
        search.best_of_n(
            prop, reward_x, key, budget=2 * STEPS, num_problems=4, cond=jnp.zeros(3, jnp.int32)
        )
    with pytest.raises(ValueError, match="budget must be an int"):
        search.best_of_n(prop, reward_x, key, budget=12.5)
    with pytest.raises(ValueError, match="unknown search method"):
        search.search("beam", prop, reward_x, key, budget=12)
    with pytest.raises(ValueError, match="unknown RBF threshold"):
        search.rbf(prop, reward_x, key, budget=2 * STEPS, threshold="best")
    with pytest.raises(ValueError, match="unknown proposal"):
        search.make_proposal(velocity, "ddim", num_steps=4, element_shape=(2,))
    assert ROWS["n"] == 0  # nothing was sampled


def test_non_finite_rewards_during_the_search_are_reported():
    # Finite on the standard-normal probe, NaN once samples move past x0 = 3.
    reward = lambda x: jnp.where(x[:, 0] > 3.0, jnp.nan, x[:, 0])  # noqa: E731
    prop = search.make_proposal(_pinned(6.0), "ode", num_steps=STEPS, element_shape=(2,))
    with pytest.raises(ValueError, match="non-finite values during the search"):
        search.best_of_n(prop, reward, jax.random.key(0), budget=STEPS, num_problems=2)


def test_shipped_toy_reward():
    r = search.make_reward("toy_mode,mode=2")
    centre = np.asarray(r.centre)
    np.testing.assert_allclose(centre, [0.0, 2.0], atol=1e-6)
    x = jnp.asarray([centre, centre + 0.5, [0.0, 0.0]])
    vals = np.asarray(jax.jit(r)(x))
    assert vals[0] == 0.0 and vals[0] > vals[1] > vals[2]
    with pytest.raises(ValueError, match="mode must be"):
        search.make_reward("toy_mode,mode=9")
    with pytest.raises(ValueError, match="unknown reward"):
        search.make_reward("aesthetic")
    with pytest.raises(ValueError, match="bad options"):
        search.make_reward("toy_mode,temperature=2")
