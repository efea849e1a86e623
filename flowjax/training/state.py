"""The training state: one pytree holding everything a resumed run needs."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
    """``step`` (int32 scalar), ``params``, ``opt_state``, ``ema_params`` and ``rng``.

    ``rng`` is a raw ``uint32[2]`` key; the key of step ``k`` is ``fold_in(rng, k)``, so a
    resumed run draws exactly the noise an uninterrupted one would have drawn.
    ``ema_params`` is the debiased EMA of the parameters of steps ``1 .. step``
    (:mod:`flowjax.training.ema`); before the first step it is the initial parameters.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            ema_params=jax.tree.map(jnp.copy, params),
            rng=rng,
        )
