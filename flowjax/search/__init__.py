"""Inference-time particle search for flow models under an NFE budget (docs/maths/sde_search.md).

Build a :class:`Proposal` from a linear-path model with :func:`make_proposal` (``"ode"``,
``"sde"``, ``"vp-ode"``, ``"vp-sde"``), pick a reward (:func:`make_reward` or any jit-able
``R(x [B, ...]) -> [B]``) and run one of :func:`best_of_n`, :func:`smc`,
:func:`search_over_paths`, :func:`rbf` (or :func:`search` by name). Each returns a
:class:`SearchResult`: the selected samples ``[P, ...]``, their rewards ``[P]``, the NFE spent
per problem (never above the budget) and diagnostics. Command line: ``python -m
flowjax.search``.

Example::

    proposal = make_proposal(v, "vp-sde", num_steps=10, element_shape=(2,))
    result = rbf(proposal, make_reward("toy_mode,mode=0"), key, budget=100, num_problems=64)
"""

from flowjax.registry import Registry, registrar
from flowjax.search.best_of_n import best_of_n
from flowjax.search.particles import PROPOSALS, Proposal, SearchResult, make_proposal
from flowjax.search.rbf import rbf
from flowjax.search.rewards import make_reward, register_reward, reward_names
from flowjax.search.search_over_paths import search_over_paths
from flowjax.search.smc import smc

#: Search algorithms by name.
METHODS: Registry = Registry(
    "search method", {"bon": best_of_n, "smc": smc, "sop": search_over_paths, "rbf": rbf}
)
register_search_method = registrar(
    METHODS,
    "register_search_method",
    "``fn(proposal, reward_fn, key, *, budget, **options) -> SearchResult``",
)


def search(method: str, proposal, reward_fn, key, *, budget: int, **kwargs) -> SearchResult:
    """Run ``method`` (``"bon"``, ``"smc"``, ``"sop"``, ``"rbf"``) with its keyword options."""
    return METHODS[method](proposal, reward_fn, key, budget=budget, **kwargs)


__all__ = [
    "METHODS",
    "PROPOSALS",
    "Proposal",
    "SearchResult",
    "best_of_n",
    "make_proposal",
    "make_reward",
    "rbf",
    "register_reward",
    "register_search_method",
    "reward_names",
    "search",
    "search_over_paths",
    "smc",
]
