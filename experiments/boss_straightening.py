"""BOSS straightening: does fine-tuning on the Bellman steps cut the K-step error? (§8.3)

    python -m flowjax.main --config=configs/toy2d_rf.py --workdir=/tmp/toy
    python experiments/boss_straightening.py --workdir=/tmp/toy

For K in {2, 4}: compute the BOSS schedule of the trained model (Euler cost, fine grid
N = 100, 256 calibration noises, RK4 calibration trajectories), build ``K x 8192`` tuples
``(x_a, x_b, a, b)`` from the model's own RK4 trajectories on the fine grid, and fine-tune the
EMA weights with :func:`flowjax.workflows.boss.straighten` (the ordinary training loop,
2000 steps of batch 512, AdamW lr 5e-4 cosine, grad clip 1). Then, from 4096 fresh noises:

- ``error``: RMS distance of K-step Euler samples to the ORIGINAL model's Tsit5 solution from
  the same noise (what straightening aims at: reproduce the many-step model in K steps);
- ``sw``: sliced-Wasserstein distance of the samples to held-out data;

for the original and the straightened model, on the BOSS grid and on the uniform grid.
Writes ``results/experiments/boss_straightening.json`` and
``results/experiments/boss_straightening.png``.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import evaluation, plotting, solvers
from flowjax.solvers import boss
from flowjax.time import grids
from flowjax.training import load_run
from flowjax.workflows.boss import straighten

RESULTS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "experiments"
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out_dir", default="/tmp/flowjax_straighten")
    parser.add_argument("--steps", default="2,4")
    parser.add_argument("--train_steps", type=int, default=2000)
    parser.add_argument("--num_trajectories", type=int, default=8192)
    args = parser.parse_args()

    config, exp, params, ckpt_step = load_run(args.workdir)

    def velocity_of(p):
        return lambda x, t, c: exp.apply_fn(p, x, t, c)

    k_eval, k_cal, k_sw = jax.random.split(jax.random.PRNGKey(123), 3)
    x_eval = jax.random.normal(k_eval, (4096, 2))
    x_cal = jax.random.normal(k_cal, (256, 2))
    reference = solvers.AdaptiveSolve("tsit5", rtol=1e-6, atol=1e-6)
    x_ref, _ = jax.jit(lambda x: reference(velocity_of(params), x))(x_eval)
    data, _ = exp.data.eval_array(4096)
    data = jnp.asarray(data)

    def score(p, grid):
        x = solvers.sample(solvers.Euler(), velocity_of(p), x_eval, grid)
        err = float(jnp.sqrt(jnp.mean((x - x_ref) ** 2)))
        sw = float(evaluation.sliced_wasserstein(x, data, k_sw))
        return {"error": err, "sw": sw}, np.asarray(x)

    results, panels = {}, {"Tsit5 (original model)": np.asarray(x_ref)}
    for k in (int(s) for s in args.steps.split(",")):
        schedule = boss.compute_schedule(
            velocity_of(params),
            x_cal,
            k,
            fine_steps=100,
            reference_solver=solvers.RK4(),
            step=ckpt_step,
        )
        uniform = grids.uniform_grid(k)
        tuned_config = config.copy_and_resolve_references()
        tuned_config.train.num_steps = args.train_steps
        tuned_config.train.checkpoint_every = args.train_steps
        tuned_config.train.eval_every = 0
        tuned_config.train.log_every = 100
        tuned_config.optim.lr = 5e-4
        tuned_config.optim.warmup_steps = 100
        tuned_config.eval.samplers = (f"euler:{k}",)
        tuned_config.eval.num_samples = 4096
        workdir = os.path.join(args.out_dir, f"k{k}")
        summary = straighten(
            tuned_config, workdir, params, schedule, num_trajectories=args.num_trajectories
        )
        _, _, tuned, _ = load_run(workdir)
        row = {
            "schedule": schedule.to_dict(),
            "train_seconds": summary.get("train_seconds_this_session"),
        }
        for label, p in (("original", params), ("straightened", tuned)):
            for gname, grid in (("boss", schedule.grid), ("uniform", uniform)):
                row[f"{label}/{gname}"], x = score(p, grid)
                if gname == "boss":
                    panels[f"K={k} {label}, BOSS grid"] = x
        row["error_ratio_boss_grid"] = (
            row["original/boss"]["error"] / row["straightened/boss"]["error"]
        )
        results[k] = row
        print(
            f"K={k}: grid {np.round(schedule.grid, 3).tolist()}  error original "
            f"{row['original/boss']['error']:.4f} -> straightened "
            f"{row['straightened/boss']['error']:.4f} (x{row['error_ratio_boss_grid']:.2f}); "
            f"uniform grid {row['original/uniform']['error']:.4f} -> "
            f"{row['straightened/uniform']['error']:.4f}; SW "
            f"{row['original/boss']['sw']:.4f} -> {row['straightened/boss']['sw']:.4f}"
        )
    os.makedirs(RESULTS, exist_ok=True)
    out = os.path.join(RESULTS, "boss_straightening.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"checkpoint_step": ckpt_step, "results": results}, f, indent=1)
    plotting.scatter_panels(
        np.asarray(data),
        panels,
        os.path.join(RESULTS, "boss_straightening.png"),
        title="BOSS straightening: K-step Euler on the Bellman grid",
    )
    print(f"wrote {out} and results/experiments/boss_straightening.png")


if __name__ == "__main__":
    main()
