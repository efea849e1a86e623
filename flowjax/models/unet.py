"""A small U-Net velocity network for images ``[B, H, W, C]`` (NHWC), e.g. 8x8 digits.

Residual blocks with GroupNorm and SiLU, the conditioning embedding (time, optional end time,
optional class) added inside every block, strided-conv downsampling and nearest-neighbour
upsampling, skip connections per resolution. Output conv starts at zero (``v = 0`` at init).
The output of the ``i``-th residual block in forward order is sown as ``feature_{i}`` (for
representation regularisers such as the dispersive loss).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowjax.models.layers import ConditioningEmbedding
from flowjax.types import Model


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    channels: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, emb, train: bool):
        h = nn.silu(nn.GroupNorm(_groups(x.shape[-1]))(x))
        h = nn.Conv(self.channels, (3, 3))(h)
        h = h + nn.Dense(self.channels)(nn.silu(emb))[:, None, None, :]
        h = nn.silu(nn.GroupNorm(_groups(self.channels))(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.Conv(self.channels, (3, 3), kernel_init=nn.initializers.zeros)(h)
        if x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1))(x)
        return x + h


class UNetVelocity(nn.Module, Model):
    """``v(x, t, cond)`` for images; ``H`` and ``W`` must be divisible by
    ``2 ** (len(channel_mults) - 1)``."""

    base_channels: int = 64
    channel_mults: Sequence[int] = (1, 2)
    num_res_blocks: int = 2
    dropout: float = 0.0
    time_scale: float = 1000.0
    num_classes: int | None = None
    use_end_time: bool = False
    end_time_scale: float | None = None  # scale of t_end - t (None: time_scale)

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Raise a clear ``ValueError`` unless ``shape`` is ``[B, H, W, C]`` with ``H`` and
        ``W`` divisible by ``2 ** (len(channel_mults) - 1)``."""
        shape = tuple(shape)
        if len(shape) != 4:
            raise ValueError(f"UNetVelocity takes images [B, H, W, C]; got shape {shape}")
        factor = 2 ** (len(self.channel_mults) - 1)
        if shape[1] % factor or shape[2] % factor:
            raise ValueError(
                f"image size {shape[1:3]} must be divisible by {factor} for "
                f"channel_mults={tuple(self.channel_mults)}"
            )

    @nn.compact
    def __call__(self, x, t, cond=None, *, t_end=None, train: bool = False):
        self.check_input(x.shape)
        emb_dim = 4 * self.base_channels
        emb = ConditioningEmbedding(
            emb_dim,
            self.time_scale,
            self.use_end_time,
            self.num_classes,
            end_time_scale=self.end_time_scale,
        )(t, cond, t_end)
        blocks = 0

        def res_block(h, channels):
            nonlocal blocks
            h = ResBlock(channels, self.dropout)(h, emb, train)
            self.sow("intermediates", f"feature_{blocks}", h)
            blocks += 1
            return h

        h = nn.Conv(self.base_channels, (3, 3))(x)
        skips = [h]
        for level, mult in enumerate(self.channel_mults):
            for _ in range(self.num_res_blocks):
                h = res_block(h, self.base_channels * mult)
                skips.append(h)
            if level < len(self.channel_mults) - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)
                skips.append(h)
        h = res_block(h, h.shape[-1])
        h = res_block(h, h.shape[-1])
        for level, mult in reversed(list(enumerate(self.channel_mults))):
            for _ in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = res_block(h, self.base_channels * mult)
            if level > 0:
                b, hh, ww, c = h.shape
                h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), method="nearest")
                h = nn.Conv(c, (3, 3))(h)
        h = nn.silu(nn.GroupNorm(_groups(h.shape[-1]))(h))
        out = nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(h)
        return out.astype(x.dtype)
