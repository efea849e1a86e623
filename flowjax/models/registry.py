"""Build a network from the ``model`` section of a config and adapt it to ``apply_fn``."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from flowjax.models.dit import DiT, dit_variant
from flowjax.models.mlp import MLPVelocity
from flowjax.models.unet import UNetVelocity

_MODELS = {"mlp": MLPVelocity, "unet": UNetVelocity, "dit": DiT}


def make_model(
    cfg: Any, *, num_classes: int | None = None, use_end_time: bool = False
) -> nn.Module:
    """``cfg.name`` picks the network; the other fields of ``cfg`` are its attributes.

    ``num_classes`` (from the data set, when ``cfg.conditional``) and ``use_end_time`` (from
    the objective) are decided by the caller, not the config, so they cannot disagree.

    ``name="dit"`` also takes ``variant`` (``"S/2"`` ... ``"XL/8"``), which fills depth,
    width, heads and patch size; fields given next to it override the preset.
    """
    cfg = dict(cfg)
    name = cfg.pop("name")
    conditional = cfg.pop("conditional", False)
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(_MODELS)}")
    variant = cfg.pop("variant", None)
    if variant is not None:
        if name != "dit":
            raise ValueError(f"model {name!r} has no variants; 'variant' is a DiT option")
        cfg = {**dit_variant(variant), **cfg}
    if conditional and num_classes is None:
        raise ValueError("model.conditional=True needs a data set with class labels")
    fields = set(_MODELS[name].__dataclass_fields__) - {
        "parent",
        "name",
        "num_classes",
        "use_end_time",
    }
    unknown = set(cfg) - fields
    if unknown:
        raise ValueError(
            f"model {name!r} has no option(s) {sorted(unknown)}; options: {sorted(fields)}"
        )
    return _MODELS[name](
        num_classes=num_classes if conditional else None, use_end_time=use_end_time, **cfg
    )


def make_apply_fn(model: nn.Module):
    """Adapt a flax module to ``apply_fn(params, x, t, cond, *, train, rng, **extra)``."""

    def apply_fn(params, x, t, cond=None, *, train: bool = False, rng=None, **extra):
        rngs = {"dropout": rng} if (train and rng is not None) else None
        return model.apply({"params": params}, x, t, cond, train=train, rngs=rngs, **extra)

    return apply_fn
