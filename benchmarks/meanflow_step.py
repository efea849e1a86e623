"""MeanFlow train step vs flow-matching train step on the same network: time and peak memory.

    python benchmarks/meanflow_step.py [--steps 50]

For three networks (the toy MLP at batch 512, the digits U-Net at batch 64, DiT-S/2 on the
8x8 digits, 16 tokens, at batch 32), builds the real jitted, donated train step of
:class:`flowjax.training.Experiment` for the flow-matching objective and for MeanFlow (same
network with the end-time embedding; unguided, 75% of rows with e = s, and a guided variant
with omega = 1, kappa = 0.5 that adds two no-gradient forward passes for the target) and
reports:

- seconds per step (fastest of several alternating rounds of ``--steps`` steps each) and the
  ratio MeanFlow / flow matching (target <= 1.4: one JVP costs about one extra forward),
  for flowjax's MeanFlow (the JVP on the rows with e > s only) and for the published
  whole-batch JVP (``jvp_all_rows=True``, the same loss and gradients);
- XLA's compiled peak temporary memory (``memory_analysis().temp_size_in_bytes``) of each
  step and its ratio.

The machine is shared, so only the ratios (measured in one process, interleaved) mean much.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax

from flowjax.config_files import load_config
from flowjax.training import Experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _meanflow(config, guided: bool, all_rows: bool = False):
    mf = load_config("toy2d_meanflow").objective
    config.objective = mf
    config.objective.meanflow.jvp_all_rows = all_rows
    config.model.time_scale = 1.0
    if guided:
        config.objective.label_dropout = 0.1
        config.objective.meanflow.kappa = 0.5
    return config


def cases():
    toy = load_config("toy2d_rf")
    digits = load_config("digits_rf")
    dit = load_config("digits_dit")
    dit.model.update(patch_size=2, hidden_size=384, depth=12, num_heads=6)  # DiT-S/2
    return {
        "toy MLP (0.53M), batch 512": (toy, 512, False),
        "digits U-Net (0.66M), batch 64": (digits, 64, True),
        "DiT-S/2 on 8x8x1 digits, batch 32": (dit, 32, True),
    }


def build(config, batch: int):
    config = config.copy_and_resolve_references()
    config.train.batch_size = batch
    exp = Experiment(config)
    step = exp.jit_train_step()
    batch_ = next(iter(exp.batches(0)))
    state = exp.init_state()
    compiled = step.lower(state, batch_).compile()
    memory = compiled.memory_analysis()
    temp = getattr(memory, "temp_size_in_bytes", None) if memory is not None else None
    state, _ = step(state, batch_)
    jax.block_until_ready(state)
    return exp, step, state, batch_, temp


def time_steps(step, state, batch, n: int):
    start = time.perf_counter()
    for _ in range(n):
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    return (time.perf_counter() - start) / n, state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--out", default=os.path.join(REPO, "results", "benchmarks", "meanflow_step.json")
    )
    args = parser.parse_args()
    rows = []
    for name, (config, batch, conditional) in cases().items():
        variants = {"flow matching": config.copy_and_resolve_references()}
        variants["MeanFlow"] = _meanflow(config.copy_and_resolve_references(), False)
        variants["MeanFlow, JVP on all rows"] = _meanflow(
            config.copy_and_resolve_references(), False, all_rows=True
        )
        if conditional:
            variants["MeanFlow + guided target"] = _meanflow(
                config.copy_and_resolve_references(), True
            )
        built = {k: build(c, batch) for k, c in variants.items()}
        best = {k: float("inf") for k in built}
        for _ in range(args.rounds):  # interleave: the machine is shared
            for k, (exp, step, state, b, _) in built.items():
                seconds, state = time_steps(step, state, b, args.steps)
                built[k] = (exp, step, state, b, built[k][4])
                best[k] = min(best[k], seconds)
        base = best["flow matching"]
        base_mem = built["flow matching"][4]
        for k in built:
            mem = built[k][4]
            rows.append(
                {
                    "network": name,
                    "objective": k,
                    "ms_per_step": 1e3 * best[k],
                    "time_ratio": best[k] / base,
                    "temp_bytes": mem,
                    "memory_ratio": (mem / base_mem) if (mem and base_mem) else None,
                }
            )
    header = ("network", "objective", "ms/step", "x FM", "temp MB", "x FM")
    print("\n{:36s} {:26s} {:>9s} {:>6s} {:>9s} {:>6s}".format(*header))
    for r in rows:
        mem = f"{r['temp_bytes'] / 2**20:9.1f}" if r["temp_bytes"] else f"{'n/a':>9s}"
        mr = f"{r['memory_ratio']:6.2f}" if r["memory_ratio"] else f"{'':>6s}"
        print(
            f"{r['network']:36s} {r['objective']:26s} {r['ms_per_step']:9.2f} "
            f"{r['time_ratio']:6.2f} {mem} {mr}"
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "steps": args.steps, "rounds": args.rounds}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
