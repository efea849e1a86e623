"""Particles, proposals and the NFE budget shared by the search methods.

Time convention: noise at ``t = 0``, data at ``t = 1``. A *proposal* is a flow model together
with the path it is sampled along, a diffusion coefficient ``g`` and a grid
``s_0 = 0 < s_1 < ... < s_N = 1`` (:class:`Proposal`, built by :func:`make_proposal`):

- ``"ode"``:    the linear path, ``g = 0`` (Euler);
- ``"sde"``:    the linear path, Euler-Maruyama with ``g(t) = eta (1 - t)^2``;
- ``"vp-ode"``, ``"vp-sde"``: the same network converted to the VP path
  (:func:`flowjax.solvers.sde.convert_velocity`), sampled as ODE or SDE.

The cost model is exact: one *NFE* is one evaluation of the velocity for one particle. An
evaluation ``u = u(x, s_k)`` serves twice: it gives the Tweedie estimate
``x1_hat(x, s_k)`` that rewards are computed on, and the drift of the step from ``s_k`` to
``s_{k+1}``. The last step ``s_{N-1} -> 1`` is the deterministic Tweedie jump
``x_N = x1_hat(x_{N-1}, s_{N-1})`` (no noise, no extra evaluation), so one sampling pass costs
exactly ``N`` NFE and a method cannot gain candidates for free by re-drawing the noise of a
step whose drift it already paid for.

Layout: a search solves ``P`` independent problems (one output each; e.g. one class label
each) with ``n`` particles per problem; particles live on one leading axis of length ``P n``
(problem-major), so velocity calls are batched and the axis can be sharded over a device
mesh (pass ``sharding``, e.g. ``NamedSharding(mesh, PartitionSpec("data"))``). Random numbers
of particle ``j`` of problem ``p`` come from ``fold_in(fold_in(key, p), j)``, so results do not
depend on the sharding, and the first ``n`` particles of a larger search are the particles of
a smaller one (nested seeds).

Rewards are user callables ``R(x1_hat) -> [B]`` (jit-able, batched), evaluated on Tweedie
estimates (and on final samples); :func:`check_reward` checks them at the public boundary.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import paths
from flowjax.solvers import sde
from flowjax.time import grids
from flowjax.types import Array

Reward = Callable[[Array], Array]

PROPOSALS = ("ode", "sde", "vp-ode", "vp-sde")


class SearchResult(NamedTuple):
    """``samples [P, ...]`` selected per problem, their ``rewards [P]``, ``nfe`` spent per
    problem (an int, the same for every problem) and method-specific diagnostics ``info``."""

    samples: Array
    rewards: Array
    nfe: Array
    info: dict


@dataclasses.dataclass(frozen=True, eq=False)
class Proposal:
    """A velocity along ``path``, a diffusion ``g`` and a grid ending at 1 (see module doc).

    ``velocity_fn(x, s[B], cond)`` is already the velocity of ``path`` (converted if needed).
    Hashes by identity, so jitted searches are cached per proposal.
    """

    velocity_fn: Callable
    path: paths.Path
    diffusion: sde.DiffusionCoefficient
    grid: tuple[float, ...]
    element_shape: tuple[int, ...]
    name: str = "proposal"

    def __post_init__(self):
        grid = grids.validate_grid(np.asarray(self.grid, np.float64))
        if grid[0] != 0.0 or grid[-1] != 1.0:
            raise ValueError(f"a proposal grid must run from 0 (noise) to 1 (data); got {grid}")

    @property
    def num_steps(self) -> int:
        return len(self.grid) - 1

    def times(self, dtype) -> Array:
        return jnp.asarray(self.grid, dtype)

    def evaluate(self, x: Array, s: Array, cond: Any) -> Array:
        """``u(x, s)``; ``s`` scalar or ``[B]``. Costs one NFE per particle."""
        s = jnp.broadcast_to(jnp.asarray(s, x.dtype), (x.shape[0],))
        return self.velocity_fn(x, s, cond)

    def tweedie(self, u: Array, x: Array, s: Array) -> Array:
        return sde.tweedie(self.path, u, x, s)

    def advance(self, u: Array, x: Array, k: Array, noise: Array) -> Array:
        """Step particles at grid index ``k`` (int or ``[B]``) to ``k + 1`` given ``u(x, s_k)``:
        Euler-Maruyama, or the Tweedie jump when ``k + 1 = N``. No NFE."""
        ts = self.times(x.dtype)
        s, s_next = ts[k], ts[jnp.minimum(k + 1, self.num_steps)]
        x_em = sde.em_step(self.path, self.diffusion, u, x, s, s_next, noise)
        last = paths.bcast(jnp.asarray(k) + 1 >= self.num_steps, x)
        return jnp.where(last, self.tweedie(u, x, s), x_em)

    def renoise(self, x: Array, k_from: Array, k_to: Array, noise: Array) -> Array:
        """Exact forward-noising kernel of the path from ``s_{k_from}`` back to ``s_{k_to}``
        (``k_to <= k_from``): ``x' = (a'/a) x + sqrt(b'^2 - (a'/a)^2 b^2) xi``."""
        ts = self.times(x.dtype)
        s, s2 = ts[k_from], ts[k_to]
        a, b = self.path.alpha(s), self.path.sigma(s)
        a2, b2 = self.path.alpha(s2), self.path.sigma(s2)
        ratio = a2 / a
        std = jnp.sqrt(jnp.clip(b2**2 - ratio**2 * b**2, 0.0, None))
        return ratio * x + std * noise


def make_proposal(
    velocity_fn: Callable,
    kind: str,
    *,
    num_steps: int,
    element_shape,
    eta: float = 3.0,
    diffusion: str | None = None,
    grid: str = "uniform",
) -> Proposal:
    """A :class:`Proposal` of a *linear-path* model ``velocity_fn(x, t[B], cond)``.

    Args:
      kind: ``"ode"``, ``"sde"``, ``"vp-ode"`` or ``"vp-sde"``.
      num_steps: grid steps ``N`` (one sampling pass costs ``N`` NFE).
      element_shape: shape of one sample, e.g. ``(2,)`` or ``(8, 8, 1)``.
      eta: scale of ``g(s) = eta (1 - s)^2`` for the SDE kinds.
      diffusion: another ``g`` spec for the SDE kinds (:func:`flowjax.solvers.sde.make_diffusion`).
      grid: a :func:`flowjax.time.grids.grid_from_spec` spec over the proposal's own time.
    """
    if kind not in PROPOSALS:
        raise ValueError(f"unknown proposal {kind!r}; choose one of {PROPOSALS}")
    g = sde.make_diffusion(
        "ode" if kind.endswith("ode") else (diffusion or f"square,eta={float(eta)}")
    )
    if kind.startswith("vp"):
        path: paths.Path = paths.VPPath()
        velocity_fn = sde.convert_velocity(velocity_fn, path)
    else:
        path = paths.LinearPath()
    grid_np = grids.grid_from_spec(grid, int(num_steps))
    return Proposal(
        velocity_fn=velocity_fn,
        path=path,
        diffusion=g,
        grid=tuple(float(v) for v in grid_np),
        element_shape=tuple(int(d) for d in element_shape),
        name=kind,
    )


# -- particles ---------------------------------------------------------------------------------


def particle_keys(key: Array, num_problems: int, num_particles: int) -> Array:
    """``[P n]`` keys: ``fold_in(fold_in(key, p), j)`` for particle ``j`` of problem ``p``."""
    p = jnp.repeat(jnp.arange(num_problems), num_particles)
    j = jnp.tile(jnp.arange(num_particles), num_problems)
    return jax.vmap(lambda a, b: jax.random.fold_in(jax.random.fold_in(key, a), b))(p, j)


def particle_normal(keys: Array, tag, shape, dtype=jnp.float32) -> Array:
    """Standard normals ``[len(keys), *shape]``; row ``i`` from ``fold_in(keys[i], tag)``."""
    tag = jnp.asarray(tag, jnp.uint32)
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, tag), shape, dtype))(keys)


def repeat_cond(cond: Any, n: int) -> Any:
    """Per-problem conditioning ``[P, ...]`` -> per-particle ``[P n, ...]``."""
    return jax.tree.map(lambda c: jnp.repeat(c, n, axis=0), cond)


def constrain(x: Array, sharding) -> Array:
    return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)


def select_best(x: Array, rewards: Array, num_problems: int):
    """Per problem, the particle of highest reward (first on ties): ``([P, ...], [P])``."""
    r = rewards.reshape(num_problems, -1)
    xs = x.reshape((num_problems, r.shape[1]) + x.shape[1:])
    idx = jnp.argmax(r, axis=1)
    rows = jnp.arange(num_problems)
    return xs[rows, idx], r[rows, idx]


def best_result(
    reward_fn: Reward, x: Array, num_problems: int, nfe: Array, bad: Array, info: dict
) -> SearchResult:
    """Score the final particles ``x [P * n, ...]`` and keep each problem's best.

    ``bad`` (any non-finite reward so far) is or-ed with the final scoring's and stored as
    ``info["nonfinite_rewards"]``, which :func:`run_search` turns into an error.
    """
    r, bad_f = reward_checked(reward_fn, x)
    samples, rewards = select_best(x, r, num_problems)
    return SearchResult(samples, rewards, nfe, {**info, "nonfinite_rewards": bad | bad_f})


def gather_rows(tree: Any, idx: Array) -> Any:
    """Reorder particles within each problem: ``idx [P, n]`` of indices in ``0..n-1``."""
    num_problems, n = idx.shape
    flat = (idx + n * jnp.arange(num_problems)[:, None]).reshape(-1)
    return jax.tree.map(lambda a: a[flat], tree)


# -- checks at the public boundary --------------------------------------------------------------


def check_problem(proposal: Proposal, num_problems: int, cond: Any) -> None:
    if not isinstance(proposal, Proposal):
        raise ValueError("proposal must be a flowjax.search.Proposal; build it with make_proposal")
    if isinstance(num_problems, bool) or not isinstance(num_problems, int) or num_problems < 1:
        raise ValueError(f"num_problems must be a positive int; got {num_problems!r}")
    for leaf in jax.tree.leaves(cond):
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != num_problems:
            raise ValueError(
                f"cond must have one row per problem ({num_problems}) on its leading axis; got "
                f"shape {jnp.shape(leaf)}"
            )


def check_budget(budget, minimum: int, what: str) -> int:
    """``budget`` as an int, or a clear error if it cannot pay for ``minimum`` NFE."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ValueError(f"budget must be an int number of NFE; got {budget!r}")
    budget = int(budget)
    if budget < minimum:
        raise ValueError(
            f"budget={budget} NFE is smaller than {what} ({minimum} NFE); raise the budget to "
            f"at least {minimum} or use fewer steps"
        )
    return budget


