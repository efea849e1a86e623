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
sampling and fine-tunes read) rather than ``m_n``, so the state has the same pytree, shardings
and checkpoint layout as the parameters and no extra copy of the model is held. Substituting
``m_n = (1 - decay^n) e_n`` into optax's update gives the same recursion on ``e`` directly,

    e_{n+1} = e_n + w_{n+1} (p_{n+1} - e_n),    w_{n+1} = (1 - decay) / (1 - decay^(n+1)),

which is what :func:`ema_update` computes (``tests/training/test_ema.py`` checks it against
``optax.ema(decay, debias=True)`` run on its own accumulator). Written this way the EMA of a
parameter that does not change (a frozen teacher) stays bit-identical to it, and the first step
(``w_1 = 1``) returns ``p_1`` exactly. ``e_0`` (no step taken) is any value, conventionally the
initial parameters.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_update(ema_params: Any, params: Any, decay: float, count: jax.Array) -> Any:
    """``e_{n+1}`` from ``e_n = ema_params``, ``p_{n+1} = params`` and ``n = count`` (int).

    The decay is taken in float32 so that ``1 - decay`` and ``1 - decay^(n+1)`` are rounded
    alike (the first step's weight is exactly 1, and then ``p_1`` is returned as it is).
    """
    decay = jnp.float32(decay)
    count = jnp.asarray(count, jnp.int32)
    weight = (1.0 - decay) / (1.0 - decay ** (count + 1))

    def update(e, p):
        w = weight.astype(e.dtype)
        p = p.astype(e.dtype)
        return jnp.where(w >= 1, p, e + w * (p - e))  # w = 1: first step, or decay 0

    return jax.tree.map(update, ema_params, params)
