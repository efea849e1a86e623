"""The SD-VAE users hold: :class:`AutoencoderKL`, a pytree of the network's weights and config.

Images are NHWC floats in ``[-1, 1]``; the encoder's moments give the posterior, and latents
are scaled into the space a latent flow model is trained on (:mod:`flowjax.models.vae`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from flowjax.models.vae.network import SD_VAE_CONFIG, VAEConfig, VAENet
from flowjax.models.vae.weights import check_weights, load_weights
from flowjax.types import Array
from flowjax.weight_files import flatten, unflatten

__all__ = ["AutoencoderKL"]

LOGVAR_RANGE = (-30.0, 20.0)


@flax.struct.dataclass
class AutoencoderKL:
    """An SD-VAE with its weights (a pytree: pass it to jitted functions as an argument).

    Attributes:
      params: the :class:`VAENet` parameter tree.
      config: the :class:`VAEConfig` (static).
    """

    params: Any
    config: VAEConfig = flax.struct.field(pytree_node=False)

    @classmethod
    def from_weights(cls, weights: Mapping[str, Any], config: VAEConfig = SD_VAE_CONFIG):
        clean, config = check_weights(weights, config)
        return cls(jax.tree.map(jnp.asarray, unflatten(clean)), config)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> AutoencoderKL:
        """From a flowjax ``.npz`` or a diffusers ``.safetensors``; ``overrides`` replace
        ``scaling_factor`` / ``shift_factor`` (e.g. ``scaling_factor=0.13025`` for SDXL's)."""
        weights, config = load_weights(path)
        return cls.from_weights(weights, dataclasses.replace(config, **overrides))

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def fingerprint(self) -> str:
        """sha256 of the parameters (every key, shape and float32 value; not the file's name or
        format), so latents made with other weights are told apart."""
        h = hashlib.sha256()
        for key, value in sorted(flatten(jax.device_get(self.params)).items()):
            a = np.ascontiguousarray(value, np.float32)
            h.update(f"{key}:{a.shape};".encode())
            h.update(a.astype("<f4").tobytes())
        return h.hexdigest()

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """``(H / f, W / f, C_z)`` for images ``(H, W, C)``; raises if ``f`` does not divide."""
        h, w, c = (int(d) for d in image_shape)
        f = self.downsample_factor
        if c != self.config.in_channels:
            raise ValueError(
                f"images of shape {(h, w, c)} have {c} channels; this VAE encodes "
                f"{self.config.in_channels}-channel images."
            )
        if h % f or w % f or h < f or w < f:
            raise ValueError(
                f"a {h}x{w} image cannot be downsampled by this VAE's factor {f}; use a "
                f"resolution that is a multiple of {f} (e.g. {max(f, h // f * f)})."
            )
        return h // f, w // f, self.config.latent_channels

    def _check_images(self, x):
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"expected images [B, H, W, C] (NHWC), got shape {x.shape}.")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(
                f"images must be floats in [-1, 1], got {x.dtype} (scale uint8 by x / 127.5 - 1)."
            )
        self.latent_shape(x.shape[1:])
        return x.astype(jnp.float32)

    def encode_moments(self, x_bhwc) -> tuple[Array, Array]:
        """Posterior ``(mean, std)`` of ``q(z | x)``, each ``[B, H/f, W/f, C_z]``, unscaled."""
        return _encode(self.params, self._check_images(x_bhwc), config=self.config)

    def scale(self, z):
        """``y = scaling_factor * (z - shift_factor)``: VAE latent -> model space."""
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def unscale(self, y):
        """``z = y / scaling_factor + shift_factor``: model space -> VAE latent."""
        return y / self.config.scaling_factor + self.config.shift_factor

    def encode(self, x_bhwc, key=None) -> Array:
        """Model-space latents ``scale(z)``: the posterior mean, or a sample if ``key``."""
        mean, std = self.encode_moments(x_bhwc)
        z = mean if key is None else mean + std * jax.random.normal(key, mean.shape)
        return self.scale(z)

    def decode(self, y_bhwc) -> Array:
        """Pixels ``[B, H, W, C_out]`` (about ``[-1, 1]``) of model-space latents ``y``."""
        y = jnp.asarray(y_bhwc, jnp.float32)
        if y.ndim != 4 or y.shape[-1] != self.config.latent_channels:
            raise ValueError(
                f"expected latents [B, h, w, {self.config.latent_channels}], got {y.shape}."
            )
        return _decode(self.params, self.unscale(y), config=self.config)


@jax.jit(static_argnames="config")
def _encode(params, x, *, config):
    moments = VAENet(config).apply({"params": params}, x, method=VAENet.encode)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    logvar = jnp.clip(logvar, *LOGVAR_RANGE)
    return mean, jnp.exp(0.5 * logvar)


@jax.jit(static_argnames="config")
def _decode(params, z, *, config):
    return VAENet(config).apply({"params": params}, z, method=VAENet.decode)
