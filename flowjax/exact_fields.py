"""Exact marginal velocity fields of isotropic Gaussian mixtures (test and benchmark problems).

Data ``x1 ~ sum_k w_k N(mu_k, q_k^2 I)`` in ``d`` dimensions, noise ``x0 ~ N(0, I)``, linear
path ``x_t = t x1 + (1 - t) x0`` (noise at t = 0, data at t = 1). Given the component ``k``,
``x_t ~ N(t mu_k, sd_k(t)^2 I)`` with ``sd_k(t) = sqrt(t^2 q_k^2 + (1 - t)^2)`` and the
conditional expectation of ``x1 - x0`` is the single-Gaussian field of docs/maths/flow_matching.md:

    v_k(x, t) = mu_k + (sd_k'(t) / sd_k(t)) (x - t mu_k),     sd_k' = (t q_k^2 - (1 - t)) / sd_k

The marginal field averages them with the posterior component probabilities:

    v(x, t) = sum_k p(k | x_t = x) v_k(x, t),
    log p(k | x) = log w_k - d log sd_k - ||x - t mu_k||^2 / (2 sd_k^2) + const

(computed with a log-sum-exp). With a label ``c`` the field is the conditional one,
``v(x, t, c) = v_c(x, t)``; the label ``num_components`` (the "null" label) gives the mixture,
so :func:`flowjax.velocity.cfg_velocity` builds the exactly guided field.
Trajectories are curved (the posterior changes along them), which makes this a genuine test of
a solver's order; there is no closed-form flow map, so the reference is an adaptive solve.
Use float64 (``jax.enable_x64``) for convergence studies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.types import Array


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixtureField:
    """Isotropic Gaussian mixture data and its exact flow-matching velocity.

    Attributes:
      means: ``[K, d]`` component means.
      stds: ``[K]`` component standard deviations (> 0).
      weights: ``[K]`` mixture weights (normalised here).
    """

    means: np.ndarray
    stds: np.ndarray
    weights: np.ndarray

    def __post_init__(self):
        means = np.asarray(self.means, np.float64)
        stds = np.asarray(self.stds, np.float64).reshape(-1)
        weights = np.asarray(self.weights, np.float64).reshape(-1)
        if means.ndim != 2 or stds.shape[0] != means.shape[0] or weights.shape != stds.shape:
            raise ValueError(
                f"need means [K, d], stds [K], weights [K]; got {means.shape}, {stds.shape}, "
                f"{weights.shape}"
            )
        if np.any(stds <= 0) or np.any(weights <= 0):
            raise ValueError("component stds and weights must be > 0")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds)
        object.__setattr__(self, "weights", weights / weights.sum())

    @classmethod
    def random(
        cls, key: Array, num_components: int, dim: int, *, radius: float = 2.0, std: float = 0.3
    ) -> GaussianMixtureField:
        """``K`` equally weighted components with means of norm ``radius`` in random directions."""
        means = np.asarray(jax.random.normal(key, (num_components, dim)), np.float64)
        means = radius * means / np.linalg.norm(means, axis=1, keepdims=True)
        return cls(means, np.full(num_components, std), np.ones(num_components))

    @classmethod
    def ring(
        cls, num_components: int = 8, *, radius: float = 2.0, std: float = 0.3, weights: Any = None
    ) -> GaussianMixtureField:
        """``K`` components on a circle in 2-D (the "8 gaussians" toy)."""
        angle = 2 * np.pi * np.arange(num_components) / num_components
        means = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        w = np.ones(num_components) if weights is None else weights
        return cls(means, np.full(num_components, std), w)

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _component_terms(self, x: Array, t: Array):
        """Per-component ``v_k [B, K, d]`` and posterior logits ``[B, K]``."""
        dtype = x.dtype
        mu = jnp.asarray(self.means, dtype)
        q2 = jnp.asarray(self.stds, dtype) ** 2
        tb = t[:, None]  # [B, 1]
        var = tb**2 * q2 + (1.0 - tb) ** 2  # [B, K]
        dev = x[:, None, :] - tb[..., None] * mu  # [B, K, d]
        slope = (tb * q2 - (1.0 - tb)) / var  # sd'/sd
        v_k = mu + slope[..., None] * dev
        logits = (
            jnp.log(jnp.asarray(self.weights, dtype))
            - 0.5 * self.dim * jnp.log(var)
            - 0.5 * jnp.sum(dev**2, axis=-1) / var
        )
        return v_k, logits

    def posterior(self, x: Array, t: Array, cond: Array | None = None) -> Array:
        """``p(k | x_t = x)`` ``[B, K]``; a label ``c < K`` puts all mass on component ``c``."""
        _, logits = self._component_terms(x, t)
        return self._posterior(logits, cond)

    def _posterior(self, logits: Array, cond: Array | None) -> Array:
        if cond is not None:
            k = jnp.arange(self.num_components)
            cond = jnp.asarray(cond)
            fixed = cond[:, None] < self.num_components
            logits = jnp.where(fixed & (k[None] != cond[:, None]), -jnp.inf, logits)
        return jax.nn.softmax(logits, axis=-1)

    def velocity(self, x: Array, t: Array, cond: Array | None = None) -> Array:
        """Exact ``v(x, t, cond)`` for ``x [B, d]`` and ``t [B]`` (a flowjax velocity function).

        ``cond`` is ``None`` (mixture) or integer labels ``[B]`` in ``[0, K]``, ``K`` = null.
        """
        x2 = x.reshape(x.shape[0], -1)
        v_k, logits = self._component_terms(x2, t)
        p = self._posterior(logits, cond)
        return jnp.einsum("bk,bkd->bd", p, v_k).reshape(x.shape)

    def x1_hat(self, x: Array, t: Array, cond: Array | None = None) -> Array:
        """Posterior mean of the data ``E[x1 | x_t = x] = x + (1 - t) v``."""
        return x + (1.0 - t).reshape((-1,) + (1,) * (x.ndim - 1)) * self.velocity(x, t, cond)

    def sample(self, key: Array, n: int, dtype: Any = jnp.float32) -> tuple[Array, Array]:
        """``n`` data points and their component labels."""
        k_c, k_x = jax.random.split(key)
        labels = jax.random.choice(k_c, self.num_components, (n,), p=jnp.asarray(self.weights))
        mu = jnp.asarray(self.means, dtype)[labels]
        std = jnp.asarray(self.stds, dtype)[labels][:, None]
        return mu + std * jax.random.normal(k_x, (n, self.dim), dtype), labels
