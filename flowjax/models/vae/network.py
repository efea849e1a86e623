"""The SD-VAE network: :class:`VAEConfig` and the flax modules of diffusers' ``AutoencoderKL``.

Architecture (that of diffusers' ``AutoencoderKL`` with ``DownEncoderBlock2D`` /
``UpDecoderBlock2D`` blocks; ``G = norm_num_groups``, every GroupNorm has ``eps = 1e-6``):

- ResnetBlock(c_in -> c): ``h = conv3(silu(GN(x))); h = conv3(silu(GN(h)))``, output
  ``shortcut(x) + h`` with a 1x1 conv shortcut when ``c_in != c``.
- Attention (mid block, one head over all ``H W`` positions): ``h = GN(x)``,
  ``softmax(q k^T / sqrt(c)) v`` with linear ``q, k, v``, a linear output, plus ``x``.
- Encoder: conv3 ``C_in -> c_0``; stage ``i``: ``layers_per_block`` ResnetBlocks to ``c_i``,
  then (not after the last stage) a stride-2 3x3 conv after zero padding of one row/column at
  the bottom/right; mid: Resnet, Attention, Resnet; ``GN, silu, conv3 -> 2 C_z``; then the 1x1
  ``quant_conv`` (if ``use_quant_conv``).
- Decoder: the 1x1 ``post_quant_conv`` (if ``use_post_quant_conv``); conv3 ``C_z -> c_last``;
  mid block; stages in reverse channel order, each ``layers_per_block + 1`` ResnetBlocks then
  (not after the last) 2x nearest upsampling and a conv3; ``GN, silu, conv3 -> C_out``.

The weights (:mod:`flowjax.models.vae.weights`) and the object users hold
(:class:`flowjax.models.vae.AutoencoderKL`) are built on it.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["SD_VAE_CONFIG", "VAEConfig", "VAENet"]

GN_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """The hyper-parameters of an ``AutoencoderKL`` (diffusers' ``config.json`` names)."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0
    use_quant_conv: bool = True  # False for the SD3 / FLUX VAEs
    use_post_quant_conv: bool = True

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def check(self) -> VAEConfig:
        ch = tuple(int(c) for c in self.block_out_channels)
        if not ch or any(c < 1 or c % self.norm_num_groups for c in ch):
            raise ValueError(
                f"block_out_channels={self.block_out_channels} must be positive multiples of "
                f"norm_num_groups={self.norm_num_groups}."
            )
        if self.layers_per_block < 1 or min(self.in_channels, self.latent_channels) < 1:
            raise ValueError(f"bad VAE config {self}.")
        if not np.isfinite(self.scaling_factor) or self.scaling_factor == 0:
            raise ValueError(f"scaling_factor={self.scaling_factor}; pass a finite non-zero float.")
        return dataclasses.replace(self, block_out_channels=ch)


SD_VAE_CONFIG = VAEConfig()  # stabilityai/sd-vae-ft-ema, -ft-mse; SD 1.x / 2.x


class GroupNorm(nn.Module):
    """GroupNorm over ``(H, W, C/G)`` with two-pass (centred) variance, ``eps = 1e-6``."""

    groups: int

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        g = x.reshape(*x.shape[:-1], self.groups, c // self.groups)
        axes = tuple(range(1, g.ndim - 2)) + (g.ndim - 1,)
        mean = jnp.mean(g, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(g - mean), axis=axes, keepdims=True)
        g = (g - mean) * jax.lax.rsqrt(var + GN_EPS)
        return g.reshape(x.shape) * scale + bias


def _conv(features, size, name, stride=1, padding=None):
    pad = ((size // 2, size // 2),) * 2 if padding is None else padding
    return nn.Conv(features, (size, size), strides=(stride, stride), padding=pad, name=name)


class ResnetBlock(nn.Module):
    features: int
    groups: int

    @nn.compact
    def __call__(self, x):
        h = _conv(self.features, 3, "conv1")(nn.silu(GroupNorm(self.groups, name="norm1")(x)))
        h = _conv(self.features, 3, "conv2")(nn.silu(GroupNorm(self.groups, name="norm2")(h)))
        if x.shape[-1] != self.features:
            x = _conv(self.features, 1, "conv_shortcut")(x)
        return x + h


class AttentionBlock(nn.Module):
    groups: int

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        y = GroupNorm(self.groups, name="group_norm")(x).reshape(b, h * w, c)
        q = nn.Dense(c, name="to_q")(y)
        k = nn.Dense(c, name="to_k")(y)
        v = nn.Dense(c, name="to_v")(y)
        logits = jnp.einsum("bqc,bkc->bqk", q, k) / np.sqrt(c).astype(np.float32)
        y = jnp.einsum("bqk,bkc->bqc", jax.nn.softmax(logits, axis=-1), v)
        return x + nn.Dense(c, name="to_out_0")(y).reshape(b, h, w, c)


class MidBlock(nn.Module):
    features: int
    groups: int

    @nn.compact
    def __call__(self, x):
        x = ResnetBlock(self.features, self.groups, name="resnets_0")(x)
        x = AttentionBlock(self.groups, name="attentions_0")(x)
        return ResnetBlock(self.features, self.groups, name="resnets_1")(x)


class Encoder(nn.Module):
    config: VAEConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        ch = cfg.block_out_channels
        h = _conv(ch[0], 3, "conv_in")(x)
        for i, c in enumerate(ch):
            blk = f"down_blocks_{i}"
            for j in range(cfg.layers_per_block):
                h = ResnetBlock(c, cfg.norm_num_groups, name=f"{blk}_resnets_{j}")(h)
            if i < len(ch) - 1:
                h = jnp.pad(h, ((0, 0), (0, 1), (0, 1), (0, 0)))
                h = _conv(c, 3, f"{blk}_downsamplers_0_conv", stride=2, padding="VALID")(h)
        h = MidBlock(ch[-1], cfg.norm_num_groups, name="mid_block")(h)
        h = nn.silu(GroupNorm(cfg.norm_num_groups, name="conv_norm_out")(h))
        return _conv(2 * cfg.latent_channels, 3, "conv_out")(h)


class Decoder(nn.Module):
    config: VAEConfig

    @nn.compact
    def __call__(self, z):
        cfg = self.config
        ch = tuple(reversed(cfg.block_out_channels))
        h = _conv(ch[0], 3, "conv_in")(z)
        h = MidBlock(ch[0], cfg.norm_num_groups, name="mid_block")(h)
        for i, c in enumerate(ch):
            blk = f"up_blocks_{i}"
            for j in range(cfg.layers_per_block + 1):
                h = ResnetBlock(c, cfg.norm_num_groups, name=f"{blk}_resnets_{j}")(h)
            if i < len(ch) - 1:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest, 2x
                h = _conv(c, 3, f"{blk}_upsamplers_0_conv")(h)
        h = nn.silu(GroupNorm(cfg.norm_num_groups, name="conv_norm_out")(h))
        return _conv(cfg.out_channels, 3, "conv_out")(h)


class VAENet(nn.Module):
    """Encoder (+ ``quant_conv``), (``post_quant_conv`` +) Decoder; methods ``encode``
    (moments, ``[B, H/f, W/f, 2 C_z]``) and ``decode`` (unscaled ``z`` to pixels). The two 1x1
    convs exist only if ``config.use_quant_conv`` / ``use_post_quant_conv``."""

    config: VAEConfig

    def setup(self):
        cfg = self.config
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.use_quant_conv:
            self.quant_conv = _conv(2 * cfg.latent_channels, 1, None)
        if cfg.use_post_quant_conv:
            self.post_quant_conv = _conv(cfg.latent_channels, 1, None)

    def encode(self, x):
        h = self.encoder(x)
        return self.quant_conv(h) if self.config.use_quant_conv else h

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z) if self.config.use_post_quant_conv else z)

    def __call__(self, x):
        return self.decode(self.encode(x)[..., : self.config.latent_channels])
