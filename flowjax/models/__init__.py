"""Velocity networks: toy MLPs, a small U-Net, DiT, the multi-stage DiT of Decomposable
Flow Matching and the any-resolution FiTv2 (sharded with logical axis names), and the position
encodings transformers use (sin-cos tables, RoPE and its extrapolation rules,
:mod:`flowjax.models.positions`)."""

from flowjax.models.blockwise import BlockwiseFlowNet
from flowjax.models.decomposable import DecomposableDiT
from flowjax.models.dit import (
    DIT_PRESETS,
    DiT,
    dit_forward_flops,
    dit_num_tokens,
    dit_variant,
    patchify,
    unpatchify,
)
from flowjax.models.fitv2 import FiTv2, fitv2_forward_flops, fitv2_variant
from flowjax.models.layers import ConditioningEmbedding, TimeEmbedding, sinusoidal_embedding
from flowjax.models.mlp import MLPVelocity, num_params
from flowjax.models.positions import (
    POSITIONS,
    PositionEncoding,
    make_position,
    position_from_spec,
    register_position,
)
from flowjax.models.registry import (
    init_params,
    make_apply_fn,
    make_model,
    model_class,
    register_model,
)
from flowjax.models.unet import UNetVelocity

__all__ = [
    "BlockwiseFlowNet",
    "DiT",
    "DecomposableDiT",
    "DIT_PRESETS",
    "dit_variant",
    "dit_forward_flops",
    "dit_num_tokens",
    "patchify",
    "unpatchify",
    "FiTv2",
    "fitv2_variant",
    "fitv2_forward_flops",
    "ConditioningEmbedding",
    "TimeEmbedding",
    "sinusoidal_embedding",
    "MLPVelocity",
    "UNetVelocity",
    "PositionEncoding",
    "POSITIONS",
    "make_position",
    "position_from_spec",
    "register_position",
    "make_model",
    "model_class",
    "register_model",
    "make_apply_fn",
    "init_params",
    "num_params",
]
