"""One-step generation: reflow, distillation from pairs, MeanFlow, data-free FreeFlow (§2, §3, §6).

Claims tested (the seed papers'), at the scale of a 2-core CPU:

1. reflow lowers the straightness of the flow and its 1-NFE error (Liu et al.);
2. MeanFlow at 1 NFE comes close to the many-step reference (Geng et al.);
3. data-free flow-map distillation is at least as good as distillation from teacher pairs at
   equal training compute (Tong et al.).

    python experiments/one_step.py --data=toy2d        # ~25 min
    python experiments/one_step.py --data=digits       # ~3 h (XLA's CPU convolutions)
    python experiments/one_step.py --data=toy2d --quick   # a smoke run of every stage
    python experiments/one_step.py --data=digits --only=meanflow   # re-measure one stage

``--only=STAGE[,STAGE]`` retrains only the named stand-alone stages (those that need no other
stage: ``meanflow``) under ``--workdir/<data>_only`` (so a full run's stages are not reused),
scores them with the evaluator settings of the full experiment (the same rows, samplers and
number of samples; the noise and labels come from the run's config, as in the full run), and
replaces only their rows and wall times in the stored ``results/experiments/one_step.json``,
appending the command to its ``updates`` list. The sample figure is left as it was; the curves
are redrawn.

Stages (each a normal flowjax run in ``--workdir/<data>/<name>``, resumed or skipped when done):

- ``1rf``: the main job's rectified flow (``configs/toy2d_rf.py`` / ``configs/digits_rf.py``);
- ``pairs_1rf``: ``--num_pairs`` teacher pairs (``flowjax.reflow``, RK4);
- ``2rf``: reflow on them, from the teacher (``configs/reflow_*.py:2rf``);
- ``distill_1rf``: one-step distillation from the 1-RF pairs (``:distill1``, from 1-RF);
- ``pairs_2rf`` + ``distill_2rf_m`` (m = 1, 2, 4): m-step distillation of 2-RF on its own
  pairs (Liu et al.'s "2-RF distilled");
- ``meanflow``: MeanFlow from scratch (``configs/meanflow_*.py``);
- ``freeflow``: FreeFlow from the 1-RF teacher, no data (``configs/freeflow_*.py``), and
  ``freeflow_equal_compute``: the same with as many steps as fit in the wall time that
  distillation from pairs took (``pairs_1rf`` + ``distill_1rf``), for claim 3.

Every model is then scored by one evaluator (the same noise and labels, the same held-out
data): sliced-Wasserstein (2-D) or the digits-classifier Fréchet distance at 1, 2 and 4 NFE
(Euler for velocity models, the flow-map sampler for MeanFlow and FreeFlow), the 1-RF
reference at 128 NFE (RK4), and the straightness of 1-RF and 2-RF (64-step Euler
trajectories). Wall times of every stage are recorded (pair generation counts as the
compute of the distillation that uses it). Writes ``results/experiments/one_step.json`` (one key per
data set) and ``results/experiments/one_step_<data>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np
import stages  # experiments/stages.py: the script's directory is on the path

import flowjax
from flowjax import evaluation, solvers
from flowjax.config_files import load_config
from flowjax.evaluation.evaluator import Evaluator
from flowjax.time import grids
from flowjax.training import load_run, train_and_evaluate
from flowjax.workflows.reflow import generate_pairs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RESULTS = os.path.join(REPO, "results", "experiments")

# Per data set: config files, training steps per stage, pair counts, metric.
SETTINGS = {
    "toy2d": dict(
        base="toy2d_rf",
        reflow="toy2d_reflow",
        meanflow="toy2d_meanflow",
        freeflow="toy2d_freeflow",
        steps=dict(rf=8000, reflow=4000, distill=4000, meanflow=8000, freeflow=4000),
        num_pairs=200_000,
        pair_nfe=64,
        num_samples=20_000,
        metric="sw",
    ),
    "digits": dict(
        base="digits_rf",
        reflow="digits_reflow",
        meanflow="digits_meanflow",
        freeflow="digits_freeflow",
        steps=dict(rf=4000, reflow=3000, distill=3000, meanflow=4000, freeflow=2000),
        num_pairs=20_000,
        pair_nfe=32,
        num_samples=1000,
        metric="fd",
    ),
}


# Stages that need no other stage: stage -> (row of the table, steps key, samplers). The full
# experiment and ``--only`` score them with these same settings.
STANDALONE = {
    "meanflow": ("MeanFlow", "meanflow", (("flowmap", 1), ("flowmap", 2), ("flowmap", 4))),
}

METRIC_NAMES = {
    "sw": "sliced-Wasserstein to held-out data",
    "fd": "digits-classifier Frechet distance to the test split",
}


class Stages(stages.Stages):
    """The stages of this experiment: training runs and teacher pair sets."""

    def train(
        self, name: str, config, steps: int, init: str | None = None, pairs: str | None = None
    ):
        config.train.num_steps = steps
        config.train.checkpoint_every = max(steps // 4, 1)
        config.train.eval_every = 0
        if init is not None:
            config.init.workdir = init
        if pairs is not None:
            config.data.pairs_dir = pairs
        return self.run(name, lambda wd: train_and_evaluate(config, wd))

    def pairs(self, name: str, teacher: str, num_pairs: int, nfe: int):
        def make(out):
            shard = max(num_pairs // 10, 1)
            generate_pairs(
                teacher,
                out,
                num_pairs=num_pairs,
                solver="rk4",
                nfe=nfe,
                shard_size=shard,
                chunk=min(shard, 5000),
            )

        return self.run(name, make)


def evaluate(workdir: str, samplers: list[str], num_samples: int, feature_cache: str):
    """Scores of one run under ``samplers`` with the shared evaluator settings."""
    config, exp, params, step = load_run(workdir)
    config.eval.samplers = tuple(samplers)
    config.eval.num_samples = num_samples
    config.eval.feature_cache_dir = feature_cache
    ev = Evaluator.for_experiment(config, exp, workdir)
    metrics, samples = ev(params)
    return metrics, samples, ev


def straightness_of(workdir: str, num: int = 2048, steps: int = 64) -> float:
    config, exp, params, _ = load_run(workdir)
    key = jax.random.PRNGKey(99)
    k_x, k_y = jax.random.split(key)
    x0 = jax.random.normal(k_x, (num, *exp.data.element_shape))
    labels = (
        None if exp.num_classes is None else jax.random.randint(k_y, (num,), 0, exp.num_classes)
    )
    from flowjax.velocity import make_velocity_fn

    velocity = make_velocity_fn(
        exp.apply_fn,
        num_classes=exp.num_classes,
        cfg_scale=float(config.eval.get("cfg_scale", 1.0)),
        cfg_interval=config.eval.get("cfg_interval", None),
    )
    grid = grids.uniform_grid(steps)
    run = solvers.make_sampler(solvers.Euler(), velocity, grid, return_trajectory=True)
    _, traj = run(params, x0, labels)
    return float(evaluation.straightness(traj, grid))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=sorted(SETTINGS), default="toy2d")
    parser.add_argument("--workdir", default="/tmp/flowjax_one_step")
    parser.add_argument("--quick", action="store_true", help="tiny step counts (smoke run)")
    parser.add_argument("--no_write", action="store_true", help="do not write results/experiments/")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated stages to retrain and re-score alone ({', '.join(STANDALONE)}); "
        "updates only their rows in the stored results",
    )
    args = parser.parse_args()

    s = SETTINGS[args.data]
    steps = dict(s["steps"])
    num_pairs, num_samples = s["num_pairs"], s["num_samples"]
    if args.quick:
        steps = {k: 20 for k in steps}
        num_pairs, num_samples = 512, 256
    key = args.data + ("_quick" if args.quick else "")
    if args.only:
        only = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in only if name not in STANDALONE]
        if unknown or not only:
            parser.error(
                f"--only takes stand-alone stages ({', '.join(STANDALONE)}), got {args.only!r}"
            )
        return update_stages(args, key, only, steps, num_samples)
    root = os.path.join(args.workdir, key)
    st = Stages(root)
    t0 = time.perf_counter()

    rf1 = st.train("1rf", load_config(s["base"]), steps["rf"])
    p1 = st.pairs("pairs_1rf", rf1, num_pairs, s["pair_nfe"])
    rf2 = st.train("2rf", load_config(s["reflow"], "2rf"), steps["reflow"], init=rf1, pairs=p1)
    d1 = st.train(
        "distill_1rf", load_config(s["reflow"], "distill1"), steps["distill"], init=rf1, pairs=p1
    )
    p2 = st.pairs("pairs_2rf", rf2, num_pairs, s["pair_nfe"])
    distilled = {
        m: st.train(
            f"distill_2rf_{m}",
            load_config(s["reflow"], f"distill{m}"),
            steps["distill"],
            init=rf2,
            pairs=p2,
        )
        for m in (1, 2, 4)
    }
    mf = st.train("meanflow", load_config(s["meanflow"]), steps[STANDALONE["meanflow"][1]])
    ff = st.train("freeflow", load_config(s["freeflow"]), steps["freeflow"], init=rf1)
    # FreeFlow again with the wall time that distillation from pairs took (pairs + training).
    ratio = (st.times["pairs_1rf"] + st.times["distill_1rf"]) / st.times["freeflow"]
    steps_equal = max(int(round(steps["freeflow"] * ratio / 100.0)) * 100, 20)
    ff_eq = st.train("freeflow_equal_compute", load_config(s["freeflow"]), steps_equal, init=rf1)

    cache = os.path.join(root, "eval_cache")
    metric = s["metric"]
    rows, samples_1nfe = {}, {}

    def add(name, workdir, settings):
        metrics, samples, ev = evaluate(
            workdir, [f"{solver}:{n}" for solver, n in settings], num_samples, cache
        )
        rows[name] = {str(n): metrics[f"{metric}_{solver}_nfe{n}"] for solver, n in settings}
        first = f"{settings[0][0]}_nfe{settings[0][1]}"
        samples_1nfe[name] = samples[first]
        return ev

    ev = add("1-RF (Euler)", rf1, [("euler", 1), ("euler", 2), ("euler", 4)])
    ref_metrics, ref_samples, _ = evaluate(rf1, ["rk4:128"], num_samples, cache)
    reference = ref_metrics[f"{metric}_rk4_nfe128"]
    add("2-RF (Euler)", rf2, [("euler", 1), ("euler", 2), ("euler", 4)])
    add("1-RF distilled from pairs", d1, [("euler", 1)])
    rows["2-RF distilled (m steps)"] = {}
    for m, wd in distilled.items():
        metrics, samples, _ = evaluate(wd, [f"euler:{m}"], num_samples, cache)
        rows["2-RF distilled (m steps)"][str(m)] = metrics[f"{metric}_euler_nfe{m}"]
        if m == 1:
            samples_1nfe["2-RF distilled (m steps)"] = samples["euler_nfe1"]
    row, _, settings = STANDALONE["meanflow"]
    add(row, mf, list(settings))
    add("FreeFlow (no data)", ff, [("flowmap", 1)])
    add("FreeFlow, compute of pair distillation", ff_eq, [("flowmap", 1)])

    straight = {"1-RF": straightness_of(rf1), "2-RF": straightness_of(rf2)}
    times = dict(st.times)
    compute = {
        "1-RF distilled from pairs": times["pairs_1rf"] + times["distill_1rf"],
        "FreeFlow (no data)": times["freeflow"],
        "FreeFlow, compute of pair distillation": times["freeflow_equal_compute"],
        "2-RF distilled (1 step)": times["pairs_1rf"]
        + times["2rf"]
        + times["pairs_2rf"]
        + times["distill_2rf_1"],
        STANDALONE["meanflow"][0]: times["meanflow"],
    }
    result = {
        "data": args.data,
        "metric": METRIC_NAMES[metric],
        "reference_1rf_rk4_nfe128": reference,
        "by_nfe": rows,
        "straightness": straight,
        "stage_seconds": times,
        "seconds_to_one_step_model": compute,
        "settings": {
            "steps": steps,
            "num_pairs": num_pairs,
            "num_samples": num_samples,
            "pair_solver": f"rk4:{s['pair_nfe']}",
        },
        "command": " ".join(["experiments/one_step.py", *sys.argv[1:]]),
        "flowjax_version": flowjax.__version__,
        "wall_seconds_this_call": time.perf_counter() - t0,
        "quick": args.quick,
    }
    print_table(result)
    if args.no_write:
        return
    os.makedirs(RESULTS, exist_ok=True)
    out = os.path.join(RESULTS, "one_step.json")
    stored = json.load(open(out)) if os.path.exists(out) else {}
    stored[args.data + ("_quick" if args.quick else "")] = result
    with open(out, "w") as f:
        json.dump(stored, f, indent=1)
    png = os.path.join(RESULTS, f"one_step_{args.data}{'_quick' if args.quick else ''}.png")
    plot(result, samples_1nfe, ref_samples["rk4_nfe128"], ev, png)
    print(f"wrote {out} and {png}")


def update_stages(args, key: str, only: list[str], steps: dict, num_samples: int) -> None:
    """Retrains the stand-alone stages ``only`` under ``<workdir>/<key>_only`` and replaces
    their rows, ``stage_seconds`` and ``seconds_to_one_step_model`` under ``<key>`` of
    ``results/experiments/one_step.json``."""
    s = SETTINGS[args.data]
    out = os.path.join(RESULTS, "one_step.json")
    stored = json.load(open(out)) if os.path.exists(out) else {}
    if key not in stored and not args.no_write:
        raise SystemExit(
            f"--only updates the stored {key!r} result of {out}, which has none: "
            f"run the full experiment first (without --only)"
        )
    t0 = time.perf_counter()
    st = Stages(os.path.join(args.workdir, key + "_only"))
    cache = os.path.join(st.root, "eval_cache")
    metric = s["metric"]
    rows, seconds = {}, {}
    for stage in only:
        row, steps_key, settings = STANDALONE[stage]
        workdir = st.train(stage, load_config(s[stage]), steps[steps_key])
        metrics, _, _ = evaluate(
            workdir, [f"{solver}:{n}" for solver, n in settings], num_samples, cache
        )
        rows[row] = {str(n): metrics[f"{metric}_{solver}_nfe{n}"] for solver, n in settings}
        seconds[stage] = st.times[stage]
    result = stored.get(key)
    if result is None:  # --no_write without a stored result: show the new rows alone
        result = {
            "data": args.data,
            "metric": METRIC_NAMES[metric],
            "reference_1rf_rk4_nfe128": float("nan"),
            "by_nfe": {},
            "straightness": {"1-RF": float("nan"), "2-RF": float("nan")},
            "stage_seconds": {},
            "seconds_to_one_step_model": {},
        }
    for stage in only:
        row = STANDALONE[stage][0]
        print(f"[{stage}] {row}: was {result['by_nfe'].get(row)}, now {rows[row]}")
        result["by_nfe"][row] = rows[row]
        result["stage_seconds"][stage] = seconds[stage]
        result["seconds_to_one_step_model"][row] = seconds[stage]
    result.setdefault("updates", []).append(
        {
            "command": " ".join(["experiments/one_step.py", *sys.argv[1:]]),
            "stages": only,
            "rows": [STANDALONE[stage][0] for stage in only],
            "steps": {stage: steps[STANDALONE[stage][1]] for stage in only},
            "num_samples": num_samples,
            "flowjax_version": flowjax.__version__,
            "wall_seconds_this_call": time.perf_counter() - t0,
        }
    )
    print_table(result)
    if args.no_write:
        return
    stored[key] = result
    with open(out, "w") as f:
        json.dump(stored, f, indent=1)
    png = os.path.join(RESULTS, f"one_step_{key}.png")
    plot_curves(result, png.replace(".png", "_curves.png"))
    print(f"updated {out} ({', '.join(rows)}) and the curves next to {png}")


def print_table(result: dict) -> None:
    print(
        f"\n{result['data']}: {result['metric']} (lower is better); "
        f"1-RF reference (RK4, 128 NFE): {result['reference_1rf_rk4_nfe128']:.4g}"
    )
    print(f"  {'model':30s} {'NFE 1':>9s} {'NFE 2':>9s} {'NFE 4':>9s}")
    for name, row in result["by_nfe"].items():
        cells = [f"{row[n]:9.4g}" if n in row else f"{'-':>9s}" for n in ("1", "2", "4")]
        print(f"  {name:30s} " + " ".join(cells))
    st = result["straightness"]
    print(f"  straightness: 1-RF {st['1-RF']:.4g}, 2-RF {st['2-RF']:.4g}")
    for name, sec in result["seconds_to_one_step_model"].items():
        print(f"  compute to a one-step model, {name}: {sec / 60:.1f} min")


def plot(result: dict, samples: dict, reference: np.ndarray, ev, path: str) -> None:
    plot_curves(result, path.replace(".png", "_curves.png"))
    panels = {f"{k}, 1 NFE": v for k, v in samples.items()}
    panels["1-RF, RK4 128 NFE"] = reference
    ev.plot(panels, path, title=f"1-NFE samples, {result['data']}")


def plot_curves(result: dict, curve: str) -> None:
    """The score of every model against NFE, with the 128-NFE reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, row in result["by_nfe"].items():
        n = sorted(int(k) for k in row)
        ax.plot(n, [row[str(k)] for k in n], "o-", label=name)
    ax.axhline(result["reference_1rf_rk4_nfe128"], color="k", ls="--", label="1-RF, RK4 128 NFE")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks([1, 2, 4], ["1", "2", "4"])
    ax.set_xlabel("NFE")
    ax.set_ylabel(result["metric"])
    ax.legend(fontsize=7)
    ax.set_title(f"one-step generation on {result['data']}")
    fig.tight_layout()
    fig.savefig(curve, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
