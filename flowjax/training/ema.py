"""Debiased exponential moving average of parameters (optax's ``ema(decay, debias=True)``).

With parameters ``p_1, p_2, ...`` after steps ``1, 2, ...``, the biased accumulator is
``m_0 = 0``, ``m_n = decay * m_{n-1} + (1 - decay) * p_n``, and the EMA weights are the debiased

    e_n = m_n / (1 - decay^n) = sum_{k=1..n} (1 - decay) decay^(n-k) p_k / (1 - decay^n),

a weighted mean of ``p_1 .. p_n`` whose weights sum to one from the first step on (so a
constant sequence has that constant as its EMA at every step, and a short run's EMA is not
dragged back to the initialisation as the plain EMA ``e_0 = p_0`` is: after ``n`` steps the
plain EMA still gives the random initial weights the weight ``decay^n``, 0.61 after 500 steps
at ``decay = 0.999``). For ``n >> 1 / (1 - decay)`` the two coincide.

Storage: the training state keeps ``e_n`` itself (``TrainState.ema_params``, what evaluation,
sampling and fine-tunes read) rather than ``m_n``: the step rebuilds ``m_n = (1 - decay^n) e_n``
(``n = state.step``) and applies optax's update. So the state has the same pytree, shardings
and checkpoint layout as the parameters, and no extra copy of the model is held. ``e_0`` (no
step taken) is any value, conventionally the initial parameters: ``m_0 = 0 * e_0 = 0``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def ema_update(ema_params: Any, params: Any, decay: float, count: jax.Array) -> Any:
    """``e_{n+1}`` from ``e_n = ema_params``, ``p_{n+1} = params`` and ``n = count`` (int).

    The decay is taken in float32 so that ``1 - decay`` in the update and ``1 - decay^n`` in
    the bias correction are rounded alike (with a Python float the first step's weight would
    be ``(1 - decay) / (1 - float32(decay)) != 1``).
    """
    decay = jnp.float32(decay)
    count = jnp.asarray(count, jnp.int32)
    scale = 1.0 - decay**count  # 0 at count 0: the accumulator starts at zero
    biased = jax.tree.map(lambda e: e * scale.astype(e.dtype), ema_params)
    tx = optax.ema(decay, debias=True)
    debiased, _ = tx.update(params, optax.EmaState(count=count, ema=biased))
    return debiased
