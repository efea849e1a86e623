"""Published weight files -> the flowjax ``.npz`` of each pretrained network.

Each function reads the published file(s) (a ``.pth`` / ``.bin`` needs torch for this step
only: :func:`flowjax.weight_files.read_state_dict`), converts with the network's own
converter, writes ``out`` atomically and returns the line a command line prints.
"""

from __future__ import annotations

import dataclasses

from flowjax.evaluation.lpips import STAGE_DEPTHS, convert_torch_weights
from flowjax.evaluation.lpips import save_weights as save_lpips_weights
from flowjax.models import inception, vae
from flowjax.weight_files import read_state_dict


def convert_vae(
    weights: str, out: str, *, config: str | None = None, scaling_factor: float | None = None
) -> str:
    """A diffusers ``AutoencoderKL`` file (``.safetensors`` or ``.bin``) with its
    ``config.json`` (default: the one beside ``weights``) -> a flowjax VAE ``.npz``."""
    cfg_json = config or vae.config_json_beside(weights)
    vae_config = vae.config_from_json(cfg_json)
    if scaling_factor is not None:
        vae_config = dataclasses.replace(vae_config, scaling_factor=scaling_factor)
    converted, vae_config = vae.convert_diffusers_state_dict(
        read_state_dict(weights), vae_config, config_source=cfg_json
    )
    path = vae.save_weights(out, converted, vae_config)
    count = sum(int(a.size) for a in converted.values())
    return f"wrote {path}: {vae_config}, {count:,} parameters"


def convert_inception(weights: str, out: str) -> str:
    """pytorch-fid's FID InceptionV3 (``pt_inception-2015-12-05-6726825d.pth``) -> ``.npz``."""
    state = read_state_dict(weights)
    return f"wrote {inception.save_weights(out, inception.convert_torch_state_dict(state))}"


def convert_lpips(vgg: str, lin: str, out: str) -> str:
    """torchvision's VGG16 state dict + the lpips package's ``weights/v0.1/vgg.pth`` -> ``.npz``."""
    converted = convert_torch_weights(read_state_dict(vgg), read_state_dict(lin))
    path = save_lpips_weights(out, converted)
    widths = tuple(int(converted[f"lin{k}"].shape[0]) for k in range(len(STAGE_DEPTHS)))
    count = sum(int(a.size) for a in converted.values())
    return f"wrote {path}: stage widths {widths}, {count:,} parameters"
