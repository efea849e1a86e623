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

Optional attributes, read by :class:`flowjax.training.Experiment` (absent = the default):

- ``average_velocity`` (False): the network models ``u(x, s, cond, t_end)`` (MeanFlow); the
  config's network is built with ``use_end_time`` and sampled with ``flowmap``.
- ``build_model(make) -> nn.Module``: an objective with several networks wraps them in one
  module; ``make(use_end_time)`` builds the config's network.
- ``initial_params(fresh, loaded) -> params``: how a run started from another run's weights
  (``config.init.workdir``) maps them into this objective's parameter tree (default: the
  loaded tree as it is).
- ``frozen`` (()): top-level parameter groups that are never updated (no optimizer state).
- ``data_free`` (False): the batch only fixes the batch size and shapes; no data are read.
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
