"""The pure training step: ``train_step(state, batch) -> (state, metrics)``.

Everything the step needs (objective, network, optimizer, EMA decay) is closed over when it is
built, so it takes only the state and the batch and can be jitted once with the state donated.
The step's randomness is ``fold_in(state.rng, state.step)``: identical for a resumed run.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from flowjax.training.ema import ema_update
from flowjax.training.state import TrainState


def make_train_step(
    objective: Any,
    apply_fn: Callable,
    tx: optax.GradientTransformation,
    ema_decay: float,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Build ``train_step(state, batch)``; metrics include ``loss``, ``grad_norm``, ``lr``-free."""

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(state.rng, state.step)
        grad_fn = jax.value_and_grad(objective.loss_fn, has_aux=True)
        (_, metrics), grads = grad_fn(state.params, apply_fn, batch, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = ema_update(state.ema_params, params, ema_decay)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params
        )
        return new_state, jax.tree.map(lambda m: m.astype(jnp.float32), metrics)

    return train_step