def check_reward(reward_fn: Reward, proposal: Proposal, batch: int, key: Array) -> None:
    """Check ``reward_fn`` before any work: it maps ``[B, *element_shape]`` to finite ``[B]``.

    Shapes and dtypes are checked abstractly (``jax.eval_shape``); finiteness on a probe batch
    of standard-normal inputs (no NFE is spent).
    """
    if not callable(reward_fn):
        raise ValueError(f"reward must be a callable R(x [B, ...]) -> [B]; got {reward_fn!r}")
    spec = jax.ShapeDtypeStruct((batch, *proposal.element_shape), jnp.float32)
    try:
        out = jax.eval_shape(reward_fn, spec)
    except Exception as err:  # noqa: BLE001 - re-raised with the contract attached
        raise ValueError(
            f"reward cannot be traced on a batch of shape {spec.shape}: {type(err).__name__}: "
            f"{err}. A reward must be a jit-able R(x [B, ...]) -> [B]"
        ) from err
    if not hasattr(out, "shape") or tuple(out.shape) != (batch,):
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"reward must return one value per sample, shape [{batch}] for input "
            f"{spec.shape}; it returned {got}. Reduce over the sample axes, not the batch"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"reward must return floats; got dtype {out.dtype}")
    probe = jax.random.normal(key, spec.shape, spec.dtype)
    values = np.asarray(jax.jit(reward_fn)(probe))
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"reward returned non-finite values ({int(np.sum(~np.isfinite(values)))} of {batch}) "
            "on a probe batch of standard-normal inputs; rewards must be finite (clip or use a "
            "log-sum-exp)"
        )


