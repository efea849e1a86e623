"""Inference-time scaling: expected reward against NFE budget for best-of-N, SMC, search over
paths and RBF (with each of its two threshold rules), each with ODE, linear-SDE and VP-SDE
proposals (Kim et al.; docs/maths/sde_search.md).

Claim tested: for particle methods VP-SDE > linear-SDE > ODE proposals, and RBF with VP-SDE is
best at equal budget. Tasks (trained runs given on the command line):

- ``toy``: a rectified-flow model of ``8gaussians``; reward ``toy_mode,mode=0``
  (``-||x - c_0||^2``, closeness to one mode).
- ``digits``: the class-conditional digits U-Net sampled unconditionally (null label); reward
  ``digits_class,label=3`` (``log p(3 | x)`` under the digits classifier).

Methods (``--methods``, default all): ``bon``, ``smc``, ``sop``, ``rbf`` (the official threshold
rule: a proposal is accepted at once if it beats the best reward so far) and ``rbf_accepted``
(it must beat the current state's reward, which a forced acceptance can lower). Each (task,
method, proposal, budget) solves ``--problems`` independent problems and reports the mean
selected reward (with its standard error) and the NFE spent per problem. Writes
``results/experiments/inference_scaling.json`` and ``results/experiments/inference_scaling.png``::

    python -m flowjax.main --config=configs/toy2d_rf.py:8gaussians --workdir=RUNS/toy \\
        --config.train.num_steps=3000 --config.eval.num_samples=4000
    python -m flowjax.main --config=configs/digits_rf.py --workdir=RUNS/digits \\
        --config.train.num_steps=1000
    python experiments/inference_scaling.py --toy=RUNS/toy --digits=RUNS/digits

Tasks and methods can be run separately; rows of the (task, method) pairs not run are kept from
an existing ``--out`` (``--fresh`` drops them). Each row records the command that measured it;
each task its model's training command and steps.
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
from flowjax.workflows.search import load_search_setup

# Search variants: name -> (method, options); SMC's temperature comes from the task.
VARIANTS = {
    "bon": ("bon", {}),
    "smc": ("smc", {}),
    "sop": ("sop", {"width": 2}),
    "rbf": ("rbf", {"threshold": "running_best"}),
    "rbf_accepted": ("rbf", {"threshold": "accepted"}),
}
METHODS = tuple(VARIANTS)
PROPOSALS = ("ode", "sde", "vp-sde")
TASKS = {
    "toy": {"reward": "toy_mode,mode=0", "temperature": 0.1},
    "digits": {"reward": "digits_class,label=3", "temperature": 0.5},
}
# How the runs were trained (RUNS/<task> stands for the run directory; steps filled in from the
# run's own config.json).
TRAIN_COMMANDS = {
    "toy": "python -m flowjax.main --config=configs/toy2d_rf.py:8gaussians --workdir=RUNS/toy "
    "--config.train.num_steps={steps} --config.eval.num_samples=4000",
    "digits": "python -m flowjax.main --config=configs/digits_rf.py --workdir=RUNS/digits "
    "--config.train.num_steps={steps}",
}


def run_info(name, workdir, args, budgets, methods):
    """What a task's rows were measured with: the commands (run directories as RUNS/<task>),
    the dataset and the training steps of the model."""
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    steps = int(config["train"]["num_steps"])
    flags = [f"--{name}=RUNS/{name}"]
    flags.append(
        f"--{'budgets' if name == 'toy' else 'digits_budgets'}={','.join(map(str, budgets))}"
    )
    if methods != METHODS:
        flags.append(f"--methods={','.join(methods)}")
    flags += [f"--problems={args.problems}", f"--steps={args.steps}", f"--seed={args.seed}"]
    return {
        **TASKS[name],
        "dataset": config["data"]["name"],
        "train_steps": steps,
        "train_command": TRAIN_COMMANDS[name].format(steps=steps),
        "command": "python experiments/inference_scaling.py " + " ".join(flags),
    }


def run_task(name, workdir, budgets, problems, steps, seed, methods, command):
    spec = TASKS[name]
    reward_fn = make_reward(spec["reward"])
    rows = []
    for kind in PROPOSALS:
        prop, exp, _, step = load_search_setup(workdir, kind, steps)
        cond = None
        if exp.num_classes is not None:
            cond = jnp.full((problems,), exp.num_classes, jnp.int32)  # unconditional
        for method in methods:
            algorithm, opts = VARIANTS[method]
            if algorithm == "smc":
                opts = {**opts, "temperature": spec["temperature"]}
            for budget in budgets:
                t0 = time.perf_counter()
                try:
                    res = search(
                        algorithm,
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
                    command=command,
                )
                rows.append(row)
                print(
                    f"{name:6s} {method:12s} {kind:6s} budget {budget:4d} nfe {row['nfe_spent']:4d}"
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
            if ax.lines:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    plotting._save(fig, path)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--toy", help="trained 8gaussians run")
    ap.add_argument("--digits", help="trained digits run")
    ap.add_argument("--budgets", default="20,60,120", help="NFE budgets of the toy task")
    ap.add_argument("--digits_budgets", default="20,60,120", help="NFE budgets of digits")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}"
    )
    ap.add_argument("--out", default="results/experiments/inference_scaling")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="drop the rows of tasks not run now (default: keep them from an existing --out)",
    )
    args = ap.parse_args()
    if not (args.toy or args.digits):
        ap.error("give at least one trained run: --toy=RUN and/or --digits=RUN")
    methods = tuple(m for m in args.methods.split(",") if m)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        ap.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    methods = tuple(m for m in METHODS if m in methods)
    tasks, rows = {}, []
    for name, workdir, spec in (
        ("toy", args.toy, args.budgets),
        ("digits", args.digits, args.digits_budgets),
    ):
        if not workdir:
            continue
        budgets = [int(b) for b in spec.split(",")]
        info = run_info(name, workdir, args, budgets, methods)
        command = info.pop("command")
        rows += run_task(
            name, workdir, budgets, args.problems, args.steps, args.seed, methods, command
        )
        tasks[name] = info
    old = {"tasks": {}, "rows": []}
    if not args.fresh and os.path.exists(args.out + ".json"):  # read now: runs may overlap
        with open(args.out + ".json", encoding="utf-8") as f:
            old = json.load(f)
    for r in old["rows"]:  # rows from before rows carried their command: their task's
        r.setdefault("command", old["tasks"].get(r["task"], {}).get("command"))
    for info in old.get("tasks", {}).values():
        info.pop("command", None)
        info.pop("seconds", None)
    tasks = {**old.get("tasks", {}), **tasks}
    done = {(r["task"], r["method"]) for r in rows}
    rows = [r for r in old["rows"] if (r["task"], r["method"]) not in done] + rows
    tasks = {k: v for k, v in tasks.items() if k in {r["task"] for r in rows}}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    kept = {k: v for k, v in old.items() if k not in ("about", "settings", "tasks", "rows", "plot")}
    result = {
        **kept,  # other records stored beside the rows (e.g. a side experiment's rows)
        "about": "mean selected reward (and its standard error over problems) against the NFE "
        "budget per problem; every row records the command that measured it, every task the "
        "training command and steps of its model",
        "settings": {"eta": 3.0, "grid": "uniform"},
        "tasks": tasks,
        "rows": sorted(rows, key=lambda r: (r["task"] != "toy", METHODS.index(r["method"]))),
        "plot": os.path.basename(args.out) + ".png",
    }
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    plot(result["rows"], args.out + ".png")
    print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
