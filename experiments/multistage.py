"""Multi-stage flows on digits: Blockwise Flow Matching and Decomposable Flow Matching (§13).

Claims tested (the papers'), at the scale of a 2-core CPU:

1. BFM (Park et al.): K small velocity blocks, one per time segment, reach the quality of a
   single network of the same total parameter count at less inference compute (each network
   evaluation runs the shared feature network and ONE block);
2. DFM (Haji-Ali et al.): generating a Laplacian pyramid coarse-to-fine with one network
   improves quality over the base flow at equal training compute.

    python experiments/multistage.py                 # ~30 min on a 2-core CPU
    python experiments/multistage.py --quick         # a smoke run of every stage
    python experiments/multistage.py --summarise_only   # re-print / re-plot the stored JSON

Runs (each a normal flowjax run in ``--workdir/<name>``, resumed or skipped when done; the
same number of steps and batch for all, so the training compute of two runs differs only by
their per-step FLOPs, which are reported):

- ``bfm_k2``, ``bfm_k4``: ``configs/digits_bfm.py`` with K = 2 and 4 segments;
- ``single_k2``, ``single_k4``: the digits DiT (``configs/digits_dit.py``) at the BFM run's
  width, with the depth whose parameter count is closest to the BFM model's total (feature
  network + all K blocks + projector);
- ``bfm_k2_noalign``: K = 2 without the alignment to the digits classifier's features (an
  ablation: what the feature guidance does at this scale);
- ``dfm``: ``configs/digits_dfm.py`` (two stages: the 4x4 and 8x8 levels of the pyramid);
- ``dfm_even``: DFM with stage probabilities 0.5 / 0.5 instead of 0.9 / 0.1 (an ablation:
  how much the rarely trained detail stage costs at this training length);
- ``base``: the same model and objective with one stage (which is exactly flow matching).

Every model is scored by its run's evaluator (the same noise, labels and held-out test split)
with Euler at several NFE: the digits-classifier Fréchet distance (``fd``; a classifier trained
here, so it is a Fréchet distance on that classifier's features, not Inception FID) against the
inference FLOPs per sample (network evaluations made x analytic forward FLOPs of one
evaluation, x 2 under classifier-free guidance). Writes ``results/experiments/multistage.json`` and
``results/experiments/multistage.png``.

Measured (2000 steps each, batch and learning-rate schedule of the digits configs, 1000
samples, guided with CFG as the configs are): no claim reproduced at this scale. BFM K = 2
(0.43M parameters, 7.2 MFLOPs per evaluation) reaches FD 31.4 at 32 NFE where the 5-block DiT
of 0.40M parameters (8.5 MFLOPs) reaches 16.6, and 23.1 already at 4 NFE; K = 4 (0.67M) 23.5
vs 15.8 for the 9-block DiT (0.70M, 15.3 MFLOPs, so BFM's evaluation is 2.1x cheaper); without
the feature alignment K = 2 scores 28.7. DFM 31.4 vs 14.9 for the base flow at 32 NFE (5.2 vs
5.1 training GFLOPs per step); with the stages trained 0.5 / 0.5, 18.8. The table and what it
means: docs/results/blockwise_and_decomposable.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import numpy as np
import stages  # experiments/stages.py: the script's directory is on the path

import flowjax
from flowjax.config_files import load_config
from flowjax.evaluation.evaluator import Evaluator
from flowjax.solvers.spec import sampler_label
from flowjax.training import accounting, train_and_evaluate
from flowjax.training.experiment import Experiment, load_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "results", "experiments")
NFES = (4, 8, 16, 32)
METRIC = "fd"
# A multi-stage run and its baseline share a colour (solid vs dashed); ablations are dotted.
COLOURS = dict(
    bfm_k2="C0", single_k2="C0", bfm_k4="C1", single_k4="C1", bfm_k2_noalign="C2",
    dfm="C0", base="C0", dfm_even="C2",
)  # fmt: skip


def count_params(exp: Experiment) -> dict[str, int]:
    """Parameter count of each top-level group of the experiment's model (from shapes only)."""
    params = exp.abstract_state().params
    return {g: int(sum(np.prod(x.shape) for x in jax.tree.leaves(params[g]))) for g in params}


