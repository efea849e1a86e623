"""Sequential Monte Carlo with reward-tilted weights and multinomial resampling.

``n = budget // N`` particles per problem move together through the grid. At each grid point
``s_k`` (``k = 0..N-1``) every particle is evaluated once (``n`` NFE), its Tweedie estimate is
scored, ``r_k = R(x1_hat(x, s_k))``, and the log-weights grow by the reward increment

    log w_i += (r_k(i) - r_{k-1}(i)) / lambda        (r_{-1} = 0),

which targets ``p(x) exp(R(x) / lambda)`` at the end (the increments telescope). When the
effective sample size ``ESS = 1 / sum_i wn_i^2`` (normalised weights ``wn``) falls below
``ess_threshold * n`` the particles are resampled multinomially and the weights reset. Then
every particle takes its proposal step (SDE steps branch; ODE steps only move the copies
together). The final particles are scored and the best one per problem is returned. NFE per
problem: ``n N <= budget``. With a constant reward the weights never change and nothing is
resampled: plain sampling.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from flowjax.search import particles as pt


def _core(proposal, reward_fn, num_problems, n, lam, threshold, sharding):
    num_steps = proposal.num_steps

    def run(key, cond):
        keys = pt.constrain(pt.particle_keys(key, num_problems, n), sharding)
        x = pt.constrain(pt.particle_normal(keys, 0, proposal.element_shape), sharding)
        c = pt.repeat_cond(cond, n)
        ts = proposal.times(x.dtype)
        resample_keys = jax.random.split(jax.random.fold_in(key, 2**30), num_steps)

        def body(carry, k):
            x, logw, r_prev, nfe, bad, resamples = carry
            u = proposal.evaluate(x, ts[k], c)
            r, bad_k = pt.reward_checked(reward_fn, proposal.tweedie(u, x, ts[k]))
            r = r.reshape(num_problems, n)
            logw = logw + (r - r_prev) / lam
            wn = jax.nn.softmax(logw, axis=1)
            ess = 1.0 / jnp.sum(wn**2, axis=1)
            do = ess < threshold * n
            drawn = jax.random.categorical(
                resample_keys[k], logw[:, None, :], axis=-1, shape=(num_problems, n)
            )
            idx = jnp.where(do[:, None], drawn, jnp.arange(n)[None, :])
            x, u = pt.gather_rows((x, u), idx)
            r = jnp.take_along_axis(r, idx, axis=1)
            logw = jnp.where(do[:, None], 0.0, logw)
            x = proposal.advance(u, x, k, pt.particle_normal(keys, k + 1, x.shape[1:]))
            carry = (pt.constrain(x, sharding), logw, r, nfe + n, bad | bad_k, resamples + do)
            return carry, jnp.mean(ess)

        zeros = jnp.zeros((num_problems, n), jnp.float32)
        init = (x, zeros, zeros, jnp.int32(0), jnp.bool_(False), jnp.zeros(num_problems, jnp.int32))
        (x, _, _, nfe, bad, resamples), ess = jax.lax.scan(body, init, jnp.arange(num_steps))
        info = {"num_particles": n, "resamples": resamples, "mean_ess": ess}
        return pt.best_result(reward_fn, x, num_problems, nfe, bad, info)

    return run


def smc(
    proposal: pt.Proposal,
    reward_fn,
    key: jax.Array,
    *,
    budget: int,
    num_problems: int = 1,
    cond: Any = None,
    temperature: float = 1.0,
    ess_threshold: float = 0.5,
    sharding=None,
) -> pt.SearchResult:
    """SMC under an NFE budget per problem (module docstring); returns a SearchResult.

    ``temperature`` is ``lambda`` (smaller = greedier); ``ess_threshold`` in ``(0, 1]``.
    """
    pt.check_problem(proposal, num_problems, cond)
    budget = pt.check_budget(budget, proposal.num_steps, "one sampling pass")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    if not 0 < ess_threshold <= 1:
        raise ValueError(f"ess_threshold must lie in (0, 1]; got {ess_threshold}")
    n = budget // proposal.num_steps
    lam, thr = float(temperature), float(ess_threshold)
    build = lambda: _core(proposal, reward_fn, num_problems, n, lam, thr, sharding)
    settings = (n, lam, thr, sharding)
    return pt.run_search("smc", proposal, reward_fn, key, cond, num_problems, settings, build)
