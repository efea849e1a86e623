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

Weights: :meth:`AutoencoderKL.from_file` reads either a flowjax ``.npz`` (flat keys
``encoder/down_blocks_0/resnets_0/conv1/kernel`` ... plus ``config/*`` scalars) or, directly, a
diffusers ``diffusion_pytorch_model.safetensors`` (read without torch or the safetensors
package) with its ``config.json`` beside it: the config gives what the tensors cannot
(``norm_num_groups``, the two factors), and the tensors must agree with the rest of it; a
``.safetensors`` without a ``config.json`` is refused rather than read with guessed settings.
Convert once (a ``.bin`` needs torch for this step only; ``--config`` defaults to the
``config.json`` beside the weights)::

    flowjax convert-vae --weights=diffusion_pytorch_model.safetensors \
        [--config=config.json] --out=sd_vae_ft_ema.npz

Example::

    vae = AutoencoderKL.from_file("sd_vae_ft_ema.npz")
    mean, std = vae.encode_moments(x_bhwc)            # [B, 32, 32, 4] each, unscaled
    y = vae.scale(mean + std * eps)                    # model space
    x_hat = vae.decode(y)                              # [B, 256, 256, 3] in about [-1, 1]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from flowjax.weight_files import (
    few,
    flatten,
    read_npz,
    read_safetensors,
    save_npz,
    to_numpy,
    unflatten,
)

__all__ = [
    "AutoencoderKL",
    "VAEConfig",
    "VAENet",
    "SD_VAE_CONFIG",
    "config_from_json",
    "convert_diffusers_state_dict",
    "load_weights",
    "random_weights",
    "read_safetensors",
    "save_weights",
]

Array = jax.Array
GN_EPS = 1e-6
LOGVAR_RANGE = (-30.0, 20.0)
_CONVERT_COMMAND = (
    "flowjax convert-vae --weights=diffusion_pytorch_model.safetensors "
    "[--config=config.json] --out={out}"
)


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
# What diffusers' AutoencoderKL takes for a field its config.json leaves out.
_DIFFUSERS_DEFAULTS = VAEConfig(block_out_channels=(64,), layers_per_block=1)
# The fields a config.json fixes that the tensors also show (checked against them).
_LAYOUT_FIELDS = (
    "in_channels",
    "out_channels",
    "latent_channels",
    "block_out_channels",
    "layers_per_block",
    "use_quant_conv",
    "use_post_quant_conv",
)


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Weights: flat keys, shapes, files
# ---------------------------------------------------------------------------------------------


def weight_shapes(config: VAEConfig = SD_VAE_CONFIG) -> dict[str, tuple[int, ...]]:
    """Every parameter key (``"encoder/conv_in/kernel"``, ...) of ``config`` and its shape."""
    config = config.check()
    f = config.downsample_factor
    x = jax.ShapeDtypeStruct((1, f, f, config.in_channels), jnp.float32)
    init = lambda x_: VAENet(config).init(jax.random.PRNGKey(0), x_)["params"]
    shapes = jax.eval_shape(init, x)
    return {k: tuple(v.shape) for k, v in flatten(shapes).items()}


def _config_from_weights(weights: Mapping[str, Any], base: VAEConfig) -> VAEConfig:
    """Channel layout (and whether the 1x1 ``quant_conv`` / ``post_quant_conv`` exist) inferred
    from the tensors; groups / scale / shift from ``base``."""
    blocks = sorted(
        int(m.group(1))
        for k in weights
        if (m := re.fullmatch(r"encoder/down_blocks_(\d+)_resnets_0/conv1/kernel", k))
    )
    if not blocks or blocks != list(range(len(blocks))):
        return base
    ch = tuple(
        int(np.shape(weights[f"encoder/down_blocks_{i}_resnets_0/conv1/kernel"])[-1])
        for i in blocks
    )
    layers = len(
        {
            m.group(1)
            for k in weights
            if (m := re.fullmatch(r"encoder/down_blocks_0_resnets_(\d+)/.*", k))
        }
    )
    get = lambda k, axis: int(np.shape(weights[k])[axis]) if k in weights else None
    return dataclasses.replace(
        base,
        block_out_channels=ch,
        layers_per_block=layers or base.layers_per_block,
        in_channels=get("encoder/conv_in/kernel", 2) or base.in_channels,
        out_channels=get("decoder/conv_out/kernel", 3) or base.out_channels,
        latent_channels=get("decoder/conv_in/kernel", 2) or base.latent_channels,
        use_quant_conv="quant_conv/kernel" in weights,
        use_post_quant_conv="post_quant_conv/kernel" in weights,
    )


def check_weights(
    weights: Mapping[str, Any], base: VAEConfig = SD_VAE_CONFIG
) -> tuple[dict[str, np.ndarray], VAEConfig]:
    """Validate a flat weight dict; returns ``(float32 copy, config)`` or raises ``ValueError``
    naming the missing / unexpected / mis-shaped keys."""
    if not isinstance(weights, Mapping):
        raise ValueError(f"VAE weights must be a mapping of key -> array, got {type(weights)}.")
    weights = {k: v for k, v in weights.items() if not k.startswith("config/")}
    config = _config_from_weights(weights, base).check()
    expected = weight_shapes(config)
    missing = [k for k in expected if k not in weights]
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        parts = [f"{len(missing)} missing keys ({few(missing)})"] if missing else []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({few(unexpected)})")
        raise ValueError(
            "these are not AutoencoderKL (SD-VAE) weights: " + " and ".join(parts) + ". "
            "Expected keys like encoder/conv_in/kernel, encoder/down_blocks_0_resnets_0/norm1/"
            "scale, decoder/mid_block/attentions_0/to_q/kernel, quant_conv/kernel (diffusers: "
            "encoder.conv_in.weight, encoder.down_blocks.0.resnets.0.norm1.weight, ...); "
            f"convert a diffusers file with `{_CONVERT_COMMAND.format(out='vae.npz')}`."
        )
    wrong = [
        f"{k}: {tuple(np.shape(weights[k]))} (expected {s})"
        for k, s in expected.items()
        if tuple(np.shape(weights[k])) != s
    ]
    if wrong:
        raise ValueError(f"VAE weights have wrong shapes for {config}: {few(wrong)}.")
    clean = {}
    for k in expected:
        a = np.asarray(weights[k])
        if a.dtype.kind not in "fiu" and a.dtype.name != "bfloat16":
            raise ValueError(f"VAE weight {k} must be a real array, got dtype {a.dtype}.")
        a = a.astype(np.float32)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"VAE weight {k} contains NaN or inf.")
        clean[k] = a
    return clean, config


def _config_entries(config: VAEConfig) -> dict[str, np.ndarray]:
    return {
        "config/norm_num_groups": np.asarray(config.norm_num_groups, np.int64),
        "config/scaling_factor": np.asarray(config.scaling_factor, np.float64),
        "config/shift_factor": np.asarray(config.shift_factor, np.float64),
    }


def _base_from_entries(data: Mapping[str, Any]) -> VAEConfig:
    kw = {}
    if "config/norm_num_groups" in data:
        kw["norm_num_groups"] = int(data["config/norm_num_groups"])
    for name in ("scaling_factor", "shift_factor"):
        if f"config/{name}" in data:
            kw[name] = float(data[f"config/{name}"])
    return dataclasses.replace(SD_VAE_CONFIG, **kw)


def save_weights(path: str | os.PathLike, weights: Mapping[str, Any], config: VAEConfig) -> str:
    """Validate and write ``weights`` (+ ``config/*`` scalars) as an ``.npz``, atomically."""
    clean, config = check_weights(weights, config)
    return save_npz(path, {**clean, **_config_entries(config)}, "vae")


# ---------------------------------------------------------------------------------------------
# diffusers state dicts (.safetensors read with numpy; .bin through torch, converter only;
# both by flowjax.weight_files.read_state_dict)
# ---------------------------------------------------------------------------------------------

_OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _torch_to_flax_key(key: str) -> str:
    """``encoder.down_blocks.0.resnets.1.norm1.weight`` -> ``encoder/down_blocks_0_resnets_1/
    norm1/scale`` (leaf decided later); old attention names (``query``...) are renamed."""
    parts = key.split(".")
    for old, new in _OLD_ATTENTION.items():
        if len(parts) >= 2 and parts[-2] == old:
            parts = parts[:-2] + new.split(".") + parts[-1:]
    merged: list[str] = []
    for p in parts[:-1]:
        if p.isdigit() and merged:
            merged[-1] += f"_{p}"
        else:
            merged.append(p)
    # the blocks of a stage are flat in the flax tree: down_blocks_0_resnets_1,
    # down_blocks_0_downsamplers_0_conv
    if len(merged) >= 3 and re.fullmatch(r"(down|up)_blocks_\d+", merged[1]):
        take = 4 if re.fullmatch(r"(down|up)samplers_0", merged[2]) else 3
        merged = [merged[0], "_".join(merged[1:take]), *merged[take:]]
    return "/".join(merged) + "/" + parts[-1]


def convert_diffusers_state_dict(
    state_dict: Mapping[str, Any], config: VAEConfig, *, config_source: str = "the config"
) -> tuple[dict[str, np.ndarray], VAEConfig]:
    """Map a diffusers ``AutoencoderKL`` state dict to the flat flax layout.

    Conv weights ``[O, I, kh, kw]`` become HWIO kernels, linear weights ``[O, I]`` (or the 1x1
    conv ``[O, I, 1, 1]`` of old attention blocks) become ``[I, O]``, norm weights ``scale``.
    ``config`` is the VAE's (:func:`config_from_json` of its diffusers ``config.json``): it
    supplies ``norm_num_groups``, ``scaling_factor`` and ``shift_factor``, which the tensors do
    not show, and the tensors must agree with its channel layout and its ``use_quant_conv`` /
    ``use_post_quant_conv`` (``config_source`` names it in that error). Values may be torch
    tensors. Returns ``(weights, config)``; raises ``ValueError`` naming the expected keys if
    the dict is not an AutoencoderKL's (e.g. a UNet's), or the fields that disagree.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a mapping, got {type(state_dict)}.")
    out = {}
    for key, value in state_dict.items():
        a = to_numpy(value)
        path = _torch_to_flax_key(key)
        stem, leaf = path.rsplit("/", 1)
        is_attn = bool(re.search(r"attentions_0/(to_q|to_k|to_v|to_out_0)$", stem))
        if leaf == "weight" and is_attn:
            out[f"{stem}/kernel"] = a.reshape(a.shape[0], a.shape[1]).T
        elif leaf == "weight" and a.ndim == 4:
            out[f"{stem}/kernel"] = np.transpose(a, (2, 3, 1, 0))
        elif leaf == "weight" and a.ndim == 1:
            out[f"{stem}/scale"] = a
        else:
            out[path] = a
    weights, found = check_weights(out, config)
    config = config.check()
    wrong = [
        f"{k}={getattr(config, k)!r} in {config_source}, {getattr(found, k)!r} in the weights"
        for k in _LAYOUT_FIELDS
        if getattr(config, k) != getattr(found, k)
    ]
    if wrong:
        raise ValueError(
            f"the VAE weights do not match {config_source}: {'; '.join(wrong)}. Use the "
            "config.json that came with these weights."
        )
    return weights, config


def load_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], VAEConfig]:
    """Read VAE weights: a flowjax ``.npz``, or a diffusers ``.safetensors`` with its
    ``config.json`` beside it (refused without one: the settings are not guessed)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"VAE weight file {path!r} does not exist. flowjax never downloads weights; use the "
            "diffusers file of the VAE (e.g. stabilityai/sd-vae-ft-ema: "
            "diffusion_pytorch_model.safetensors, with its config.json beside it), or convert it "
            f"once with\n    {_CONVERT_COMMAND.format(out=path)}"
        )
    if path.endswith(".safetensors"):
        cfg_json = config_json_beside(path)
        return convert_diffusers_state_dict(
            read_safetensors(path), config_from_json(cfg_json), config_source=cfg_json
        )
    flat = read_npz(
        path, "VAE", f"; convert a diffusers file with `{_CONVERT_COMMAND.format(out='vae.npz')}`."
    )
    return check_weights(flat, _base_from_entries(flat))


def config_json_beside(weights_path: str | os.PathLike) -> str:
    """The ``config.json`` in the directory of a diffusers weight file, or a ``ValueError``
    saying to supply it (diffusers keeps it beside ``diffusion_pytorch_model.*``)."""
    path = os.path.join(os.path.dirname(os.path.abspath(weights_path)), "config.json")
    if not os.path.isfile(path):
        raise ValueError(
            f"no config.json beside {os.fspath(weights_path)}: the VAE's diffusers config.json "
            "(norm_num_groups, scaling_factor, shift_factor, ... which the weights do not show) "
            "must lie beside it, or be passed to the converter as --config=config.json."
        )
    return path


def config_from_json(path: str | os.PathLike) -> VAEConfig:
    """The :class:`VAEConfig` of a diffusers ``AutoencoderKL`` ``config.json``.

    Fields it leaves out take diffusers' defaults (``block_out_channels = (64,)``,
    ``layers_per_block = 1``, ...); ``shift_factor: null`` is 0. Refuses (``ValueError``) a
    config of another class or of an AutoencoderKL variant this network does not implement
    (other block types or activation, no mid-block attention, per-channel ``latents_mean`` /
    ``latents_std``).
    """
    path = os.fspath(path)
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable JSON config ({err}).") from err
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} holds a {type(cfg).__name__}, not a diffusers config object.")
    what = f"{path} (a diffusers {cfg.get('_class_name', 'AutoencoderKL')} config)"
    if cfg.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise ValueError(f"{what} is not an AutoencoderKL's config; pass the VAE's config.json.")
    n = len(cfg.get("block_out_channels", _DIFFUSERS_DEFAULTS.block_out_channels))
    unsupported = {
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "act_fn": "silu",
        "mid_block_add_attention": True,
        "latents_mean": None,
        "latents_std": None,
    }
    for key, want in unsupported.items():
        got = cfg.get(key, want)
        if (list(got) if isinstance(got, (list, tuple)) else got) != want:
            raise ValueError(
                f"{what} has {key}={got!r}; flowjax's AutoencoderKL implements only {want!r}."
            )
    fields = {f.name for f in dataclasses.fields(VAEConfig)}
    kw = {k: v for k, v in cfg.items() if k in fields and v is not None}
    if "block_out_channels" in kw:
        kw["block_out_channels"] = tuple(kw["block_out_channels"])
    return dataclasses.replace(_DIFFUSERS_DEFAULTS, **kw).check()


def random_weights(config: VAEConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights of ``config`` (flax's default init, GroupNorm scale ``1 + N(0, 0.1^2)``,
    biases ``N(0, 0.02^2)``), for tests and smoke runs only."""
    config = config.check()
    f = config.downsample_factor
    x = jnp.zeros((1, f, f, config.in_channels))
    params = jax.jit(VAENet(config).init)(jax.random.PRNGKey(seed), x)["params"]
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in flatten(params).items():
        v = np.asarray(v, np.float32)
        if k.endswith("/scale"):
            v = v + 0.1 * rng.standard_normal(v.shape, np.float32)
        elif k.endswith("/bias"):
            v = v + 0.02 * rng.standard_normal(v.shape, np.float32)
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------
# The public object
# ---------------------------------------------------------------------------------------------


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