class Stages(stages.Stages):
    """The training runs of this experiment."""

    def train(self, name: str, config, steps: int) -> str:
        config.train.num_steps = steps
        config.train.checkpoint_every = max(steps // 2, 1)
        config.train.eval_every = 0
        config.eval.samplers = ("euler:8",)  # the run's own final check; scored in `score`
        return self.run(name, lambda workdir: train_and_evaluate(config, workdir))


def trained_params(groups: dict[str, int]) -> int:
    """Parameters the run trains (for BFM: all but the stage-2 residual network ``frn``)."""
    return sum(n for group, n in groups.items() if group != "frn")


def bfm_config(k: int):
    c = load_config("digits_bfm")
    c.objective.blockwise.num_segments = k
    return c


def matched_single_config(target: int, width: int):
    """The digits DiT at ``width`` with the depth whose parameter count is closest to ``target``
    (the count grows with depth: the search stops at the first depth at or above it)."""
    best = None
    for depth in range(1, 33):
        c = load_config("digits_dit")
        c.model.hidden_size = width
        c.model.depth = depth
        n = trained_params(count_params(Experiment(c)))
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (c, n)
        if n >= target:
            break
    return best[0]


def score(workdir: str, num_samples: int, cache: str) -> tuple[dict, np.ndarray]:
    """Fréchet distance and inference FLOPs per sample of one run under Euler at ``NFES``."""
    config, exp, params, step = load_run(workdir)
    config.eval.samplers = tuple(f"euler:{n}" for n in NFES)
    config.eval.num_samples = num_samples
    config.eval.feature_cache_dir = cache
    ev = Evaluator.for_experiment(config, exp, workdir)
    metrics, samples = ev(params, progress=None, desc=os.path.basename(workdir))
    guided = getattr(ev.velocity, "guidance", None) is not None
    shape = tuple(exp.data.element_shape)
    rows = {}
    for n in NFES:
        label = sampler_label("euler", n)
        calls = ev.network_calls[label]
        flops = accounting.inference_flops(exp.model, shape, calls, guided=guided)
        rows[str(n)] = dict(fd=metrics[f"{METRIC}_{label}"], gflops=flops / 1e9, calls=calls)
    groups = count_params(exp)
    return dict(
        step=int(step),
        params=trained_params(groups),
        params_by_group=groups,
        guided=guided,
        forward_gflops=accounting.forward_flops_per_example(exp.model, shape) / 1e9,
        train_gflops_per_step=accounting.step_cost(
            exp.model, shape, int(config.train.batch_size)
        ).model_flops
        / 1e9,
        rows=rows,
    ), samples[sampler_label("euler", NFES[-1])]


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    panels = (
        (
            "BFM vs one network of equal parameters",
            ("bfm_k2", "single_k2", "bfm_k4", "single_k4", "bfm_k2_noalign"),
        ),
        ("DFM vs the base flow (equal training steps)", ("dfm", "base", "dfm_even")),
    )
    for ax, (title, names) in zip(axes, panels):
        for name in names:
            if name not in result["runs"]:
                continue
            run = result["runs"][name]
            rows = [run["rows"][str(n)] for n in NFES]
            label = f"{name} ({run['params'] / 1e6:.2f}M params)"
            style = "--" if name.startswith(("single", "base")) else "-"
            style = ":" if name.endswith(("noalign", "even")) else style
            ax.plot(
                [r["gflops"] for r in rows],
                [r["fd"] for r in rows],
                style,
                marker="o",
                label=label,
                color=COLOURS[name],
            )
            for n, r in zip(NFES, rows):
                ax.annotate(
                    str(n),
                    (r["gflops"], r["fd"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xscale("log")
        ax.set_xlabel("inference GFLOPs per sample (Euler; labels: NFE)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("digits-classifier Fréchet distance (lower is better)")
    fig.suptitle(
        f"Multi-stage flows on 8x8 digits, {result['steps']} training steps each", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", default=os.path.join(tempfile.gettempdir(), "flowjax_multistage")
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="tiny step counts (smoke run)")
    parser.add_argument("--no_write", action="store_true", help="do not write results/experiments/")
    parser.add_argument(
        "--summarise_only",
        action="store_true",
        help="re-print the table and re-draw the figure from results/experiments/multistage.json",
    )
    args = parser.parse_args()
    if args.summarise_only:
        with open(os.path.join(RESULTS, "multistage.json"), encoding="utf-8") as f:
            result = json.load(f)
        print_table(result)
        plot(result, os.path.join(RESULTS, "multistage.png"))
        return
    steps, num_samples = (20, 128) if args.quick else (args.steps, args.num_samples)
    root = os.path.join(args.workdir, "quick" if args.quick else "full")
    st = Stages(root)
    t0 = time.perf_counter()

    configs = {}
    for k in (2, 4):
        c = bfm_config(k)
        configs[f"bfm_k{k}"] = c
        width = int(c.model.hidden_size)
        target = trained_params(count_params(Experiment(c)))
        configs[f"single_k{k}"] = matched_single_config(target, width)
    # Ablation: K = 2 without the representation alignment (is the guidance helping here?).
    configs["bfm_k2_noalign"] = bfm_config(2)
    configs["bfm_k2_noalign"].objective.blockwise.update(align_weight=0.0, encoder="none")
    configs["dfm"] = load_config("digits_dfm")
    # Ablation: half of the rows train the detail stage (the paper's 0.9 / 0.1 favours the
    # coarse stage; on 8x8 digits the detail carries much of the image).
    configs["dfm_even"] = load_config("digits_dfm")
    configs["dfm_even"].objective.decomposable.stage_probs = (0.5, 0.5)
    base = load_config("digits_dit")
    base.objective.time_sampler = (
        "logit_normal,loc=0,scale=1"  # DFM's law for the stage it generates
    )
    configs["base"] = base

    cache = os.path.join(root, "eval_cache")
    result = dict(
        flowjax_version=flowjax.__version__,
        steps=steps,
        num_samples=num_samples,
        nfes=list(NFES),
        runs={},
    )
    for name, config in configs.items():
        workdir = st.train(name, config, steps)
        row, _ = score(workdir, num_samples, cache)
        row["train_seconds"] = st.times[name]
        row["config"] = describe(config)
        result["runs"][name] = row
        print(name, json.dumps({n: r for n, r in row["rows"].items()}), flush=True)
    # Runs trained in an earlier pass are skipped (their times are in train_seconds).
    result["seconds_this_pass"] = time.perf_counter() - t0
    result["command"] = "python experiments/multistage.py" + (" --quick" if args.quick else "")
    print_table(result)
    if not args.no_write and not args.quick:
        with open(os.path.join(RESULTS, "multistage.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        plot(result, os.path.join(RESULTS, "multistage.png"))
    elif args.quick:
        plot(result, os.path.join(root, "multistage.png"))


def describe(config) -> dict:
    return dict(model=dict(config.model), objective=config.objective.name)


def print_table(result: dict) -> None:
    """One line per run: parameters, training time and GFLOPs per step, then FD at each NFE."""
    head = "run          params  train s  GF/step  " + "  ".join(
        f"NFE {n:>2}: FD / GFLOPs" for n in NFES
    )
    print(head)
    for name, run in result["runs"].items():
        cells = "  ".join(
            f"{run['rows'][str(n)]['fd']:7.2f} / {run['rows'][str(n)]['gflops']:6.3f}" for n in NFES
        )
        print(
            f"{name:12s} {run['params'] / 1e6:5.2f}M  {run['train_seconds']:7.0f}  "
            f"{run['train_gflops_per_step']:7.1f}  {cells}"
        )


if __name__ == "__main__":
    main()
