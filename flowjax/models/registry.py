"""Build a network from the ``model`` section of a config and adapt it to ``apply_fn``."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flowjax.models.blockwise import BlockwiseFlowNet
from flowjax.models.decomposable import DecomposableDiT
from flowjax.models.dit import DiT
from flowjax.models.fitv2 import FiTv2
from flowjax.models.mlp import MLPVelocity
from flowjax.models.nextdit import NextDiT
from flowjax.models.unet import UNetVelocity
from flowjax.registry import Registry
from flowjax.spec import check_keys
from flowjax.types import Model

#: Networks by name (config ``model.name``); the other keys of ``model`` are its fields.
_MODELS: Registry[type] = Registry("model")


def register_model(name: str, cls: type) -> type:
    """Make ``model.name=name`` build ``cls(**model section)``; returns ``cls``.

    ``cls`` is a flax module that also subclasses :class:`flowjax.types.Model` (``class
    Net(nn.Module, Model)``), so the library reads its ``check_input``, ``forward_flops`` and
    ``num_tokens``; it takes the fields ``num_classes`` and ``use_end_time`` (decided by the
    data and the objective) and ``__call__(x, t, cond, *, train=False)`` (plus ``t_end=`` when
    ``use_end_time``).
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and issubclass(cls, Model)):
        raise TypeError(
            f"model {name!r}: {cls!r} must be a flax module that subclasses "
            "flowjax.types.Model (class Net(nn.Module, Model)); see flowjax.types.Model"
        )
    return _MODELS.register(name, cls)


register_model("mlp", MLPVelocity)
register_model("unet", UNetVelocity)
register_model("dit", DiT)
register_model("decomposable_dit", DecomposableDiT)
register_model("blockwise", BlockwiseFlowNet)
register_model("fitv2", FiTv2)
register_model("nextdit", NextDiT)


def model_class(name: str) -> type:
    """The network registered as ``name`` (an unknown name is an error listing the known)."""
    return _MODELS[name]


def make_model(
    cfg: Any, *, num_classes: int | None = None, use_end_time: bool = False
) -> nn.Module:
    """``cfg.name`` picks the network; the other fields of ``cfg`` are its attributes.

    ``num_classes`` (from the data set, when ``cfg.conditional``) and ``use_end_time`` (from
    the objective) are decided by the caller, not the config, so they cannot disagree.

    ``variant`` (``"XL/2"``) fills the fields of a published size for a network that declares
    ``variant_fields(variant) -> dict`` (the DiT: depth, width, heads and patch size); fields
    given next to it override the preset.
    """
    cfg = dict(cfg)
    name = cfg.pop("name")
    conditional = cfg.pop("conditional", False)
    cls = _MODELS[name]
    variant = cfg.pop("variant", None)
    if variant is not None:
        fields_of = getattr(cls, "variant_fields", None)
        if fields_of is None:
            raise ValueError(f"model {name!r} has no variants; drop model.variant")
        cfg = {**fields_of(variant), **cfg}
    if conditional and num_classes is None:
        raise ValueError(
            "model.conditional=True needs a data set with class labels (label in the array "
            "file, class subfolders); set model.conditional=False for unlabelled data"
        )
    fields = set(cls.__dataclass_fields__) - {"parent", "name", "num_classes", "use_end_time"}
    check_keys(cfg, fields, f"model ({name})")
    return cls(num_classes=num_classes if conditional else None, use_end_time=use_end_time, **cfg)


def init_params(model: nn.Module, key, element_shape, num_classes: int | None = None):
    """Initial parameters of ``model`` for examples of ``element_shape`` (a batch of one).

    Average-velocity networks (``use_end_time``) are called with an end time, class-conditional
    ones with a label; a module that wraps several networks initialises all of them in its
    ``__call__`` when ``self.is_initializing()``.
    """
    x = jnp.zeros((1, *element_shape), jnp.float32)
    t = jnp.zeros((1,), jnp.float32)
    cond = None if num_classes is None else jnp.zeros((1,), jnp.int32)
    extra = {"t_end": t} if getattr(model, "use_end_time", False) else {}
    return model.init(key, x, t, cond, **extra)["params"]


def make_apply_fn(model: nn.Module):
    """Adapt a flax module to ``apply_fn(params, x, t, cond, *, train, rng, **extra)``.

    Extra keywords:

    - ``t_end=[B]``: the end time of an average-velocity network.
    - ``method="name"``: call another method of the module (e.g. the auxiliary network of a
      module that holds several).
    - ``capture=("feature_1", ...)``: also return the named intermediate features the network
      sows (``feature_{i}`` = the output of block ``i``): ``(output, {name: array})``. An
      unknown name is an error that lists the available ones.
    """

    def apply_fn(params, x, t, cond=None, *, train: bool = False, rng=None, capture=None, **extra):
        rngs = {"dropout": rng} if (train and rng is not None) else None
        variables = {"params": params}
        if not capture:
            return model.apply(variables, x, t, cond, train=train, rngs=rngs, **extra)
        out, state = model.apply(
            variables, x, t, cond, train=train, rngs=rngs, mutable=["intermediates"], **extra
        )
        sown = dict(state.get("intermediates", {}))
        missing = [name for name in capture if name not in sown]
        if missing:
            raise ValueError(
                f"the network sows no feature(s) {missing}; available: "
                f"{sorted(k for k in sown if k.startswith('feature_'))}"
            )
        return out, {name: sown[name][0] for name in capture}

    return apply_fn
