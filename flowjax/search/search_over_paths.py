"""Search over paths: a beam that repeatedly re-noises, re-solves and keeps the best.

Per problem, ``b`` beam particles are sampled from ``s_0`` to the grid point ``s_{k0}``
(``k0`` NFE each). Then, for ``k = k0, ..., N - 1``, each kept particle at ``s_k`` is copied
``width`` times, every copy is pushed back to ``s_{k - back}`` with the exact forward-noising
kernel of the path,

    x' = (a_{k-back} / a_k) x + sqrt(b_{k-back}^2 - (a_{k-back} / a_k)^2 b_k^2) xi,

and re-solved forward ``back + 1`` steps with the proposal to ``s_{k+1}`` (a net advance of one
grid step), where it is scored on its Tweedie estimate (one more NFE, except at ``s_N = 1``,
where the copy is the final sample). The ``b`` best copies are kept. The best final sample is
returned. The noising kernel preserves the path's marginals, so with a constant reward this is
plain sampling. NFE per problem:

    b * (k0 + width * ((N - k0) (back + 1) + (N - k0 - 1))) <= budget,

with the beam ``b`` the largest that fits (docs/maths/sde_search.md, grid-indexed).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from flowjax.search import particles as pt


def cost_per_beam(num_steps: int, start: int, width: int, back: int) -> int:
    """NFE one beam particle costs (module docstring)."""
    rounds = num_steps - start
    return start + width * (rounds * (back + 1) + rounds - 1)


def keep_best(xs: jax.Array, rewards: jax.Array, num_problems: int, beam: int) -> jax.Array:
    """The selection step: per problem, the ``beam`` copies of highest reward.

    ``xs [P m, ...]`` and ``rewards [P m]`` problem-major; returns ``[P beam, ...]``, best
    first within each problem (ties keep the earlier copy).
    """
    _, idx = jax.lax.top_k(rewards.reshape(num_problems, -1), beam)
    xs = xs.reshape((num_problems, -1) + xs.shape[1:])
    kept = xs[jnp.arange(num_problems)[:, None], idx]
    return kept.reshape((-1,) + xs.shape[2:])


def _core(proposal, reward_fn, num_problems, beam, width, start, back, sharding):
    num_steps = proposal.num_steps
    m = beam * width
    shape = proposal.element_shape

    def run(key, cond):
        keys_b = pt.constrain(pt.particle_keys(key, num_problems, beam), sharding)
        keys_m = pt.particle_keys(jax.random.fold_in(key, 1), num_problems, m)
        c_b, c_m = pt.repeat_cond(cond, beam), pt.repeat_cond(cond, m)
        x = pt.constrain(pt.particle_normal(keys_b, 0, shape), sharding)
        ts = proposal.times(x.dtype)

        def forward(x, keys, c, k_from, num):
            """Solve ``num`` grid steps from index ``k_from`` (``num`` evaluations)."""

            def body(x, i):
                k = k_from + i
                u = proposal.evaluate(x, ts[k], c)
                noise = pt.particle_normal(keys, k + 1, shape)
                return pt.constrain(proposal.advance(u, x, k, noise), sharding), None

            return jax.lax.scan(body, x, jnp.arange(num))[0]

        def expand_and_resolve(x, k):
            """beam -> beam * width copies (replica-major per problem), re-noised from s_k to
            s_{k-back} and solved forward to s_{k+1}."""
            keys = pt.constrain(jax.vmap(jax.random.fold_in, (0, None))(keys_m, k), sharding)
            xs = x.reshape((num_problems, 1, beam) + shape)
            xs = jnp.broadcast_to(xs, (num_problems, width, beam) + shape).reshape((-1,) + shape)
            xs = pt.constrain(xs, sharding)
            xs = proposal.renoise(xs, k, k - back, pt.particle_normal(keys, 0, shape))
            return forward(xs, keys, c_m, k - back, back + 1)

        x = forward(x, keys_b, c_b, 0, start)
        nfe = jnp.int32(beam * start)

        def round_(carry, k):
            x, nfe, bad = carry
            xs = expand_and_resolve(x, k)
            u = proposal.evaluate(xs, ts[k + 1], c_m)
            r, bad_k = pt.reward_checked(reward_fn, proposal.tweedie(u, xs, ts[k + 1]))
            nfe = nfe + m * (back + 1) + m
            kept = pt.constrain(keep_best(xs, r, num_problems, beam), sharding)
            return (kept, nfe, bad | bad_k), None

        (x, nfe, bad), _ = jax.lax.scan(
            round_, (x, nfe, jnp.bool_(False)), jnp.arange(start, num_steps - 1)
        )
        # Final round: land on s_N = 1; the copies are samples, scored directly.
        xs = expand_and_resolve(x, num_steps - 1)
        nfe = nfe + m * (back + 1)
        info = {"beam": beam, "width": width, "start": start, "back": back}
        return pt.best_result(reward_fn, xs, num_problems, nfe, bad, info)

    return run


def search_over_paths(
    proposal: pt.Proposal,
    reward_fn,
    key: jax.Array,
    *,
    budget: int,
    num_problems: int = 1,
    cond: Any = None,
    width: int = 2,
    start: int | None = None,
    back: int = 1,
    sharding=None,
) -> pt.SearchResult:
    """Search over paths under an NFE budget per problem (module docstring).

    ``width``: copies per kept particle; ``start``: grid index ``k0`` where the search begins
    (default ``N // 2``); ``back``: grid steps each copy is re-noised by (``1 <= back <= k0``).
    """
    pt.check_problem(proposal, num_problems, cond)
    num_steps = proposal.num_steps
    start = num_steps // 2 if start is None else int(start)
    width, back = int(width), int(back)
    if num_steps < 2 or not 1 <= back <= start < num_steps:
        raise ValueError(
            f"search over paths needs 1 <= back <= start < num_steps; got back={back}, "
            f"start={start}, num_steps={num_steps} (use at least 2 steps)"
        )
    if width < 1:
        raise ValueError(f"width must be >= 1; got {width}")
    per_beam = cost_per_beam(num_steps, start, width, back)
    budget = pt.check_budget(
        budget,
        per_beam,
        f"one beam particle of search over paths "
        f"(start={start}, width={width}, back={back}, {num_steps} steps)",
    )
    beam = budget // per_beam
    build = lambda: _core(proposal, reward_fn, num_problems, beam, width, start, back, sharding)
    settings = (beam, width, start, back, sharding)
    return pt.run_search(
        "search_over_paths", proposal, reward_fn, key, cond, num_problems, settings, build
    )
