"""The LPIPS weight converter: torchvision VGG16 + lpips v0.1 checkpoints -> the flowjax ``.npz``.

``flowjax convert-lpips --vgg=vgg16.pth --lin=vgg.pth --out=lpips_vgg16.npz`` (or
``python -m flowjax.evaluation.lpips``) reads the two files and runs
:func:`convert_torch_weights`. torch is imported only while reading a ``.pth``
(:func:`flowjax.weight_files.read_state_dict`); the layout written is described in
:mod:`flowjax.evaluation.lpips`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flowjax.evaluation.lpips.network import (
    STAGE_DEPTHS,
    TORCHVISION_CONV_INDICES,
    _check_weights,
)
from flowjax.weight_files import to_numpy


def convert_torch_weights(vgg_state_dict: Mapping[str, Any], lin_state_dict) -> dict:
    """Map torch checkpoints to the flowjax LPIPS weight layout (module docstring).

    Args:
      vgg_state_dict: torchvision ``vgg16()`` state dict (keys ``features.{i}.weight`` /
        ``.bias``; ``classifier.*`` keys are ignored) or that of ``vgg16().features`` alone
        (keys ``{i}.weight``). Conv ``i`` in ``TORCHVISION_CONV_INDICES``; weights
        ``[C_out, C_in, 3, 3]`` become HWIO ``[3, 3, C_in, C_out]``.
      lin_state_dict: the lpips package's state dict (keys ``lin{k}.model.1.weight``, or
        ``...model.0...`` without dropout, any prefix), each ``[1, C_k, 1, 1]``; or a sequence
        of five arrays of ``C_k`` entries each.

    Values may be torch tensors or arrays. Returns ``{key: float32 np.ndarray}``, validated.
    """
    if not isinstance(vgg_state_dict, Mapping):
        raise ValueError(f"vgg_state_dict must be a mapping, got {type(vgg_state_dict)}.")
    keys = set(vgg_state_dict)
    if "features.0.weight" in keys:
        prefix = "features."
    elif "0.weight" in keys:
        prefix = ""
    else:
        raise ValueError(
            "vgg_state_dict has neither 'features.0.weight' (torchvision vgg16()) nor "
            f"'0.weight' (vgg16().features); first keys: {sorted(keys)[:6]}."
        )
    out: dict[str, np.ndarray] = {}
    missing = []
    for name, i in TORCHVISION_CONV_INDICES.items():
        w_key, b_key = f"{prefix}{i}.weight", f"{prefix}{i}.bias"
        if w_key not in keys or b_key not in keys:
            missing += [k for k in (w_key, b_key) if k not in keys]
            continue
        w = to_numpy(vgg_state_dict[w_key])
        if w.ndim != 4 or w.shape[2:] != (3, 3):
            raise ValueError(
                f"{w_key} must be a 3x3 conv weight [C_out, C_in, 3, 3], got {w.shape}."
            )
        out[f"vgg/{name}/kernel"] = np.transpose(w, (2, 3, 1, 0)).astype(np.float32)
        out[f"vgg/{name}/bias"] = to_numpy(vgg_state_dict[b_key]).astype(np.float32)
    if missing:
        raise ValueError(f"vgg_state_dict lacks the VGG16 conv keys {missing}.")

    if isinstance(lin_state_dict, Mapping):
        lins = []
        for k in range(len(STAGE_DEPTHS)):
            pattern = re.compile(rf"(?:^|\.)lin{k}\.(?:model\.\d+\.)?weight$")
            found = [key for key in lin_state_dict if pattern.search(key)]
            if len(found) != 1:
                raise ValueError(
                    f"lin_state_dict must have exactly one key like 'lin{k}.model.1.weight', "
                    f"found {found}; keys: {sorted(lin_state_dict)[:10]}."
                )
            lins.append(to_numpy(lin_state_dict[found[0]]))
    elif isinstance(lin_state_dict, Sequence) and len(lin_state_dict) == len(STAGE_DEPTHS):
        lins = [to_numpy(w) for w in lin_state_dict]
    else:
        raise ValueError(
            "lin_state_dict must be the lpips state dict (lin{k}.model.1.weight) or a sequence "
            f"of five weight arrays, got {type(lin_state_dict)}."
        )
    for k, w in enumerate(lins):
        if w.ndim not in (1, 4) or (w.ndim == 4 and (w.shape[0], w.shape[2:]) != (1, (1, 1))):
            raise ValueError(f"lin{k} weight must be [1, C, 1, 1] (or [C]), got {w.shape}.")
        out[f"lin{k}"] = w.reshape(-1).astype(np.float32)
    return _check_weights(out)[0]
