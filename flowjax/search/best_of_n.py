"""Best-of-N: ``n = budget // N`` independent sampling passes per problem, keep the best.

Each particle is sampled with the proposal (ODE or SDE, ``N`` steps, ``N`` NFE), the reward
is computed on the final samples, and the particle of highest reward is returned. NFE spent
per problem: ``n N <= budget``. With nested seeds (see :mod:`flowjax.search.particles`) the
best reward never decreases as the budget grows; with a constant reward particle 0 is
returned, i.e. plain sampling.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from flowjax.search import particles as pt


def _core(proposal: pt.Proposal, reward_fn, num_problems: int, n: int, sharding):
    num_steps = proposal.num_steps

    def run(key, cond):
        keys = pt.constrain(pt.particle_keys(key, num_problems, n), sharding)
        x = pt.particle_normal(keys, 0, proposal.element_shape)
        x = pt.constrain(x, sharding)
        c = pt.repeat_cond(cond, n)
        ts = proposal.times(x.dtype)

        def body(carry, k):
            x, nfe = carry
            u = proposal.evaluate(x, ts[k], c)
            x = proposal.advance(u, x, k, pt.particle_normal(keys, k + 1, x.shape[1:]))
            return (pt.constrain(x, sharding), nfe + n), None

        (x, nfe), _ = jax.lax.scan(body, (x, jnp.int32(0)), jnp.arange(num_steps))
        return pt.best_result(reward_fn, x, num_problems, nfe, False, {"num_particles": n})

    return run


def best_of_n(
    proposal: pt.Proposal,
    reward_fn,
    key: jax.Array,
    *,
    budget: int,
    num_problems: int = 1,
    cond: Any = None,
    sharding=None,
) -> pt.SearchResult:
    """Best-of-N under an NFE budget per problem (module docstring); returns a SearchResult."""
    pt.check_problem(proposal, num_problems, cond)
    budget = pt.check_budget(budget, proposal.num_steps, "one sampling pass")
    n = budget // proposal.num_steps
    build = lambda: _core(proposal, reward_fn, num_problems, n, sharding)
    return pt.run_search(
        "best_of_n", proposal, reward_fn, key, cond, num_problems, (n, sharding), build
    )
