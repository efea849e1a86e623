"""Run every search method with particles sharded over 8 simulated devices and unsharded;
write the largest differences to a JSON file (run by test_sharded.py in a subprocess)."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flowjax import search
from tests import gaussian_fixture as gf


def velocity(x, t, cond):
    mu = jnp.stack([cond.astype(x.dtype), -jnp.ones_like(t)], axis=-1)  # per-problem mean
    return gf.velocity(x, t[:, None], mu, 0.5)


def main(out):
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    prop = search.make_proposal(velocity, "vp-sde", num_steps=6, element_shape=(2,))
    cond = jnp.arange(8, dtype=jnp.int32) % 3
    cond_sharded = jax.device_put(cond, sharding)
    report = {"device_count": jax.device_count()}
    for method in ("bon", "smc", "sop", "rbf"):
        kw = dict(budget=48, num_problems=8)
        ref = search.search(method, prop, lambda x: x[:, 0], jax.random.key(0), cond=cond, **kw)
        got = search.search(
            method,
            prop,
            lambda x: x[:, 0],
            jax.random.key(0),
            cond=cond_sharded,
            sharding=sharding,
            **kw,
        )
        report[method] = {
            "samples_diff": float(jnp.max(jnp.abs(got.samples - ref.samples))),
            "rewards_diff": float(jnp.max(jnp.abs(got.rewards - ref.rewards))),
            "nfe": [int(ref.nfe), int(got.nfe)],
        }
    with open(out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
