"""Exponential moving average of parameters: ``ema <- decay * ema + (1 - decay) * params``."""

from __future__ import annotations

import jax


def ema_update(ema_params, params, decay):
    return jax.tree.map(lambda e, p: e + (1.0 - decay) * (p - e), ema_params, params)
