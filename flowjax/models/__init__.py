"""Velocity networks: toy MLPs, a small U-Net (and DiT, see the DiT issue)."""

from flowjax.models.layers import ConditioningEmbedding, TimeEmbedding, sinusoidal_embedding
from flowjax.models.mlp import MLPVelocity, num_params
from flowjax.models.registry import make_apply_fn, make_model
from flowjax.models.unet import UNetVelocity

__all__ = [
    "ConditioningEmbedding",
    "TimeEmbedding",
    "sinusoidal_embedding",
    "MLPVelocity",
    "UNetVelocity",
    "make_model",
    "make_apply_fn",
    "num_params",
]
