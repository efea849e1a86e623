"""Inference-time scaling: expected reward against NFE budget for best-of-N, SMC, search over
paths and RBF, each with ODE, linear-SDE and VP-SDE proposals (Kim et al.; ALGORITHMS.md 9).

Claim tested: for particle methods VP-SDE > linear-SDE > ODE proposals, and RBF with VP-SDE is
best at equal budget. Tasks (trained runs given on the command line):

- ``toy``: a rectified-flow model of ``8gaussians``; reward ``toy_mode,mode=0``
  (``-||x - c_0||^2``, closeness to one mode).
- ``digits``: the class-conditional digits U-Net sampled unconditionally (null label); reward
  ``digits_class,label=3`` (``log p(3 | x)`` under the digits classifier).

Each (task, method, proposal, budget) solves ``--problems`` independent problems and reports
the mean selected reward (with its standard error) and the NFE spent per problem. Writes
``results/inference_scaling.json`` and ``results/inference_scaling.png``::

    python -m flowjax.main --config=configs/toy2d_rf.py:8gaussians --workdir=RUNS/toy
    python experiments/inference_scaling.py --toy=RUNS/toy [--digits=RUNS/digits]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import plotting
from flowjax.search import make_reward, search
from flowjax.search.run import load_search_setup

METHODS = ("bon", "smc", "sop", "rbf")
PROPOSALS = ("ode", "sde", "vp-sde")
TASKS = {
    "toy": {"reward": "toy_mode,mode=0", "temperature": 0.1},
    "digits": {"reward": "digits_class,label=3", "temperature": 0.5},
}


def run_task(name, workdir, budgets, problems, steps, seed):
    spec = TASKS[name]
    reward_fn = make_reward(spec["reward"])
    rows = []
    for kind in PROPOSALS:
        prop, exp, _, step = load_search_setup(workdir, kind, steps)
        cond = None
        if exp.num_classes is not None:
            cond = jnp.full((problems,), exp.num_classes, jnp.int32)  # unconditional
        for method in METHODS:
            opts = {"smc": {"temperature": spec["temperature"]}, "sop": {"width": 2}}.get(
                method, {}
            )
            for budget in budgets:
                t0 = time.perf_counter()
                try:
                    res = search(
                        method,
                        prop,
                        reward_fn,
                        jax.random.key(seed),
                        budget=budget,
                        num_problems=problems,
                        cond=cond,
                        **opts,
                    )
                except ValueError as err:  # budget below this method's minimum
                    print(f"{name} {method} {kind} {budget}: skipped ({err})")
                    continue
                r = np.asarray(res.rewards)
                row = dict(
                    task=name,
                    method=method,
                    proposal=kind,
                    budget=budget,
                    nfe_spent=int(res.nfe),
                    reward_mean=float(r.mean()),
                    reward_se=float(r.std() / np.sqrt(len(r))),
                    seconds=time.perf_counter() - t0,
                    checkpoint_step=step,
                )
                rows.append(row)
                print(
                    f"{name:6s} {method:3s} {kind:6s} budget {budget:4d} nfe {row['nfe_spent']:4d}"
                    f" reward {row['reward_mean']:.4f} +- {row['reward_se']:.4f}",
                    flush=True,
                )
    return rows


def plot(rows, path):
    plt = plotting._plt()
    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(
        len(tasks), len(METHODS), figsize=(3.3 * len(METHODS), 3.0 * len(tasks)), squeeze=False
    )
    for i, task in enumerate(tasks):
        for j, method in enumerate(METHODS):
            ax = axes[i][j]
            for kind in PROPOSALS:
                pts = [
                    r
                    for r in rows
                    if r["task"] == task and r["method"] == method and r["proposal"] == kind
                ]
                if pts:
                    ax.errorbar(
                        [p["nfe_spent"] for p in pts],
                        [p["reward_mean"] for p in pts],
                        [p["reward_se"] for p in pts],
                        marker="o",
                        label=kind,
                        capsize=2,
                    )
            ax.set_title(f"{task}: {method}", fontsize=9)
            ax.set_xlabel("NFE spent")
            if j == 0:
                ax.set_ylabel("mean reward")
            ax.legend(fontsize=7)
    fig.tight_layout()
    plotting._save(fig, path)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--toy", help="trained 8gaussians run")
    ap.add_argument("--digits", help="trained digits run")
    ap.add_argument("--budgets", default="20,60,120")
    ap.add_argument("--digits_budgets", default="20,60")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/inference_scaling")
    args = ap.parse_args()
    rows = []
    t0 = time.perf_counter()
    if args.toy:
        budgets = [int(b) for b in args.budgets.split(",")]
        rows += run_task("toy", args.toy, budgets, args.problems, args.steps, args.seed)
    if args.digits:
        budgets = [int(b) for b in args.digits_budgets.split(",")]
        rows += run_task("digits", args.digits, budgets, args.problems, args.steps, args.seed)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    result = {
        "command": "python experiments/inference_scaling.py "
        + " ".join(
            f"--{k}={v}"
            for k, v in vars(args).items()
            if v is not None and k not in ("toy", "digits", "out")
        ),
        "settings": {
            "steps": args.steps,
            "problems": args.problems,
            "seed": args.seed,
            "eta": 3.0,
            "tasks": {k: TASKS[k] for k in {r["task"] for r in rows}},
        },
        "seconds": time.perf_counter() - t0,
        "rows": rows,
        "plot": os.path.basename(args.out) + ".png",
    }
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    plot(rows, args.out + ".png")
    print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
