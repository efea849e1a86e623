"""Per-sample premetrics ``D(prediction, target) -> [B]`` for flow objectives.

- ``l2``: mean over elements of the squared error (rectified-flow / SiT ``mean_flat``).
- ``pseudo_huber``: ``h_c(delta) = sqrt(||delta||^2 + c^2) - c`` with the norm over all ``d``
  elements of one sample (iCT, Lee et al.). Small errors behave like ``||delta||^2 / (2c)``,
  large ones like ``||delta||``. Two published scalings, chosen by ``normalize``:

  - ``normalize=False`` (iCT): ``h_c(delta)`` with ``c = 0.00054 sqrt(d)``;
  - ``normalize=True`` (2-rectified-flow++): ``h_c(delta) / d`` with ``c = 0.00054 d``, the
    scale its LPIPS-Huber combination assumes (docs/maths/flow_matching.md).

  An explicit ``c`` overrides the constant in either case.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from flowjax.registry import Registry, registrar
from flowjax.spec import coerce
from flowjax.types import Array


def _flat(x: Array) -> Array:
    return x.reshape(x.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class L2:
    name: str = "l2"

    def __call__(self, pred: Array, target: Array) -> Array:
        return jnp.mean(jnp.square(_flat(pred - target)), axis=1)


@dataclasses.dataclass(frozen=True)
class PseudoHuber:
    """Per-sample pseudo-Huber loss ``[B, ...] x [B, ...] -> [B]`` (module docstring).

    Attributes:
      c: the constant; None = ``0.00054 d`` if ``normalize`` else ``0.00054 sqrt(d)``.
      normalize: divide by ``d`` (the 2-rectified-flow++ scaling) instead of iCT's.
    """

    c: float | None = None
    normalize: bool = False
    name: str = "pseudo_huber"

    def __post_init__(self):
        if self.c is not None and not self.c > 0:
            raise ValueError(f"the pseudo-Huber constant c must be > 0 (or None); got {self.c}")

    def constant(self, dim: int) -> float:
        """``c`` for ``dim`` elements per sample."""
        if self.c is not None:
            return self.c
        return 0.00054 * dim if self.normalize else 0.00054 * math.sqrt(dim)

    def __call__(self, pred: Array, target: Array) -> Array:
        delta = _flat(pred - target)
        dim = delta.shape[1]
        c = self.constant(dim)
        value = jnp.sqrt(jnp.sum(jnp.square(delta), axis=1) + c**2) - c
        return value / dim if self.normalize else value


#: Regression losses by name (``make_loss``, config ``objective.loss``).
LOSSES: Registry[type] = Registry("loss", {"l2": L2, "pseudo_huber": PseudoHuber})
register_loss = registrar(
    LOSSES, "register_loss", "a class, ``cls(**kwargs)(pred, target) -> [B]``"
)


def make_loss(name: str, **kwargs):
    cls = LOSSES[name]
    return cls(**coerce(cls, kwargs))
