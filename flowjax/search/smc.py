"""Sequential Monte Carlo with reward-tilted weights and multinomial resampling.

``n = budget // N`` particles per problem move together through the grid. At each grid point
``s_k`` (``k = 0..N-1``) every particle is evaluated once (``n`` NFE), its Tweedie estimate is
scored, ``r_k = R(x1_hat(x, s_k))``, and the log-weights grow by the reward increment

    log w_i += (r_k(i) - r_{k-1}(i)) / lambda        (r_{-1} = 0),

which targets ``p(x) exp(R(x) / lambda)`` at the end, ``p`` the proposal's own sampling law:
the increments telescope to ``r_{N-1} / lambda``, and ``r_{N-1}`` is the reward of the final
sample since the last step is the Tweedie jump from ``s_{N-1}``. When the
effective sample size ``ESS = 1 / sum_i wn_i^2`` (normalised weights ``wn``) falls below
``ess_threshold * n`` the particles are resampled multinomially and the weights reset. Then
every particle takes its proposal step (SDE steps branch; ODE steps only move the copies
together). The final particles are scored and the best one per problem is returned; the
weighted particle set itself, whose weighted empirical measure estimates the tilted target, is
``info["particles"] [P, n, ...]`` with ``info["log_weights"] [P, n]``. NFE per problem:
``n N <= budget``. With a constant reward the weights never change and nothing is
resampled: plain sampling.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from flowjax.search import particles as pt


def reweight(logw: jax.Array, r: jax.Array, r_prev: jax.Array, temperature: float) -> jax.Array:
    """Log-weights after one grid point: ``logw + (r - r_prev) / temperature``.

    ``r_prev`` is the reward each particle (or its parent, after resampling) had at the previous
    grid point (0 before the first), so the increments telescope: without resampling the
    log-weight after ``r_0, ..., r_k`` is ``r_k / temperature``.
    """
    return logw + (r - r_prev) / temperature


def effective_sample_size(logw: jax.Array) -> jax.Array:
    """``ESS = 1 / sum_i wn_i^2`` of the normalised weights ``wn = softmax(logw)`` over the last
    axis: between 1 (one particle carries all the weight) and ``n`` (uniform weights), and
    unchanged by adding a constant to ``logw``."""
    wn = jax.nn.softmax(logw, axis=-1)
    return 1.0 / jnp.sum(wn**2, axis=-1)


def resample(key: jax.Array, logw: jax.Array, ess_threshold: float):
    """Multinomial resampling of the problems whose ESS falls below ``ess_threshold * n``.

    ``logw [P, n]``. Returns ``(idx, logw_after, ess, resampled)``: ``idx [P, n]`` the parent of
    each particle (``n`` independent draws with probabilities ``softmax(logw)`` where
    resampled, the identity elsewhere), the log-weights after (0 where resampled, unchanged
    elsewhere), ``ess [P]`` before resampling and ``resampled [P]`` (bool).
    """
    n = logw.shape[-1]
    ess = effective_sample_size(logw)
    do = ess < ess_threshold * n
    # Inverse CDF of n uniforms per problem: O(n log n), not the O(n^2) of a Gumbel argmax.
    # Scaling the uniforms by the CDF's own total keeps every draw below it, and side="right"
    # never picks a particle of weight zero (its CDF step is empty).
    cdf = jnp.cumsum(jax.nn.softmax(logw, axis=-1), axis=-1)
    u = jax.random.uniform(key, logw.shape, cdf.dtype) * cdf[:, -1:]
    drawn = jax.vmap(lambda c, v: jnp.searchsorted(c, v, side="right"))(cdf, u)
    idx = jnp.where(do[:, None], jnp.minimum(drawn, n - 1), jnp.arange(n)[None, :])
    return idx, jnp.where(do[:, None], 0.0, logw), ess, do


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
            logw = reweight(logw, r, r_prev, lam)
            idx, logw, ess, do = resample(resample_keys[k], logw, threshold)
            x, u = pt.gather_rows((x, u), idx)
            r = jnp.take_along_axis(r, idx, axis=1)  # a copy's previous reward is its parent's
            x = proposal.advance(u, x, k, pt.particle_normal(keys, k + 1, x.shape[1:]))
            carry = (pt.constrain(x, sharding), logw, r, nfe + n, bad | bad_k, resamples + do)
            return carry, jnp.mean(ess)

        zeros = jnp.zeros((num_problems, n), jnp.float32)
        init = (x, zeros, zeros, jnp.int32(0), jnp.bool_(False), jnp.zeros(num_problems, jnp.int32))
        (x, logw, _, nfe, bad, resamples), ess = jax.lax.scan(body, init, jnp.arange(num_steps))
        info = {
            "num_particles": n,
            "resamples": resamples,
            "mean_ess": ess,
            "particles": x.reshape((num_problems, n) + x.shape[1:]),
            "log_weights": logw,
        }
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
