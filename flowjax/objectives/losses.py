"""Per-sample premetrics ``D(prediction, target) -> [B]`` for flow objectives.

- ``l2``: mean over elements of the squared error (rectified-flow / SiT ``mean_flat``).
- ``pseudo_huber``: ``(sqrt(||delta||^2 + c^2) - c)`` with the norm over all ``d`` elements of
  one sample (iCT, Lee et al.). Small errors behave like ``||delta||^2 / (2c)``, large ones
  like ``||delta||``. The default ``c = 0.00054 * sqrt(d)`` is iCT's choice. The result is
  divided by ``d`` when ``normalize=True`` (the 2-rectified-flow++ code's scaling, which
  also uses ``c = 0.00054 * d``; see ALGORITHMS.md section 12).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

Array = jax.Array


def _flat(x: Array) -> Array:
    return x.reshape(x.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class L2:
    name: str = "l2"

    def __call__(self, pred: Array, target: Array) -> Array:
        return jnp.mean(jnp.square(_flat(pred - target)), axis=1)


@dataclasses.dataclass(frozen=True)
class PseudoHuber:
    c: float | None = None
    normalize: bool = False
    name: str = "pseudo_huber"

    def constant(self, dim: int) -> float:
        return self.c if self.c is not None else 0.00054 * math.sqrt(dim)

    def __call__(self, pred: Array, target: Array) -> Array:
        delta = _flat(pred - target)
        dim = delta.shape[1]
        c = self.constant(dim)
        value = jnp.sqrt(jnp.sum(jnp.square(delta), axis=1) + c**2) - c
        return value / dim if self.normalize else value


_LOSSES = {"l2": L2, "pseudo_huber": PseudoHuber}


def make_loss(name: str, **kwargs):
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(_LOSSES)}")
    return _LOSSES[name](**kwargs)
