"""SD-VAE: the KL autoencoder of latent diffusion (``AutoencoderKL``) in flax, weights from a file.

This is the autoencoder that DiT, SiT, REPA and MeanFlow train in the latent space of
(Rombach et al. 2022; the ``stabilityai/sd-vae-ft-ema`` / ``-mse`` weights). Images are NHWC
floats in ``[-1, 1]``; for a ``256 x 256 x 3`` image the latent is ``32 x 32 x 4``.

.. code-block:: text

    encode:  x [B, H, W, C_in]  ->  moments [B, H/f, W/f, 2 C_z]  ->  (mean, logvar)
             logvar <- clip(logvar, -30, 20),   std = exp(logvar / 2)
             posterior q(z | x) = N(mean, diag(std^2)),   z = mean + std * eps
    latent:  y = scaling_factor * (z - shift_factor)       what a latent flow model is trained on
    decode:  x_hat = decoder(y / scaling_factor + shift_factor)   [B, H, W, C_out]

``f = 2^(len(block_out_channels) - 1)`` (8 for SD-VAE's four stages), ``C_z =
latent_channels`` (4). ``scaling_factor = 0.18215`` for the SD 1.x/2.x VAE (it makes the
latents of ImageNet roughly unit variance), ``shift_factor = 0``. The SD3 / FLUX VAEs have
16 latent channels, no ``quant_conv`` / ``post_quant_conv`` (``use_quant_conv =
use_post_quant_conv = False``) and other factors (SD3: ``scaling_factor = 1.5305``,
``shift_factor = 0.0609``; FLUX: ``0.3611``, ``0.1159``); all are read from the VAE's diffusers
``config.json``.

The package: :mod:`~flowjax.models.vae.network` (:class:`VAEConfig` and the flax modules, the
architecture), :mod:`~flowjax.models.vae.weights` (the weight layout and its checks, flowjax
``.npz`` files, diffusers ``.safetensors`` / ``.bin`` checkpoints and ``config.json``, random
weights, the converter ``flowjax convert-vae``) and
:mod:`~flowjax.models.vae.autoencoder` (:class:`AutoencoderKL`, what users hold:
:meth:`AutoencoderKL.from_file` reads a flowjax ``.npz`` or, directly, a diffusers
``.safetensors`` with its ``config.json`` beside it); this module re-exports their public
names.

Example::

    vae = AutoencoderKL.from_file("sd_vae_ft_ema.npz")
    mean, std = vae.encode_moments(x_bhwc)            # [B, 32, 32, 4] each, unscaled
    y = vae.scale(mean + std * eps)                    # model space
    x_hat = vae.decode(y)                              # [B, 256, 256, 3] in about [-1, 1]
"""

from flowjax.models.vae.autoencoder import AutoencoderKL
from flowjax.models.vae.network import SD_VAE_CONFIG, VAEConfig, VAENet
from flowjax.models.vae.weights import (
    check_weights,
    config_from_json,
    config_json_beside,
    convert_diffusers_state_dict,
    load_weights,
    random_weights,
    save_weights,
    weight_shapes,
)

__all__ = [
    "AutoencoderKL",
    "VAEConfig",
    "VAENet",
    "SD_VAE_CONFIG",
    "check_weights",
    "config_from_json",
    "config_json_beside",
    "convert_diffusers_state_dict",
    "load_weights",
    "random_weights",
    "save_weights",
    "weight_shapes",
]
