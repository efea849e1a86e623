"""An example objective added from outside the library: regress the straight-line velocity.

``x_t = t x1 + (1 - t) x0`` with ``t ~ U(0, 1)``, loss ``mean |v(x_t, t) - (x1 - x0)|^2``: the
rectified-flow loss in its plainest form (no path, time law or loss options).
"""

import dataclasses

import jax
import jax.numpy as jnp

from flowjax.objectives import Objective, register_objective


@dataclasses.dataclass(frozen=True)
class EndpointRegression(Objective):
    def loss_fn(self, params, apply_fn, batch, key):
        x1 = batch["x1"]
        key_x0, key_t = jax.random.split(key)
        x0 = jax.random.normal(key_x0, x1.shape, x1.dtype)
        t = jax.random.uniform(key_t, (x1.shape[0],))
        tb = t.reshape((-1,) + (1,) * (x1.ndim - 1))
        v = apply_fn(params, tb * x1 + (1 - tb) * x0, t, None)
        loss = jnp.mean(jnp.sum((v - (x1 - x0)).reshape(x1.shape[0], -1) ** 2, axis=-1))
        return loss, {"loss": loss}


register_objective("endpoint_regression", lambda cfg, num_classes: EndpointRegression())