def check_finite_result(result: SearchResult, method: str) -> SearchResult:
    bad = bool(np.asarray(result.info.get("nonfinite_rewards", False)))
    if bad:
        raise ValueError(
            f"{method}: the reward returned non-finite values during the search, so the "
            "selection is meaningless; make the reward finite on every input (clip it)"
        )
    return result


def reward_checked(reward_fn: Reward, x: Array) -> tuple[Array, Array]:
    """``(R(x) as float32 [B], any non-finite)``, non-finite values replaced by ``-inf``."""
    r = jnp.asarray(reward_fn(x), jnp.float32)
    bad = ~jnp.isfinite(r)
    return jnp.where(bad, -jnp.inf, r), jnp.any(bad)


# -- jit cache ---------------------------------------------------------------------------------

_COMPILED: dict[tuple, Callable] = {}


def cached_jit(key: tuple, build: Callable[[], Callable]) -> Callable:
    """One jitted core per (method, proposal, reward, static settings)."""
    fn = _COMPILED.get(key)
    if fn is None:
        if len(_COMPILED) > 256:
            _COMPILED.clear()
        fn = _COMPILED[key] = jax.jit(build())
    return fn


def run_search(
    method: str,
    proposal: Proposal,
    reward_fn: Reward,
    key: Array,
    cond: Any,
    num_problems: int,
    settings: tuple,
    build: Callable[[], Callable],
) -> SearchResult:
    """The common tail of every search method, after its own argument checks.

    Probes the reward (:func:`check_reward`), runs the jitted core ``build()`` (compiled once
    per ``(method, proposal, reward_fn, num_problems, *settings)``) on ``(key, cond)``, and
    raises if any reward was non-finite (:func:`check_finite_result`).
    """
    check_reward(reward_fn, proposal, num_problems, key)
    run = cached_jit((method, proposal, reward_fn, num_problems, *settings), build)
    return check_finite_result(run(key, cond), method)
