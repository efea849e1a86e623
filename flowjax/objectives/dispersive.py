"""Dispersive regularisation of intermediate features ("Diffuse and Disperse").

Maths: docs/maths/meanflow.md.

A positive-pair-free contrastive loss on the features ``H [B, D]`` (flattened activations of a
chosen layer for the whole batch) that pushes the representations of different samples apart:

- ``infonce_l2`` (default): ``log( (1/B^2) sum_ij exp(-D_ij / tau) )`` with
  ``D_ij = ||h_i - h_j||^2 / D`` (the squared distance divided by the feature dimension ``D``,
  as the method's reference code does: without it the off-diagonal terms underflow at
  realistic ``D`` and the loss sits at ``log(1/B)`` with an exactly zero gradient; for
  independent unit-variance features ``D_ij ~ 2``). With ``normalize="max"`` the distances
  are divided by ``max_ij D_ij`` instead (MP1's variant, invariant to a global feature scale).
  Its upper bound ``log 1 = 0`` is reached only when all features coincide; its lower bound
  ``log(1/B)`` only when all distinct pairs are infinitely far apart.
- ``infonce_cosine``: ``log( (1/B^2) sum_ij exp(cos(h_i, h_j) / tau) )``.
- ``hinge``: ``mean_ij max(0, margin - ||h_i - h_j||^2)^2`` (the raw squared distance).
- ``covariance``: the sum of squared off-diagonal entries of the covariance of the
  L2-normalised features, computed through the ``B x B`` Gram matrix (never ``D x D``).

The diagonal ``i = j`` is included, as in the formulas above, with its distance set to
exactly 0 (not left to the cancellation ``|h_i|^2 + |h_j|^2 - 2 h_i.h_j``); the features are
centred over the batch before the distances (which does not change them) to limit that
cancellation off the diagonal. ``h`` is ``[B, ...]``, flattened to ``[B, D]``. Every variant
is invariant to permuting the batch. The total is ``weight * sum_l L_disp(H_l)`` over the
listed layers, whose names are the features the flowjax networks sow (``feature_{i}`` =
output of block ``i``).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from flowjax.types import Array

VARIANTS = ("infonce_l2", "infonce_cosine", "hinge", "covariance")


def _flat(h: Array) -> Array:
    return h.reshape(h.shape[0], -1).astype(jnp.float32)


def _sq_dists(h: Array) -> Array:
    """``[B, B]`` squared distances ``||h_i - h_j||^2`` of the rows of ``h [B, D]``: >= 0, and
    exactly 0 on the diagonal (a ``B x B`` Gram matrix, never ``B x B x D``)."""
    h = h - jnp.mean(h, axis=0, keepdims=True)  # distances are translation invariant
    sq = jnp.sum(h * h, axis=1)
    d = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * h @ h.T, 0.0)
    return jnp.where(jnp.eye(h.shape[0], dtype=bool), 0.0, d)


def _log_mean_exp(a: Array) -> Array:
    return jax.nn.logsumexp(a) - math.log(a.size)


def infonce_l2(h: Array, tau: float = 1.0, normalize: str = "none") -> Array:
    """``log mean_ij exp(-D_ij / tau)`` with ``D_ij = ||h_i - h_j||^2 / D`` (or ``/ max D``)."""
    h = _flat(h)
    d = _sq_dists(h) / h.shape[1]
    if normalize == "max":
        d = d / jnp.maximum(jnp.max(d), 1e-12)
    return _log_mean_exp(-d / tau)


def infonce_cosine(h: Array, tau: float = 1.0) -> Array:
    h = _flat(h)
    h = h / jnp.maximum(jnp.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    return _log_mean_exp(h @ h.T / tau)


def hinge(h: Array, margin: float = 1.0) -> Array:
    return jnp.mean(jnp.square(jnp.maximum(margin - _sq_dists(_flat(h)), 0.0)))


def covariance(h: Array) -> Array:
    h = _flat(h)
    h = h / jnp.maximum(jnp.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    hc = h - jnp.mean(h, axis=0, keepdims=True)
    b = h.shape[0]
    gram = hc @ hc.T  # ||C||_F^2 = ||Hc Hc^T||_F^2 / B^2 with C = Hc^T Hc / B
    frob = jnp.sum(gram * gram) / b**2
    diag = jnp.sum(jnp.square(jnp.sum(hc * hc, axis=0) / b))
    return frob - diag


@dataclasses.dataclass(frozen=True)
class Dispersive:
    """``weight * sum_l L_disp(H_l)`` over ``layers`` (see the module docstring).

    Attributes:
      weight: lambda (MP1: 0.5).
      layers: names of sown features, e.g. ``("feature_1",)``.
      variant: one of :data:`VARIANTS`.
      tau: temperature of the InfoNCE variants.
      normalize: ``"none"`` or ``"max"`` (InfoNCE-L2 only: divide distances by their max).
      margin: the hinge's ``epsilon``.
    """

    weight: float = 0.5
    layers: tuple[str, ...] = ("feature_1",)
    variant: str = "infonce_l2"
    tau: float = 1.0
    normalize: str = "none"
    margin: float = 1.0

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(
                f"unknown dispersive variant {self.variant!r}; choose one of {VARIANTS}"
            )
        if self.normalize not in ("none", "max"):
            raise ValueError(
                f"dispersive normalize must be 'none' or 'max'; got {self.normalize!r}"
            )
        if not self.layers:
            raise ValueError("the dispersive loss needs at least one layer name (e.g. 'feature_1')")
        if self.tau <= 0:
            raise ValueError(f"dispersive tau must be > 0; got {self.tau}")
        object.__setattr__(self, "layers", tuple(self.layers))

    def layer_loss(self, h: Array) -> Array:
        if self.variant == "infonce_l2":
            return infonce_l2(h, self.tau, self.normalize)
        if self.variant == "infonce_cosine":
            return infonce_cosine(h, self.tau)
        if self.variant == "hinge":
            return hinge(h, self.margin)
        return covariance(h)

    def __call__(self, features: dict[str, Array]) -> Array:
        """The weighted sum over the layers of ``features`` (``{name: [B, ...]}``)."""
        return self.weight * sum(self.layer_loss(features[name]) for name in self.layers)
