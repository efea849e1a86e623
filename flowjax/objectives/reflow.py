"""Reflow (k-rectified flow), the 2-rectified-flow++ recipe, distillation from pairs (§2).

Training data are stored couplings ``(z0, z1[, label])``: ``z0 ~ N(0, I)`` and ``z1`` the
teacher's ODE solution from ``z0`` (noise at t = 0, data at t = 1; written by
``flowjax reflow``). The objective is flow matching on the *pairs*::

    x_t = t z1 + (1 - t) z0,        target = z1 - z0,        L = E D(v_theta(x_t, t, c), z1 - z0)

- **k-rectified flow**: ``k - 1`` rounds; each trains on pairs from the previous model and
  starts from its weights (``config.init.workdir``). Liu et al.: ``t ~ U(eps, 1)``, L2.
- **2-rectified-flow++** (Lee et al.): one round, the U-shaped time law (a = 4), the
  pseudo-Huber premetric and, when the user supplies LPIPS weights, the LPIPS-Huber loss
  (converted to our t)::

      x1_hat = x_t + (1 - t) v_theta
      L      = t * h_c(v_theta - (z1 - z0)) / d  +  lambda_t * LPIPS(x1_hat, z1)
      lambda_t = 1 / (1 - t)  ("LPIPS-Huber-1/t", CIFAR-10)   or   1  (ImageNet-64)

  (``h_c`` the pseudo-Huber loss over all ``d`` elements with ``c = 0.00054 d``: pass
  ``PseudoHuber(normalize=True)`` for that constant and the division by ``d``, as the
  ``rfpp`` configs do; LPIPS resizes to 224 itself.)
- **Distillation from pairs**: ``time_sampler = Discrete(m)``: ``t`` on the ``m`` start
  times of a uniform ``m``-step grid. ``m = 1`` trains the one-step map
  ``T(z) = z + v_theta(z, 0)`` with ``D(z0 + v(z0, 0), z1) = D(v(z0, 0), z1 - z0)``; sample
  with ``euler:m``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from flowjax.objectives import guidance, losses
from flowjax.objectives.flow_matching import binned_means
from flowjax.time import laws
from flowjax.types import ApplyFn, Array, Metrics, Objective


def _bcast(a: Array, x: Array) -> Array:
    return a.reshape((a.shape[0],) + (1,) * (x.ndim - 1))


@dataclasses.dataclass(frozen=True)
class Reflow(Objective):
    """Flow matching on pairs (module docstring); fields are its hyperparameters.

    Attributes:
      time_sampler: the law of t (``Uniform(1e-3)`` for Liu et al., ``UShaped(4)`` for
        2-RF++, ``Discrete(m)`` for m-step distillation).
      loss: the premetric ``D`` (``L2()`` or ``PseudoHuber(...)``).
      num_classes, label_dropout: class conditioning and CFG label dropout.
      lpips: ``None`` or a perceptual distance ``(x, y) -> [B]`` (e.g.
        :class:`flowjax.evaluation.LPIPS` loaded from a weight file); then the loss is
        LPIPS-Huber with ``lpips_time_weight`` ``"inverse"`` (``1/(1 - t)``) or ``"one"``.
    """

    batch_keys = ("x0", "x1")

    time_sampler: Any = laws.Uniform()
    loss: Any = losses.L2()
    num_classes: int | None = None
    label_dropout: float = 0.0
    lpips: Callable[[Array, Array], Array] | None = None
    lpips_time_weight: str = "inverse"

    def __post_init__(self):
        if self.label_dropout and self.num_classes is None:
            raise ValueError("label_dropout > 0 needs num_classes (a class-conditional model)")
        if self.lpips_time_weight not in ("inverse", "one"):
            raise ValueError(
                f"lpips_time_weight must be 'inverse' (1/(1-t)) or 'one'; got "
                f"{self.lpips_time_weight!r}"
            )

    def loss_fn(
        self, params: Any, apply_fn: ApplyFn, batch: dict[str, Array], key: Array
    ) -> tuple[Array, Metrics]:
        if "x0" not in batch:
            raise ValueError(
                "reflow trains on (noise, sample) pairs: the batch needs 'x0' and 'x1'; point "
                "config.data.pairs_dir at a pair data set written by `flowjax reflow`"
            )
        z0, z1 = batch["x0"], batch["x1"]
        if z0.shape != z1.shape:
            raise ValueError(f"pair arrays differ in shape: x0 {z0.shape}, x1 {z1.shape}")
        key_t, key_drop, key_model = jax.random.split(key, 3)
        t = self.time_sampler.sample(key_t, (z1.shape[0],)).astype(z1.dtype)
        tb = _bcast(t, z1)
        x_t = tb * z1 + (1.0 - tb) * z0
        target = z1 - z0
        cond = None
        if self.num_classes is not None:
            if "label" not in batch:
                raise ValueError("a class-conditional objective needs batch['label']")
            cond = guidance.drop_labels(
                key_drop, batch["label"], self.label_dropout, self.num_classes
            )
        v = apply_fn(params, x_t, t, cond, train=True, rng=key_model)
        per_sample = self.loss(v, target)
        metrics = {}
        if self.lpips is not None:
            x1_hat = x_t + (1.0 - tb) * v
            perceptual = self.lpips(x1_hat, z1)
            weight = 1.0 / (1.0 - t) if self.lpips_time_weight == "inverse" else jnp.ones_like(t)
            metrics = {"huber": jnp.mean(per_sample), "lpips": jnp.mean(perceptual)}
            per_sample = t * per_sample + weight * perceptual
        loss = jnp.mean(per_sample)
        return loss, {"loss": loss, **metrics, **binned_means(per_sample, t)}
