"""The attention JVP rule on the accelerator: numerics vs plain attention, and its speed.

    python benchmarks/attention_check.py [--impl cudnn]

For DiT-S/2- and XL/2-shaped attention (256 tokens, heads x head width 6 x 64 and 16 x 72,
batch 256 / 128, bfloat16) it compares ``jax.jvp`` of :func:`flowjax.models.attention.attention`
with the rule (primal through ``--impl``) against ``jax.jvp`` of plain attention in float32
(relative errors of the value and the tangent), and times (median of 20) the forward, the
JVP, and ``grad`` of a MeanFlow-like loss, rule vs plain XLA. Writes
``results/benchmarks/attention_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from flowjax.models.attention import attention, reference_attention  # noqa: E402


def _median_ms(fn, *a, n=20):
    jax.block_until_ready(fn(*a))
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*a))
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


def _rel(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", default="cudnn")
    ap.add_argument(
        "--out", default=os.path.join(REPO, "results", "benchmarks", "attention_check.json")
    )
    args = ap.parse_args()
    rows = []
    for name, shape in (("S/2", (256, 256, 6, 64)), ("XL/2", (128, 256, 16, 72))):
        keys = jax.random.split(jax.random.PRNGKey(0), 6)
        qkv = [jax.random.normal(k, shape, jnp.bfloat16) for k in keys[:3]]
        tan = [jax.random.normal(k, shape, jnp.bfloat16) for k in keys[3:]]
        impl = args.impl
        rule = lambda q, k, v, i=impl: attention(q, k, v, implementation=i, jvp_rule=True)  # noqa: E731
        plain = lambda q, k, v: attention(q, k, v, implementation="xla")  # noqa: E731
        ref32 = lambda q, k, v: reference_attention(  # noqa: E731
            q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32)
        )
        row = dict(shape=list(shape), name=name, impl=impl)
        try:
            jvp = jax.jit(lambda f, p, t: jax.jvp(f, p, t), static_argnums=0)
            o, do = jvp(rule, tuple(qkv), tuple(tan))
            o_ref, do_ref = jvp(ref32, tuple(qkv), tuple(tan))
            row.update(value_rel_err=_rel(o, o_ref), tangent_rel_err=_rel(do, do_ref))
            w = jax.random.normal(keys[0], shape, jnp.float32)

            def loss(f, q, k, v, tan=tan, w=w):
                o, do = jax.jvp(f, (q, k, v), tuple(tan))
                tgt = jax.lax.stop_gradient(o.astype(jnp.float32) + 0.1 * do.astype(jnp.float32))
                return jnp.sum(w * o.astype(jnp.float32)) + jnp.sum(
                    (o.astype(jnp.float32) - tgt) ** 2
                )

            grad = jax.jit(jax.grad(loss, argnums=(1, 2, 3)), static_argnums=0)
            g_rule, g_ref = grad(rule, *qkv), grad(ref32, *qkv)
            row["grad_rel_err"] = max(_rel(a, b) for a, b in zip(g_rule, g_ref))
            fwd = jax.jit(lambda f, *a: f(*a), static_argnums=0)
            for tag, f in (("rule", rule), ("plain_xla", plain)):
                row[f"forward_ms_{tag}"] = _median_ms(fwd, f, *qkv)
                row[f"jvp_ms_{tag}"] = _median_ms(jvp, f, tuple(qkv), tuple(tan))
                row[f"grad_jvp_loss_ms_{tag}"] = _median_ms(grad, f, *qkv)
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(device=str(jax.devices()[0].device_kind), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
