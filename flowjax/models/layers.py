"""Shared building blocks: time embeddings and the conditioning checks of velocity networks.

Networks receive canonical flowjax time ``t`` in [0, 1] (noise 0, data 1). What the network
*sees* is ``time_scale * t`` fed to a sinusoidal embedding (docs/maths/convention.md):
``time_scale = 1`` is SiT/MeanFlow's raw time, ``999`` rectified flow's, ``1000`` DiT's.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flowjax.types import Array


def logical(init: Any, names: tuple[str | None, ...] | None) -> Any:
    """``init`` annotated with logical axis ``names`` (``None``: left unannotated).

    Sharded models (DiT) name each parameter dimension with a *logical* axis such as
    ``"embed"`` or ``"mlp"``; the config's rule table (:mod:`flowjax.parallel.rules`) maps
    those to mesh axes. Unannotated parameters are replicated.
    """
    return init if names is None else nn.with_logical_partitioning(init, names)


def sinusoidal_embedding(t: Array, dim: int, max_period: float = 10000.0) -> Array:
    """``[cos(t f_i), sin(t f_i)]``, ``f_i = max_period^(-i / (dim/2))``: ``t [B] -> [B, dim]``."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding dim must be even; got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimeEmbedding(nn.Module):
    """Sinusoid of ``time_scale * t`` followed by Linear-SiLU-Linear (DiT's timestep embedder).

    ``partitioned`` names the kernels' axes ``("freq", "embed")`` and ``("mlp", "embed")``;
    ``dtype`` is the compute dtype (the sinusoid itself is always float32).
    """

    features: int
    frequency_dim: int = 256
    time_scale: float = 1.0
    partitioned: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, t: Array) -> Array:
        part = self.partitioned
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        init = nn.initializers.normal(0.02)
        emb = sinusoidal_embedding(self.time_scale * t, self.frequency_dim)
        emb = nn.Dense(
            self.features, kernel_init=logical(init, ("freq", "embed") if part else None), **dense
        )(emb)
        emb = nn.silu(emb)
        return nn.Dense(
            self.features, kernel_init=logical(init, ("mlp", "embed") if part else None), **dense
        )(emb)


class ConditioningEmbedding(nn.Module):
    """``emb(t) [+ emb(t_end - t)] [+ emb(label)]`` for velocity / average-velocity networks.

    - ``use_end_time``: the network models an average velocity ``u(x, s, e)`` and embeds the
      start time ``s = t`` and the interval ``h = t_end - t`` with two separate embedders
      (MeanFlow's parametrisation), summed. ``end_time_scale`` (default: ``time_scale``)
      scales ``h`` before its sinusoid: keep it 1 when the objective differentiates in ``h``
      (FreeFlow students of a teacher that sees ``1000 t``).
    - ``num_classes``: class-conditional with a table of ``num_classes + 1`` rows; row
      ``num_classes`` is the null class of classifier-free guidance.
    - ``partitioned``: annotate the parameters with logical axes (see :func:`logical`).
    """

    features: int
    time_scale: float = 1.0
    use_end_time: bool = False
    num_classes: int | None = None
    partitioned: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    end_time_scale: float | None = None

    @nn.compact
    def __call__(self, t: Array, cond: Array | None = None, t_end: Array | None = None):
        check_conditioning(t, cond, t_end, self.num_classes, self.use_end_time)
        common = dict(partitioned=self.partitioned, dtype=self.dtype, param_dtype=self.param_dtype)
        emb = TimeEmbedding(self.features, time_scale=self.time_scale, name="t_embed", **common)(t)
        if self.use_end_time:
            h_scale = self.time_scale if self.end_time_scale is None else self.end_time_scale
            emb = emb + TimeEmbedding(self.features, time_scale=h_scale, name="h_embed", **common)(
                t_end - t
            )
        if self.num_classes is not None:
            table = nn.Embed(
                self.num_classes + 1,
                self.features,
                embedding_init=logical(
                    nn.initializers.normal(0.02), ("vocab", "embed") if self.partitioned else None
                ),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="y_embed",
            )
            emb = emb + table(cond)
        return emb


def check_conditioning(t, cond, t_end, num_classes, use_end_time) -> None:
    """Raise a clear error when a network is called with the wrong conditioning."""
    if t.ndim != 1:
        raise ValueError(f"t must have shape [B]; got {t.shape}")
    if use_end_time and t_end is None:
        raise ValueError(
            "this is an average-velocity network u(x, s, e): call it with t_end (the end "
            "time e); an instantaneous-velocity sampler cannot drive it"
        )
    if not use_end_time and t_end is not None:
        raise ValueError(
            "this is an instantaneous-velocity network v(x, t): it takes no t_end; build it "
            "with use_end_time=True to model average velocities"
        )
    if num_classes is None and cond is not None:
        raise ValueError("this network is unconditional (num_classes=None) but got labels")
    if num_classes is not None:
        if cond is None:
            raise ValueError(
                f"this network is class-conditional: pass labels in [0, {num_classes}] "
                f"({num_classes} = the null class)"
            )
        if cond.shape != t.shape:
            raise ValueError(f"labels must have shape {t.shape} like t; got {cond.shape}")
