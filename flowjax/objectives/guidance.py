"""Classifier-free guidance: label dropout for training (the guided velocity for sampling,
:func:`cfg_velocity`, lives in :mod:`flowjax.velocity` and is re-exported here).

Labels are integers in ``[0, num_classes)``; the "no class" label is ``null = num_classes``
(the embedding table has ``num_classes + 1`` rows).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowjax.types import Array
from flowjax.velocity import cfg_velocity, guidance_weight, validate_interval

__all__ = ["cfg_velocity", "drop_labels", "guidance_weight", "validate_interval"]


def drop_labels(key: Array, labels: Array, drop_prob: float, null_label: int) -> Array:
    """Replace each label by ``null_label`` with probability ``drop_prob`` (training-time CFG)."""
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"label drop probability must be in [0, 1]; got {drop_prob}")
    if drop_prob == 0.0:
        return labels
    drop = jax.random.bernoulli(key, drop_prob, labels.shape)
    return jnp.where(drop, jnp.asarray(null_label, labels.dtype), labels)
