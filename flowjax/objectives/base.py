"""The objective contract.

An objective is a small immutable value whose hyperparameters are its fields. It exposes one
pure function, ready for ``jax.value_and_grad(..., has_aux=True)``::

    loss_fn(params, apply_fn, batch, key) -> (loss, metrics)

- ``params``: the model parameters (a pytree).
- ``apply_fn(params, x, t, cond, *, train=False, rng=None, **extra) -> output``: the network,
  with ``x [B, ...]``, ``t [B]`` in flowjax time (noise 0, data 1) and ``cond`` the labels
  ``[B]`` or ``None``. Average-velocity networks also take ``t_end=[B]`` in ``extra``.
- ``batch``: a dict with the data ``"x1" [B, ...]`` and, for conditional models,
  ``"label" [B]`` (int). Objectives draw their own noise and times from ``key``.
- ``metrics``: a dict of scalar arrays (averaged over the batch), logged as they are.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import jax

Array = jax.Array
ApplyFn = Callable[..., Array]
Metrics = dict[str, Array]


class Objective(Protocol):
    def loss_fn(
        self, params: Any, apply_fn: ApplyFn, batch: dict[str, Array], key: Array
    ) -> tuple[Array, Metrics]: ...
