"""Learned grids and bespoke coefficients against fixed, BOSS and the established samplers.

    python experiments/learned_solvers.py --workdir=/tmp/toy     # ~40 min on a shared 2-core CPU
    python -m flowjax.main --config=toy2d_rf --workdir=/tmp/toy  # the trained model, first

Problems: the exact Gaussian-mixture fields of ``experiments/solver_sweep.py`` (``gmm2d``,
``gmm64d``, ``gmm2d_cfg4``, ``gmm64d_cfg4``) and, with ``--workdir``, the trained checkerboard
model (``model``), with the sweep's evaluation noise (2048 samples, labels under CFG) and its
reference (diffrax Tsit5, rtol = atol = 1e-6), so the errors are directly comparable with the
numbers stored in ``results/experiments/solver_sweep.json`` (fixed flowjax grids, BOSS grids and the
peers: diffusers DPM-Solver++ / UniPC / FlowMatch Euler, Meta's flow_matching, diffrax). For
the model, two fixed settings are re-measured and compared with the stored ones to check that
the stored numbers belong to the same network (``stored_sweep_check``). Calibration uses
separate noises (and labels), never the evaluation batch: M = 256 by default, reference
Tsit5 (1e-6); each optimisation starts from the fixed grid with the lowest calibration loss
(``init="best"``).

Candidates per NFE (2, 3, 4, 5, 6, 8, 10): bespoke coefficients (which include the learned
grid) on UniPC-2 and, at even NFE, on the midpoint rule (``--grids`` adds plain learned
grids for UniPC-2 and midpoint). The one reported as
"learned" is the candidate with the lowest *calibration* loss (selection never looks at the
evaluation batch). A second study varies M at one setting to see when held-out error stops
improving.

Writes ``results/experiments/learned_solvers.json`` and ``results/experiments/learned_solvers.png``.

``--digits_workdir=RUN`` (a class-conditional ``sklearn_digits`` run) instead measures only the
``digits`` problem and adds it to the stored JSON: the guided field at the run's evaluation
CFG scale, held-out noises and labels, a fixed fine reference (``--digits_reference``, default
``rk4:32``: an adaptive solve of the UNet is slow on a CPU), calibration noises and labels from
their own keys. Per NFE: the best fixed setting (Euler, Heun, midpoint, DPM-Solver++ 2M,
UniPC-2 on the uniform, logSNR and diffusers grids), Euler on the BOSS grid (Euler jump costs
between RK4 states on ``--digits_boss_fine`` uniform steps) and bespoke UniPC-2 (``init="best"``).
No peer sampler was run on this model.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from solver_sweep import gmm_problem, model_problem  # the sibling script

from flowjax import solvers
from flowjax.solvers import learned
from flowjax.solvers.learned import bespoke

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RESULTS = os.path.join(ROOT, "results", "experiments")
NFES = (2, 3, 4, 5, 6, 8, 10)


def calibration_batch(problem, m: int, seed: int):
    k_x, k_c = jax.random.split(jax.random.PRNGKey(1000 + seed))
    x0 = jax.random.normal(k_x, (m, *problem.x0.shape[1:]))
    cond = None
    if problem.cond is not None:
        cond = jax.random.randint(k_c, (m,), 0, int(jnp.max(problem.cond)) + 1)
    return x0, cond


def candidates(nfe: int, grids: bool = False):
    out = [("bespoke", "unipc2")]
    if nfe % 2 == 0:
        out.append(("bespoke", "midpoint"))
    if grids:
        out += [("grid", "unipc2")] + ([("grid", "midpoint")] if nfe % 2 == 0 else [])
    return out


def calibrate(problem, kind, base, nfe, x0, cond, x_ref, iters, seed, init="best"):
    solver = solvers.make_solver(base)
    t0 = time.perf_counter()
    common = dict(cond=cond, x_ref=x_ref, iters=iters, seed=seed, init=init)
    if kind == "grid":
        sched = learned.learn_grid(solver, problem.velocity, x0, nfe, **common)
        grid = jnp.asarray(sched.grid, jnp.float32)
        x = jax.jit(lambda a, c, s=solver, g=grid: solvers.sample(s, problem.velocity, a, g, c))(
            problem.x0, problem.cond
        )
    else:
        sampler, sched = bespoke.learn(solver, problem.velocity, x0, nfe, **common)
        x = jax.jit(lambda a, c: sampler(problem.velocity, a, c))(problem.x0, problem.cond)
    seconds = time.perf_counter() - t0
    return {
        "heldout_error": problem.error(x),
        **tail(problem, x),
        "calibration_rmse": float(np.sqrt(sched.loss)),
        "initial_calibration_rmse": float(np.sqrt(sched.initial_loss)),
        "times": list(sched.times),
        "init": sched.init,
        "optimiser_nfe": int(sched.calibration_nfe),
        "seconds": seconds,
    }


def sweep_check(problem, stored) -> dict:
    """Re-measure two fixed settings and compare with the stored sweep (same network?)."""
    out = {}
    for name, grid_spec, nfe in (("euler", "uniform", 4), ("unipc2", "uniform", 5)):
        solver = solvers.make_solver(name)
        grid = jnp.asarray(
            learned.init_grid(grid_spec, solver.num_steps_for_nfe(nfe)), problem.x0.dtype
        )
        x = jax.jit(lambda a, c, s=solver, g=grid: solvers.sample(s, problem.velocity, a, g, c))(
            problem.x0, problem.cond
        )
        out[f"{name}/{grid_spec}@{nfe}"] = {
            "now": problem.error(x),
            "stored": stored["flowjax"]["errors"][name][grid_spec][str(nfe)],
        }
    out["same_network"] = bool(
        all(abs(v["now"] - v["stored"]) <= 1e-3 * v["stored"] for v in out.values())
    )
    return out


def tail(problem, x) -> dict:
    """Median and largest per-sample RMS error (the RMS over the batch is tail-dominated)."""
    if x is None:
        return {}
    e = np.sqrt(
        np.mean(
            np.reshape((np.asarray(x) - np.asarray(problem.ref)) ** 2, (x.shape[0], -1)), axis=1
        )
    )
    return {"median_sample_error": float(np.median(e)), "max_sample_error": float(e.max())}


def stored_sweep():
    with open(os.path.join(RESULTS, "solver_sweep.json"), encoding="utf-8") as f:
        return json.load(f)["problems"]


def best_at(curves: dict, nfe: int, skip_grid: str | None = None, only_grid: str | None = None):
    """Best (error, label) over settings with NFE <= nfe in a {label: {nfe: err}} dict."""
    best = (float("inf"), "")
    for label, curve in curves.items():
        for n, e in curve.items():
            if int(n) <= nfe and e < best[0]:
                best = (e, f"{label}@{n}")
    return best


def flowjax_curves(errors: dict, grid_filter) -> dict:
    return {
        f"{s}/{g}": c for s, grids in errors.items() for g, c in grids.items() if grid_filter(g)
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default="gmm2d,gmm64d,gmm2d_cfg4,gmm64d_cfg4")
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grids", action="store_true", help="also plain learned grids")
    parser.add_argument("--sizes", default="16,64,256,1024", help="M values of the size study")
    parser.add_argument("--size_setting", default="gmm64d:4,gmm64d:8")
    parser.add_argument("--init", default="best", help="grid spec the optimisation starts from")
    parser.add_argument("--workdir", default=None, help="trained run for the 'model' problem")
    parser.add_argument("--digits_workdir", default=None, help="class-conditional digits run")
    parser.add_argument("--digits_nfes", default="2,4,6,8")
    parser.add_argument("--digits_heldout", type=int, default=256)
    parser.add_argument("--digits_reference", default="rk4:32")
    parser.add_argument("--digits_boss_fine", type=int, default=48)
    args = parser.parse_args()
    if args.digits_workdir:  # the digits problem only; appended to the stored results
        with open(os.path.join(RESULTS, "learned_solvers.json"), encoding="utf-8") as f:
            out = json.load(f)
        digits_section(args, out)
        print("appended 'digits' to results/experiments/learned_solvers.json")
        return
    if args.workdir and "model" not in args.problems.split(","):
        args.problems += ",model"
    sweep = stored_sweep()
    dims = {
        "gmm2d": (2, 1.0),
        "gmm64d": (64, 1.0),
        "gmm2d_cfg4": (2, 4.0),
        "gmm64d_cfg4": (64, 4.0),
    }
    out = {"settings": vars(args), "problems": {}, "calibration_size": {}}
    for name in args.problems.split(","):
        if name == "model":
            if not args.workdir:
                raise SystemExit("the 'model' problem needs --workdir=<trained checkerboard run>")
            problem = model_problem(args.workdir, 2048)
        else:
            problem = gmm_problem(name, *dims[name], 2048)
        x0, cond = calibration_batch(problem, args.calibration, args.seed)
        t0 = time.perf_counter()
        x_ref, ref_nfe = learned.reference_endpoints(problem.velocity, x0, cond, "tsit5")
        ref_seconds = time.perf_counter() - t0
        res = {"reference_nfe": ref_nfe, "reference_seconds": ref_seconds, "nfe": {}}
        stored = sweep[name]
        if name == "model":
            res["checkpoint_step"] = problem.checkpoint_step
            res["stored_sweep_check"] = sweep_check(problem, stored)
            print(f"model: stored sweep check {res['stored_sweep_check']}", flush=True)
        fixed = flowjax_curves(stored["flowjax"]["errors"], lambda g: g != "boss")
        boss_c = flowjax_curves(stored["flowjax"]["errors"], lambda g: g == "boss")
        for nfe in NFES:
            row = {"candidates": {}}
            for kind, base in candidates(nfe, args.grids):
                r = calibrate(
                    problem, kind, base, nfe, x0, cond, x_ref, args.iters, args.seed, args.init
                )
                row["candidates"][f"{kind}:{base}"] = r
                print(
                    f"{name} NFE={nfe} {kind}:{base}: held-out {r['heldout_error']:.4g} "
                    f"(calibration {r['calibration_rmse']:.4g} from "
                    f"{r['initial_calibration_rmse']:.4g}, {r['seconds']:.1f}s)",
                    flush=True,
                )
            chosen = min(row["candidates"], key=lambda k: row["candidates"][k]["calibration_rmse"])
            row["learned"] = [row["candidates"][chosen]["heldout_error"], chosen]
            row["learned_median_sample_error"] = row["candidates"][chosen]["median_sample_error"]
            row["fixed"] = list(best_at(fixed, nfe))
            row["boss"] = list(best_at(boss_c, nfe))
            row["peer"] = list(best_at({k: v for k, v in stored["peers"].items()}, nfe))
            row["learned_over_peer"] = row["learned"][0] / row["peer"][0]
            row["target_met"] = bool(row["learned_over_peer"] <= 0.5)
            res["nfe"][nfe] = row
            print(
                f"  -> learned {row['learned'][0]:.4g} ({chosen}), fixed {row['fixed'][0]:.4g}, "
                f"BOSS {row['boss'][0]:.4g}, peer {row['peer'][0]:.4g}: "
                f"ratio {row['learned_over_peer']:.2f}",
                flush=True,
            )
        out["problems"][name] = res
        _write(out)
        plot(out, os.path.join(RESULTS, "learned_solvers.png"))
    # Calibration size study: held-out error against M, per setting.
    for setting in args.size_setting.split(","):
        pname, nfe = setting.split(":")
        nfe = int(nfe)
        problem = gmm_problem(pname, *dims[pname], 2048)
        study = out["calibration_size"].setdefault(setting, {})
        for m in [int(s) for s in args.sizes.split(",")]:
            x0, cond = calibration_batch(problem, m, args.seed)
            t0 = time.perf_counter()
            x_ref, ref_nfe = learned.reference_endpoints(problem.velocity, x0, cond, "tsit5")
            ref_s = time.perf_counter() - t0
            r = calibrate(
                problem, "bespoke", "unipc2", nfe, x0, cond, x_ref, args.iters, args.seed, args.init
            )
            r.update(reference_nfe=ref_nfe, reference_seconds=ref_s)
            study[m] = r
            print(f"size study {setting} M={m}: held-out {r['heldout_error']:.4g}", flush=True)
            _write(out)
    plot(out, os.path.join(RESULTS, "learned_solvers.png"))
    print(
        "wrote results/experiments/learned_solvers.json and results/experiments/learned_solvers.png"
    )


DIGITS_FIXED = ("euler", "heun", "midpoint", "dpm++2m", "unipc2")
DIGITS_GRIDS = ("uniform", "logsnr", "diffusers")


class DigitsProblem:
    """The trained class-conditional digits model under its evaluation CFG scale.

    ``velocity(x, t, y)`` is the guided field ``v_null + w (v_y - v_null)`` with ``w`` the run's
    ``eval.cfg_scale``; the held-out batch (noises ``[n, 8, 8, 1]`` and labels) is drawn from
    its own keys and its reference is a fixed fine solve (``reference``, e.g. ``rk4:32``).
    """

    def __init__(self, workdir: str, n: int, reference: str):
        from flowjax.training import load_run
        from flowjax.velocity import make_velocity_fn

        config, exp, params, step = load_run(workdir)
        self.cfg_scale = float(config.eval.cfg_scale)
        self.num_classes = int(exp.num_classes)
        self.shape = tuple(exp.data.element_shape)
        self.checkpoint_step = step
        v = make_velocity_fn(exp.apply_fn, num_classes=exp.num_classes, cfg_scale=self.cfg_scale)
        self.velocity = lambda x, t, c: v(params, x, t, c)
        self.x0, self.cond = self.draw(n, 7)
        self.ref, self.ref_nfe = learned.reference_endpoints(
            self.velocity, self.x0, self.cond, reference
        )

    def draw(self, m: int, seed: int):
        k_x, k_c = jax.random.split(jax.random.PRNGKey(seed))
        x0 = jax.random.normal(k_x, (m, *self.shape))
        return x0, jax.random.randint(k_c, (m,), 0, self.num_classes)

    def error(self, x) -> float:
        return float(jnp.sqrt(jnp.mean((jnp.asarray(x, jnp.float32) - self.ref) ** 2)))


def digits_section(args, out: dict) -> dict:
    """Fixed (best of solver x grid), BOSS (Euler on the BOSS grid) and learned (bespoke UniPC-2
    from the best fixed grid) on held-out noises and labels of the trained digits model; stored
    as ``out["digits"]`` and written after every NFE."""
    from flowjax.solvers import boss

    problem = DigitsProblem(args.digits_workdir, args.digits_heldout, args.digits_reference)
    x0, cond = problem.draw(args.calibration, 1000 + args.seed)  # calibration: its own keys
    t0 = time.perf_counter()
    x_ref, ref_nfe = learned.reference_endpoints(problem.velocity, x0, cond, args.digits_reference)
    ref_seconds = time.perf_counter() - t0
    nfes = [int(n) for n in args.digits_nfes.split(",")]
    runs = {
        s: jax.jit(
            lambda a, c, g, s=solvers.make_solver(s): solvers.sample(s, problem.velocity, a, g, c)
        )
        for s in DIGITS_FIXED
    }
    # BOSS: one cost matrix (Euler jumps between RK4 states on a fine uniform grid) for all K.
    t0 = time.perf_counter()
    fine = np.asarray(learned.init_grid("uniform", args.digits_boss_fine))
    traj = boss.reference_trajectories(problem.velocity, x0, fine, cond, solver=solvers.RK4())
    costs = boss.jump_costs(problem.velocity, traj, fine, cond)
    boss_seconds = time.perf_counter() - t0
    res = {
        "note": (
            "no peer numbers exist for this model (the solver sweep does not cover it); fixed "
            "= best held-out error over the fixed solver x grid settings at exactly this NFE"
        ),
        "model": "class-conditional UNet on sklearn_digits (8x8x1), EMA weights",
        "checkpoint_step": problem.checkpoint_step,
        "cfg_scale": problem.cfg_scale,
        "heldout": args.digits_heldout,
        "calibration": args.calibration,
        "iters": args.iters,
        "reference": args.digits_reference,
        "reference_nfe": ref_nfe,
        "reference_seconds": ref_seconds,
        "boss_fine_steps": args.digits_boss_fine,
        "boss_cost_seconds": boss_seconds,
        "fixed_solvers": list(DIGITS_FIXED),
        "fixed_grids": list(DIGITS_GRIDS),
        "command": (
            "python experiments/learned_solvers.py --digits_workdir=RUN "
            f"--digits_nfes={args.digits_nfes} --digits_heldout={args.digits_heldout} "
            f"--digits_reference={args.digits_reference} "
            f"--digits_boss_fine={args.digits_boss_fine} --calibration={args.calibration} "
            f"--iters={args.iters}"
        ),
        "nfe": {},
    }
    out["digits"] = res
    for nfe in nfes:
        fixed = {}
        for name, run in runs.items():
            solver = solvers.make_solver(name)
            try:
                k = solver.num_steps_for_nfe(nfe)
            except ValueError:
                continue
            for g in DIGITS_GRIDS:
                try:
                    grid = jnp.asarray(learned.init_grid(g, k), jnp.float32)
                except ValueError:
                    continue
                fixed[f"{name}/{g}"] = problem.error(run(problem.x0, problem.cond, grid))
        best_fixed = min(fixed, key=fixed.get)
        idx, _ = boss.bellman_path(costs, nfe)
        boss_grid = jnp.asarray(fine[idx], jnp.float32)
        boss_err = problem.error(runs["euler"](problem.x0, problem.cond, boss_grid))
        r = calibrate(
            problem, "bespoke", "unipc2", nfe, x0, cond, x_ref, args.iters, args.seed, "best"
        )
        row = {
            "fixed": [fixed[best_fixed], best_fixed],
            "fixed_all": fixed,
            "boss": [boss_err, "euler/boss"],
            "boss_grid": [float(t) for t in fine[idx]],
            "learned": [r["heldout_error"], "bespoke:unipc2"],
            "learned_detail": r,
            "learned_over_fixed": r["heldout_error"] / fixed[best_fixed],
        }
        res["nfe"][nfe] = row
        print(
            f"digits NFE={nfe}: fixed {row['fixed'][0]:.4g} ({best_fixed}), BOSS {boss_err:.4g}, "
            f"learned {r['heldout_error']:.4g} ({r['seconds']:.1f}s): "
            f"learned/fixed {row['learned_over_fixed']:.2f}",
            flush=True,
        )
        _write(out)
    return res


def _write(out):
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "learned_solvers.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)


def plot(out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(out["problems"])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.0 * (len(names) + 1), 3.8))
    for ax, name in zip(axes, names):
        rows = out["problems"][name]["nfe"]
        ns = [int(n) for n in rows]
        for key, style, label in (
            ("peer", "r--", "best peer"),
            ("fixed", "k-", "best fixed flowjax"),
            ("boss", "b:", "best BOSS"),
            ("learned", "g-o", "learned (held-out)"),
        ):
            ax.plot(ns, [rows[n][key][0] for n in rows], style, ms=3, label=label)
        ax.plot(ns, [0.5 * rows[n]["peer"][0] for n in rows], "r:", lw=0.7, label="0.5x peer")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel("RMS error vs Tsit5 reference")
    axes[0].legend(fontsize=7)
    for (setting, size), color in zip(out["calibration_size"].items(), "gmc"):
        ms = [int(m) for m in size]
        errs = [size[m]["heldout_error"] for m in size]
        cals = [size[m]["calibration_rmse"] for m in size]
        axes[-1].plot(ms, errs, f"{color}-o", ms=3, label=f"{setting} held-out")
        axes[-1].plot(ms, cals, f"{color}--", label=f"{setting} calibration")
    if out["calibration_size"]:
        axes[-1].set_xscale("log")
        axes[-1].set_yscale("log")
        axes[-1].set_xlabel("calibration noises M")
        axes[-1].set_title("calibration size, bespoke-unipc2", fontsize=9)
        axes[-1].legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
