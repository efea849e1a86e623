"""The SD-VAE's weight files: shapes, checks, ``.npz`` files, diffusers checkpoints, random weights.

:func:`load_weights` reads either a flowjax ``.npz`` (flat keys
``encoder/down_blocks_0_resnets_0/conv1/kernel`` ... plus ``config/*`` scalars) or, directly, a
diffusers ``diffusion_pytorch_model.safetensors`` (read without torch or the safetensors
package) with its ``config.json`` beside it: the config gives what the tensors cannot
(``norm_num_groups``, the two factors), and the tensors must agree with the rest of it; a
``.safetensors`` without a ``config.json`` is refused rather than read with guessed settings.
Convert once (a ``.bin`` needs torch for this step only; ``--config`` defaults to the
``config.json`` beside the weights)::

    flowjax convert-vae --weights=diffusion_pytorch_model.safetensors \
        [--config=config.json] --out=sd_vae_ft_ema.npz

What is common to every pretrained network's file (the
missing-file error, reading, the key / shape / value checks, the atomic write, random weights)
is :data:`SPEC`, a :class:`flowjax.weight_files.WeightSpec`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.models.vae.network import SD_VAE_CONFIG, VAEConfig, VAENet
from flowjax.weight_files import (
    WeightSpec,
    flatten,
    read_safetensors,
    to_numpy,
    tree_shapes,
)

__all__ = [
    "SPEC",
    "check_weights",
    "config_from_json",
    "config_json_beside",
    "convert_diffusers_state_dict",
    "load_weights",
    "random_weights",
    "save_weights",
    "weight_shapes",
]

SPEC = WeightSpec(
    what="VAE",
    prefix="vae",
    convert=(
        "flowjax convert-vae --weights=diffusion_pytorch_model.safetensors "
        "[--config=config.json] --out={out}"
    ),
    example_out="vae.npz",
    make_file=(
        "use the diffusers file of the VAE (e.g. stabilityai/sd-vae-ft-ema: "
        "diffusion_pytorch_model.safetensors, with its config.json beside it), or convert it "
        "once with\n    {command}"
    ),
    wrong_keys=(
        "these are not AutoencoderKL (SD-VAE) weights: {keys}. Expected keys like "
        "encoder/conv_in/kernel, encoder/down_blocks_0_resnets_0/norm1/scale, "
        "decoder/mid_block/attentions_0/to_q/kernel, quant_conv/kernel (diffusers: "
        "encoder.conv_in.weight, encoder.down_blocks.0.resnets.0.norm1.weight, ...); "
        "convert a diffusers file with `{command}`."
    ),
    read_hint="; convert a diffusers file with `{command}`.",
    noise=(
        ("/scale", lambda rng, shape: 0.1 * rng.standard_normal(shape, np.float32)),
        ("/bias", lambda rng, shape: 0.02 * rng.standard_normal(shape, np.float32)),
    ),
)
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


def weight_shapes(config: VAEConfig = SD_VAE_CONFIG) -> dict[str, tuple[int, ...]]:
    """Every parameter key (``"encoder/conv_in/kernel"``, ...) of ``config`` and its shape."""
    config = config.check()
    f = config.downsample_factor
    x = jax.ShapeDtypeStruct((1, f, f, config.in_channels), jnp.float32)
    init = lambda x_: VAENet(config).init(jax.random.PRNGKey(0), x_)["params"]
    return tree_shapes(jax.eval_shape(init, x))


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
    naming the missing / unexpected / mis-shaped keys (:meth:`WeightSpec.check`)."""
    weights = SPEC.check_mapping(weights)
    weights = {k: v for k, v in weights.items() if not k.startswith("config/")}
    config = _config_from_weights(weights, base).check()
    return SPEC.check(weights, weight_shapes(config), f" for {config}"), config


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
    return SPEC.save(path, clean, _config_entries(config))


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
    path = SPEC.require_file(path)
    if path.endswith(".safetensors"):
        cfg_json = config_json_beside(path)
        return convert_diffusers_state_dict(
            read_safetensors(path), config_from_json(cfg_json), config_source=cfg_json
        )
    flat = SPEC.read(path)
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
    return SPEC.random(flatten(jax.device_get(params)), seed)
