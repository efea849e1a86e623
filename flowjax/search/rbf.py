"""Rollover Budget Forcing (RBF): adaptive per-step proposals under an NFE budget.

Per problem (docs/maths/sde_search.md, Kim et al.): draw ``n0`` noises, evaluate each once at
``s_0`` (``n0`` NFE), score its Tweedie estimate and keep the best as the current state
``x`` at grid index ``k = 0``; its reward is the first *bar* ``b``. The remaining
``L = budget - n0`` NFE are spread over the ``N - 1`` searchable steps (proposals land on
``s_1 .. s_{N-1}``; the last step ``s_{N-1} -> 1`` is the deterministic Tweedie jump) with a
base quota ``q = L // (N - 1)``.
At step ``k`` the method proposes ``x' = step(x, s_k -> s_{k+1})`` (SDE steps branch, ODE
steps repeat themselves), evaluates it once (1 NFE) and scores ``r' = R(x1_hat(x', s_{k+1}))``:

- if ``r' > b``: accept ``x'`` at once and set ``b = r'``; the unused quota rolls over to the
  next step;
- else, once the step's quota is used up: accept the step's best proposal (a *forced*
  acceptance). With ``threshold="running_best"`` (default, the official code's rule) ``b``
  stays, so ``b`` is the best reward seen so far; with ``threshold="accepted"`` ``b`` becomes
  the accepted proposal's reward, so ``b`` is always the current state's reward.

In both cases ``quota_{k+1} = quota_k - used_k + q``. The last searchable step
(``k = N - 2``) keeps proposing until the whole budget is spent and accepts its best
proposal; its Tweedie jump is the returned sample (its reward is the selected reward). Every
problem spends exactly ``budget`` NFE; ``info["proposals_per_step"] [P, N - 1]`` records the
rollover. Particles of all problems step in lockstep (one proposal per problem per
iteration), each at its own grid index, so the loop is one ``lax.scan`` of ``L`` iterations.
With a constant reward no proposal improves: every step uses exactly ``q`` proposals and
accepts its first (ties keep the first), i.e. plain sampling.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from flowjax.search import particles as pt


def default_initial(budget: int, num_steps: int) -> int:
    """``n0``: about 5% of the budget (25 of 500 officially), leaving one NFE per step."""
    return max(1, min(budget // 20, budget - (num_steps - 1)))


THRESHOLDS = ("running_best", "accepted")


def update(st: dict, xp, up, rp, *, base_quota: int, last: int, threshold: str) -> dict:
    """RBF's bookkeeping after one proposal ``(xp, up, rp)`` of every problem (module doc).

    ``st`` holds, per problem: the current state ``x`` at grid index ``k`` and its velocity
    ``u``, ``bar`` (the reward a proposal must beat), ``quota`` and ``used`` of the current
    step, the step's best proposal ``bx, bu, br`` so far (``br = -inf`` before the first) and
    ``counts [P, N - 1]`` (proposals per step). A proposal with ``rp > bar`` on a step before
    ``last`` is accepted at once (``bar = rp``); when the quota is used up instead, the step's
    best proposal is accepted and ``bar`` stays (``"running_best"``) or becomes its reward
    (``"accepted"``). Either way ``quota_{k+1} = quota_k - used_k + base_quota``. On step
    ``last`` nothing is accepted: ``bx, bu, br`` keep its best proposal.
    """
    bshape = lambda v, x: v.reshape(v.shape + (1,) * (x.ndim - 1))  # noqa: E731
    k = st["k"]
    used = st["used"] + 1
    counts = st["counts"] + jax.nn.one_hot(k, st["counts"].shape[1], dtype=jnp.int32)
    # Best proposal of this step (ties keep the first).
    better = rp > st["br"]
    bx = jnp.where(bshape(better, xp), xp, st["bx"])
    bu = jnp.where(bshape(better, up), up, st["bu"])
    br = jnp.where(better, rp, st["br"])
    searching = k < last
    improve = searching & (rp > st["bar"])
    forced = searching & ~improve & (used >= st["quota"])
    accept = improve | forced
    # improve: the proposal (also the step's best); forced: the step's best.
    ax = jnp.where(bshape(improve, xp), xp, bx)
    au = jnp.where(bshape(improve, up), up, bu)
    bar = jnp.where(improve, rp, st["bar"])
    if threshold == "accepted":
        bar = jnp.where(forced, br, bar)
    a = lambda new, old: jnp.where(bshape(accept, new), new, old)  # noqa: E731
    return dict(
        x=a(ax, st["x"]),
        u=a(au, st["u"]),
        bar=bar,
        k=k + accept,
        quota=jnp.where(accept, st["quota"] - used + base_quota, st["quota"]),
        used=jnp.where(accept, 0, used),
        bx=bx,
        bu=bu,
        br=jnp.where(accept, -jnp.inf, br),
        counts=counts,
    )


def _core(proposal, reward_fn, num_problems, budget, n0, threshold, sharding):
    num_steps = proposal.num_steps
    last = num_steps - 2  # index of the last searchable step
    length = budget - n0
    q = length // (num_steps - 1)
    shape = proposal.element_shape

    def run(key, cond):
        keys0 = pt.constrain(pt.particle_keys(key, num_problems, n0), sharding)
        x = pt.constrain(pt.particle_normal(keys0, 0, shape), sharding)
        ts = proposal.times(x.dtype)
        u = proposal.evaluate(x, ts[0], pt.repeat_cond(cond, n0))
        r, bad = pt.reward_checked(reward_fn, proposal.tweedie(u, x, ts[0]))
        rr = r.reshape(num_problems, n0)
        best = jnp.argmax(rr, axis=1)
        x, u = pt.gather_rows((x, u), best[:, None])
        keys = pt.constrain(pt.particle_keys(jax.random.fold_in(key, 1), num_problems, 1), sharding)
        zero = jnp.zeros((num_problems,), jnp.int32)
        state = dict(
            x=x,
            u=u,
            bar=rr[jnp.arange(num_problems), best],
            k=zero,
            quota=zero + q,
            used=zero,
            bx=x,
            bu=u,
            br=jnp.full((num_problems,), -jnp.inf, jnp.float32),
            counts=jnp.zeros((num_problems, num_steps - 1), jnp.int32),
        )

        def body(carry, i):
            st, nfe, bad = carry
            k = st["k"]
            xp = proposal.advance(st["u"], st["x"], k, pt.particle_normal(keys, i + 1, shape))
            up = proposal.evaluate(xp, ts[k + 1], cond)
            rp, bad_i = pt.reward_checked(reward_fn, proposal.tweedie(up, xp, ts[k + 1]))
            st = update(st, xp, up, rp, base_quota=q, last=last, threshold=threshold)
            st["x"] = pt.constrain(st["x"], sharding)
            return (st, nfe + 1, bad | bad_i), None

        (st, nfe, bad), _ = jax.lax.scan(body, (state, jnp.int32(n0), bad), jnp.arange(length))
        # The last step's best proposal (at s_{N-1}) -> Tweedie jump to the sample.
        samples = proposal.tweedie(st["bu"], st["bx"], ts[num_steps - 1])
        rewards, bad_f = pt.reward_checked(reward_fn, samples)
        info = {
            "initial": n0,
            "base_quota": q,
            "proposals_per_step": st["counts"],
            "reached_last_step": st["k"] == last,
            "nonfinite_rewards": bad | bad_f,
        }
        return pt.SearchResult(samples, rewards, nfe, info)

    return run


def rbf(
    proposal: pt.Proposal,
    reward_fn,
    key: jax.Array,
    *,
    budget: int,
    num_problems: int = 1,
    cond: Any = None,
    num_initial: int | None = None,
    threshold: str = "running_best",
    sharding=None,
) -> pt.SearchResult:
    """Rollover Budget Forcing under an NFE budget per problem (module docstring).

    ``num_initial``: ``n0`` initial noises (default :func:`default_initial`). ``threshold``:
    what a proposal must beat to be accepted at once, ``"running_best"`` (the official code:
    the best reward so far, raised only by such acceptances) or ``"accepted"`` (the reward of
    the state last accepted, also after a forced acceptance). Needs at least 2 grid steps and
    ``budget >= n0 + N - 1``.
    """
    if threshold not in THRESHOLDS:
        raise ValueError(f"unknown RBF threshold {threshold!r}; choose one of {THRESHOLDS}")
    pt.check_problem(proposal, num_problems, cond)
    num_steps = proposal.num_steps
    if num_steps < 2:
        raise ValueError("RBF searches over grid steps: use a proposal with at least 2 steps")
    budget = pt.check_budget(budget, num_steps, "one sampling pass")
    n0 = default_initial(budget, num_steps) if num_initial is None else int(num_initial)
    if n0 < 1:
        raise ValueError(f"num_initial must be >= 1; got {n0}")
    budget = pt.check_budget(
        budget, n0 + num_steps - 1, f"{n0} initial noises plus one proposal per step"
    )
    build = lambda: _core(proposal, reward_fn, num_problems, budget, n0, threshold, sharding)
    settings = (budget, n0, threshold, sharding)
    return pt.run_search("rbf", proposal, reward_fn, key, cond, num_problems, settings, build)
