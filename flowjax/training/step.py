"""The pure training step: ``train_step(state, batch) -> (state, metrics)``.

Everything the step needs (objective, network, optimizer, EMA decay) is closed over when it is
built, so it takes only the state and the batch and can be jitted once with the state donated.
The step's randomness is ``fold_in(state.rng, state.step)``: identical for a resumed run.

Gradient accumulation (``grad_accum_steps = k > 1``): the global batch ``[B, ...]`` is split
into ``k`` micro-batches of ``B / k`` rows, row ``r`` going to micro-batch ``r mod k`` (so every
device holds an equal part of each micro-batch when the batch is sharded over devices); a
``lax.scan`` sums their gradients and metrics, which are then divided by ``k``. For a loss that
is a mean over examples this is the gradient of the whole batch, with ``1/k`` of the activation
memory. Micro-batch ``j`` draws its randomness from ``fold_in(key, j)``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from flowjax.training.ema import ema_update
from flowjax.training.state import TrainState


def split_microbatches(batch: dict, k: int) -> dict:
    """``[B, ...] -> [k, B / k, ...]`` with row ``r`` in micro-batch ``r mod k``."""

    def split(a):
        if a.shape[0] % k:
            raise ValueError(f"batch of {a.shape[0]} rows is not divisible by grad_accum_steps={k}")
        a = a.reshape(a.shape[0] // k, k, *a.shape[1:])
        a = nn.with_logical_constraint(a, ("batch",) + (None,) * (a.ndim - 1))
        return jnp.swapaxes(a, 0, 1)

    return jax.tree.map(split, batch)


def make_train_step(
    objective: Any,
    apply_fn: Callable,
    tx: optax.GradientTransformation,
    ema_decay: float,
    grad_accum_steps: int = 1,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Build ``train_step(state, batch)``; metrics include ``loss`` and ``grad_norm``.

    ``state.ema_params`` is the debiased EMA of the parameters after every step so far
    (:func:`flowjax.training.ema.ema_update`; ``ema_decay = 0`` makes it the parameters).
    """
    k = int(grad_accum_steps)
    if k < 1:
        raise ValueError(f"grad_accum_steps must be >= 1; got {grad_accum_steps}")
    grad_fn = jax.value_and_grad(objective.loss_fn, has_aux=True)

    def grads_and_metrics(params, batch, key):
        if k == 1:
            (_, metrics), grads = grad_fn(params, apply_fn, batch, key)
            return grads, metrics

        def body(carry, xs):
            j, micro = xs
            micro = jax.tree.map(
                lambda a: nn.with_logical_constraint(a, ("batch",) + (None,) * (a.ndim - 1)),
                micro,
            )
            (_, metrics), grads = grad_fn(params, apply_fn, micro, jax.random.fold_in(key, j))
            return jax.tree.map(jnp.add, carry, (grads, metrics)), None

        micro = split_microbatches(batch, k)
        first = jax.tree.map(lambda a: a[0], micro)
        shapes = jax.eval_shape(lambda: grad_fn(params, apply_fn, first, key))
        (_, metric_shapes), grad_shapes = shapes
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (grad_shapes, metric_shapes))
        (grads, metrics), _ = jax.lax.scan(body, zeros, (jnp.arange(k), micro))
        return jax.tree.map(lambda a: a / k, (grads, metrics))

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(state.rng, state.step)
        grads, metrics = grads_and_metrics(state.params, batch, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = ema_update(state.ema_params, params, ema_decay, state.step)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params
        )
        return new_state, jax.tree.map(lambda m: m.astype(jnp.float32), metrics)

    return train_step
