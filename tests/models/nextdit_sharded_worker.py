"""Run by tests/models/test_nextdit.py in a process with 8 simulated CPU devices: the Next-DiT
forward pass on a mixed-size token batch, sharded over a (data 2, fsdp 2, tensor 2) mesh by
the default logical-axis rules, against the same pass on one device. Prints a JSON line."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flowjax.data.tokens import pack_images
from flowjax.models.nextdit import NextDiT
from flowjax.parallel.mesh import make_mesh
from flowjax.parallel.rules import DEFAULT_RULES, batch_sharding, check_divisible, state_shardings


def main():
    net = NextDiT(
        patch_size=2,
        hidden_size=32,
        depth=2,
        num_heads=4,
        num_kv_heads=2,
        multiple_of=16,
        context_dim=16,
        train_grid=4,
        proportional_attention=True,
    )
    rng = np.random.default_rng(0)
    # 8 images: 2 per data x fsdp shard (with one per shard, XLA's CPU partitioner returned
    # wrong numbers for the DiT as well, jax 0.10.2; not a property of this network)
    sizes = [(8, 8), (4, 12), (8, 4), (6, 6), (2, 2), (8, 6), (4, 4), (6, 8)]
    batch = pack_images([rng.normal(size=(h, w, 3)).astype(np.float32) for h, w in sizes], 2)
    lengths = np.array([5, 2, 3, 1, 4, 5, 1, 2])
    args = dict(
        x=jnp.asarray(batch.tokens),
        t=jnp.asarray(rng.uniform(size=8), jnp.float32),
        mask=jnp.asarray(batch.mask),
        positions=jnp.asarray(batch.positions),
        context=jnp.asarray(rng.normal(size=(8, 5, 16)), jnp.float32),
        context_mask=jnp.asarray(np.arange(5)[None] < lengths[:, None]),
    )

    def forward(params, a):
        kw = {k: v for k, v in a.items() if k not in ("x", "t")}
        return net.apply({"params": params}, a["x"], a["t"], **kw)

    boxed = net.init(
        jax.random.key(0),
        args["x"],
        args["t"],
        **{k: v for k, v in args.items() if k not in ("x", "t")},
    )["params"]
    params = nn.unbox(boxed)  # every weight moved so that gates and zero layers matter
    params = jax.tree.map(lambda a: a + 0.3 * rng.normal(size=a.shape).astype(np.float32), params)
    single = np.asarray(jax.jit(forward)(params, args))

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    shardings = state_shardings(jax.eval_shape(lambda: boxed), mesh, DEFAULT_RULES)
    check_divisible(params, shardings)
    sharded_params = jax.device_put(params, shardings)
    data = jax.device_put(args, batch_sharding(mesh))
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        out = np.asarray(jax.jit(forward)(sharded_params, data))
    q = sharded_params["block_0"]["q"]["kernel"]
    print(
        json.dumps(
            dict(
                devices=jax.device_count(),
                max_diff=float(np.abs(out - single).max()),
                scale=float(np.abs(single).max()),
                q_spec=[str(a) for a in q.sharding.spec],
                q_shard_shape=list(q.addressable_shards[0].data.shape),
            )
        )
    )


if __name__ == "__main__":
    main()
