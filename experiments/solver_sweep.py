"""Error versus NFE for every flowjax solver and grid, against the established samplers.

    python experiments/solver_sweep.py --workdir=/tmp/toy      # after training:
    python -m flowjax.main --config=configs/toy2d_rf.py --workdir=/tmp/toy

Problems (noise at t = 0, data at t = 1; every sampler starts from the same noise batch):

- ``gmm2d``: the exact velocity of an 8-component Gaussian mixture on a ring in 2-D;
- ``gmm64d``: an 8-component Gaussian mixture in 64-D (random mean directions);
- ``gmm2d_cfg4`` / ``gmm64d_cfg4``: the same with classifier-free guidance, scale 4, on
  random component labels (the guided field ``v_null + 4 (v_c - v_null)``, exact too);
- ``model``: the main job's trained MLP on the checkerboard (EMA weights), if ``--workdir``.

Error = RMS over samples and coordinates of ``x_solver - x_ref``, with ``x_ref`` a diffrax
Tsit5 solve (rtol = atol = 1e-6, max norm) from the same noise. NFE in {1, 2, 3, 4, 5, 6, 8, 10,
16}; a setting exists where the NFE is a multiple of the solver's cost per step and at least
its minimum. flowjax: Euler, Heun, midpoint, RK4, DPM-Solver++ 2M / 3M (3M in the third-order
``taylor`` form and in diffusers' form, ``dpm++3m-ref``), and 2M / 3M with the UniC corrector
(``unipc2``, ``dpm++3m-unic``) on the uniform, logSNR, EDM (rho 7),
shifted (alpha 3), diffusers and BOSS grids. BOSS grids come from a separate calibration
batch (256 noises): RK4 reference trajectories on a fine grid (N = 100 for the Euler cost used
by Euler and DPM-Solver++, N = 50 for the Heun / midpoint / RK4 one-step costs). Peers (if
installed; never dependencies): diffusers DPMSolverMultistep (2M, 3M), UniPC (bh2, order 2
and 3) with flow sigmas and FlowMatchEuler, each at shift 1 and 3; Meta's ``flow_matching``
ODESolver (euler, midpoint, rk4 on the uniform grid); diffrax Tsit5 at loose tolerances.

Writes ``results/experiments/solver_sweep.json`` and ``results/experiments/solver_sweep.png``, and
prints the table "best flowjax vs best peer at NFE budget n" (best error over settings with
NFE <= n), the BOSS / uniform error ratios per solver, and the sampler's compile time, samples/s
and recompilation check.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from flowjax import solvers
from flowjax.exact_fields import GaussianMixtureField
from flowjax.objectives import guidance
from flowjax.solvers import boss
from flowjax.time import grids

NFES = (1, 2, 3, 4, 5, 6, 8, 10, 16)
GRIDS = ("uniform", "logsnr", "edm", "shifted,alpha=3", "diffusers", "boss")
SOLVERS = {
    "euler": solvers.Euler(),
    "heun": solvers.Heun(),
    "midpoint": solvers.Midpoint(),
    "rk4": solvers.RK4(),
    "dpm++2m": solvers.DPMSolverPP(order=2),
    "dpm++3m": solvers.DPMSolverPP(order=3),
    "dpm++3m-ref": solvers.DPMSolverPP(order=3, third_order_form="diffusers"),
    "unipc2": solvers.DPMSolverPP(order=2, corrector=True),
    "dpm++3m-unic": solvers.DPMSolverPP(order=3, corrector=True),
}
TIE = 1e-4
RESULTS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "experiments"
)


class Problem:
    """A velocity ``v(x, t, cond)``, an evaluation noise batch and its reference solution."""

    def __init__(self, name: str, velocity: Callable, x0: jax.Array, cond: Any, calib: tuple):
        self.name, self.velocity, self.x0, self.cond = name, velocity, x0, cond
        self.calib_x0, self.calib_cond = calib
        t0 = time.perf_counter()
        ref_solve = solvers.AdaptiveSolve("tsit5", rtol=1e-6, atol=1e-6, max_steps=100_000)
        self.ref, stats = jax.jit(lambda x, c: ref_solve(velocity, x, c))(x0, cond)
        self.ref_info = {"nfe": int(stats["nfe"]), "seconds": time.perf_counter() - t0}
        self.v_np = jax.jit(lambda x, t, c: velocity(x, jnp.full((x.shape[0],), t, x.dtype), c))

    def error(self, x) -> float:
        return float(jnp.sqrt(jnp.mean((jnp.asarray(x, jnp.float32) - self.ref) ** 2)))


def gmm_problem(name: str, dim: int, cfg_scale: float, n: int) -> Problem:
    if dim == 2:
        field = GaussianMixtureField.ring(8, radius=2.0, std=0.3, weights=np.arange(1, 9))
    else:
        field = GaussianMixtureField.random(jax.random.PRNGKey(7), 8, dim, radius=4.0, std=0.5)
    k_x, k_c, k_cx, k_cc = jax.random.split(jax.random.PRNGKey(0), 4)
    k = field.num_components
    if cfg_scale != 1.0:
        velocity = guidance.cfg_velocity(field.velocity, cfg_scale, k)
        cond = jax.random.randint(k_c, (n,), 0, k)
        calib_cond = jax.random.randint(k_cc, (256,), 0, k)
    else:
        velocity, cond, calib_cond = field.velocity, None, None
    x0 = jax.random.normal(k_x, (n, dim))
    return Problem(name, velocity, x0, cond, (jax.random.normal(k_cx, (256, dim)), calib_cond))


def model_problem(workdir: str, n: int) -> Problem:
    from flowjax.training import load_run
    from flowjax.velocity import make_velocity_fn

    _, exp, params, step = load_run(workdir)
    v = make_velocity_fn(exp.apply_fn, num_classes=exp.num_classes)

    def velocity(x, t, c):
        return v(params, x, t, c)

    k_x, k_cx = jax.random.split(jax.random.PRNGKey(1))
    shape = exp.data.element_shape
    problem = Problem(
        "model",
        velocity,
        jax.random.normal(k_x, (n, *shape)),
        None,
        (jax.random.normal(k_cx, (256, *shape)), None),
    )
    problem.checkpoint_step = step
    problem.params, problem.v_params = params, v
    return problem


# ---------------------------------------------------------------------------------------------
# flowjax
# ---------------------------------------------------------------------------------------------


def boss_costs(problem: Problem, solver_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Cost matrix and fine grid for a solver: Euler cost (N = 100) or its own step (N = 50)."""
    euler_cost = boss.uses_euler_cost(SOLVERS[solver_name])
    fine = grids.uniform_grid(100 if euler_cost else 50)
    traj = boss.reference_trajectories(
        problem.velocity, problem.calib_x0, fine, problem.calib_cond, solver=solvers.RK4()
    )
    costs = boss.jump_costs(
        problem.velocity,
        traj,
        fine,
        problem.calib_cond,
        solver=None if euler_cost else SOLVERS[solver_name],
    )
    return costs, fine


def flowjax_sweep(problem: Problem) -> dict:
    results: dict[str, dict[str, dict[int, float]]] = {}
    boss_grids: dict[str, dict[int, list[float]]] = {}
    cost_cache: dict[str, tuple] = {}
    # One jitted sampler per solver with the grid as an argument: every grid with the same
    # number of steps reuses one executable.
    runs = {
        name: jax.jit(lambda x0, c, grid, s=s: solvers.sample(s, problem.velocity, x0, grid, c))
        for name, s in SOLVERS.items()
    }
    jobs = [(s, g) for s in SOLVERS for g in GRIDS]
    for solver_name, grid_name in tqdm(jobs, desc=f"{problem.name}: flowjax", leave=False):
        solver, run = SOLVERS[solver_name], runs[solver_name]
        for nfe in NFES:
            try:
                steps = solver.num_steps_for_nfe(nfe)
            except ValueError:
                continue
            if grid_name == "boss":
                key = "euler" if boss.uses_euler_cost(solver) else solver_name
                if key not in cost_cache:
                    cost_cache[key] = boss_costs(problem, solver_name)
                costs, fine = cost_cache[key]
                if steps > len(fine) - 1:
                    continue
                idx, _ = boss.bellman_path(costs, steps)
                grid = fine[idx]
                boss_grids.setdefault(solver_name, {})[nfe] = [float(t) for t in grid]
            else:
                try:
                    grid = grids.grid_from_spec(grid_name, steps)
                except ValueError:
                    continue  # e.g. the logSNR grid needs 2 steps
            x = run(problem.x0, problem.cond, jnp.asarray(grid, jnp.float32))
            results.setdefault(solver_name, {}).setdefault(grid_name, {})[nfe] = problem.error(x)
    return {"errors": results, "boss_grids": boss_grids}


# ---------------------------------------------------------------------------------------------
# Peers (torch; optional)
# ---------------------------------------------------------------------------------------------


def peer_sweep(problem: Problem) -> tuple[dict, list[str]]:
    notes, out = [], {}
    cond = problem.cond

    def v_np(x: np.ndarray, t: float) -> np.ndarray:
        return np.asarray(problem.v_np(jnp.asarray(x, jnp.float32), float(t), cond))

    try:
        import torch
        from diffusers import (
            DPMSolverMultistepScheduler,
            FlowMatchEulerDiscreteScheduler,
            UniPCMultistepScheduler,
        )
    except ImportError as err:  # optional
        notes.append(f"diffusers peers skipped: {err}")
    else:

        def run_diffusers(sched, n):
            sched.set_timesteps(n)
            x = torch.tensor(np.asarray(problem.x0), dtype=torch.float32)
            calls = 0
            for i, timestep in enumerate(sched.timesteps):
                sigma = float(sched.sigmas[i])
                u = -torch.tensor(v_np(x.numpy(), 1.0 - sigma))  # diffusers: eps - x_data
                calls += 1
                x = sched.step(u, timestep, x).prev_sample
            return x.numpy(), calls

        flow = dict(use_flow_sigmas=True, prediction_type="flow_prediction")
        makers = {}
        for shift in (1.0, 3.0):
            makers[f"diffusers-dpm++2m(shift{shift:g})"] = lambda s=shift: (
                DPMSolverMultistepScheduler(**flow, flow_shift=s, solver_order=2)
            )
            makers[f"diffusers-dpm++3m(shift{shift:g})"] = lambda s=shift: (
                DPMSolverMultistepScheduler(**flow, flow_shift=s, solver_order=3)
            )
            makers[f"diffusers-unipc2(shift{shift:g})"] = lambda s=shift: UniPCMultistepScheduler(
                **flow, flow_shift=s, solver_order=2
            )
            makers[f"diffusers-unipc3(shift{shift:g})"] = lambda s=shift: UniPCMultistepScheduler(
                **flow, flow_shift=s, solver_order=3
            )
            makers[f"diffusers-flowmatch-euler(shift{shift:g})"] = lambda s=shift: (
                FlowMatchEulerDiscreteScheduler(shift=s)
            )
        for name, make in tqdm(makers.items(), desc=f"{problem.name}: diffusers", leave=False):
            for nfe in NFES:
                try:
                    x, calls = run_diffusers(make(), nfe)
                except Exception as err:  # noqa: BLE001 - a peer failing at some NFE is data
                    notes.append(f"{name} nfe={nfe}: {type(err).__name__}: {err}"[:200])
                    continue
                if calls == nfe:
                    out.setdefault(name, {})[nfe] = problem.error(x)
    try:
        import torch
        from flow_matching.solver import ODESolver
        from flow_matching.utils import ModelWrapper
    except ImportError as err:
        notes.append(f"flow_matching peer skipped: {err}")
    else:
        calls = [0]

        class Wrapped(ModelWrapper):
            def forward(self, x, t, **extras):
                calls[0] += 1
                return torch.tensor(v_np(x.numpy(), float(t)))

        ode = ODESolver(velocity_model=Wrapped(torch.nn.Identity()))
        for method, per_step in (("euler", 1), ("midpoint", 2), ("rk4", 4)):
            for nfe in NFES:
                if nfe % per_step:
                    continue
                calls[0] = 0
                x = ode.sample(
                    x_init=torch.tensor(np.asarray(problem.x0)),
                    step_size=per_step / nfe,
                    method=method,
                    time_grid=torch.tensor([0.0, 1.0]),
                )
                if calls[0] == nfe:
                    out.setdefault(f"flow_matching-{method}", {})[nfe] = problem.error(x.numpy())
                else:
                    notes.append(f"flow_matching-{method} nfe={nfe} used {calls[0]} NFE")
    for tol in (3e-1, 1e-1, 3e-2, 1e-2):
        solve = solvers.AdaptiveSolve("tsit5", rtol=tol, atol=tol)
        x, stats = jax.jit(lambda x, c, s=solve: s(problem.velocity, x, c))(problem.x0, cond)
        out.setdefault("diffrax-tsit5", {})[int(stats["nfe"])] = problem.error(x)
    return out, notes


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


def best_within(curves: dict[str, dict], budget: int) -> tuple[float, str]:
    best = (float("inf"), "")
    for label, curve in curves.items():
        for nfe, err in curve.items():
            if int(nfe) <= budget and err < best[0]:
                best = (err, f"{label}@{nfe}")
    return best


def summarise(fj: dict, peers: dict) -> dict:
    flat = {f"{s}/{g}": c for s, per_grid in fj["errors"].items() for g, c in per_grid.items()}
    table = {}
    for n in NFES:
        f_err, f_lab = best_within(flat, n)
        p_err, p_lab = best_within(peers, n)
        # Equal algorithms (e.g. Euler on the uniform grid) agree to float32 rounding: a
        # relative difference below 1e-4 is a tie.
        no_worse = bool(f_err <= p_err * (1 + TIE)) if np.isfinite(p_err) else True
        table[n] = {"flowjax": [f_err, f_lab], "peer": [p_err, p_lab], "no_worse": no_worse}
    ratios = {}
    for s, per_grid in fj["errors"].items():
        if "boss" in per_grid and "uniform" in per_grid:
            ratios[s] = {
                n: per_grid["uniform"][n] / per_grid["boss"][n]
                for n in per_grid["boss"]
                if n in per_grid["uniform"]
            }
    return {"best": table, "boss_over_uniform": ratios}


def timing(problem: Problem) -> dict:
    """Compile time, samples/s, and no recompilation for a new noise batch (one program)."""
    solver = SOLVERS["dpm++2m"]
    run = solvers.make_sampler(
        solver, lambda p, x, t, c: problem.v_params(p, x, t, c), grids.uniform_grid(8)
    )
    t0 = time.perf_counter()
    compiled = run.lower(problem.params, problem.x0).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(problem.params, problem.x0))
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        jax.block_until_ready(compiled(problem.params, problem.x0))
    per_batch = (time.perf_counter() - t0) / reps
    for seed in range(3):
        run(problem.params, jax.random.normal(jax.random.PRNGKey(seed), problem.x0.shape))
    return {
        "sampler": "dpm++2m, NFE 8, uniform grid",
        "batch": int(problem.x0.shape[0]),
        "compile_seconds": compile_s,
        "samples_per_second": problem.x0.shape[0] / per_batch,
        "executables_after_3_noise_batches": int(run._cache_size()),
    }


def plot(all_results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(all_results)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        res = all_results[name]
        palette = [f"C{i}" for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # C7 (grey) marks peers
        for i, (s, per_grid) in enumerate(res["flowjax"]["errors"].items()):
            best = {}
            for g, curve in per_grid.items():
                if g == "boss":
                    continue
                for n, e in curve.items():
                    best[int(n)] = min(best.get(int(n), np.inf), e)
            xs = sorted(best)
            color = palette[i % len(palette)]
            ax.plot(xs, [best[n] for n in xs], "-o", ms=2, lw=0.8, color=color, label=s)
            if "boss" in per_grid:
                xs = sorted(int(n) for n in per_grid["boss"])
                ax.plot(xs, [per_grid["boss"][n] for n in xs], ":", lw=0.8, color=color)
        for curve in res["peers"].values():
            xs = sorted(int(n) for n in curve)
            ax.plot(xs, [curve[n] for n in xs], "-", color="0.6", lw=0.6)
        ns = [int(n) for n in res["best"]]
        for who, style in (("flowjax", "k-"), ("peer", "r--")):
            ax.plot(
                ns,
                [res["best"][n][who][0] for n in res["best"]],
                style,
                lw=2.0,
                label=f"best {who} (NFE <= n)",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{name} (grey: peers, dotted: BOSS grids)", fontsize=9)
        ax.set_xlim(0.9, 20)
        ax.set_xlabel("NFE")
        ax.set_ylabel("RMS error vs reference")
    axes[0][0].legend(fontsize=7)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=None, help="trained run for the 'model' problem")
    parser.add_argument("--num_samples", type=int, default=2048)
    parser.add_argument("--no_peers", action="store_true")
    parser.add_argument("--problems", default="gmm2d,gmm64d,gmm2d_cfg4,gmm64d_cfg4,model")
    parser.add_argument(
        "--summarise_only", action="store_true", help="re-print and re-plot the stored JSON"
    )
    args = parser.parse_args()
    out = os.path.join(RESULTS, "solver_sweep.json")
    if args.summarise_only:
        with open(out, encoding="utf-8") as f:
            stored = json.load(f)
        for name, res in stored["problems"].items():
            for part in ("errors", "boss_grids"):
                res["flowjax"][part] = {
                    s: (
                        {g: {int(n): e for n, e in c.items()} for g, c in v.items()}
                        if part == "errors"
                        else {int(n): g for n, g in v.items()}
                    )
                    for s, v in res["flowjax"][part].items()
                }
            res["peers"] = {k: {int(n): e for n, e in c.items()} for k, c in res["peers"].items()}
            res.update(summarise(res["flowjax"], res["peers"]))
            print_summary(name, res)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(stored, f, indent=1)
        plot(stored["problems"], os.path.join(RESULTS, "solver_sweep.png"))
        return
    builders = {
        "gmm2d": lambda: gmm_problem("gmm2d", 2, 1.0, args.num_samples),
        "gmm64d": lambda: gmm_problem("gmm64d", 64, 1.0, args.num_samples),
        "gmm2d_cfg4": lambda: gmm_problem("gmm2d_cfg4", 2, 4.0, args.num_samples),
        "gmm64d_cfg4": lambda: gmm_problem("gmm64d_cfg4", 64, 4.0, args.num_samples),
        "model": lambda: model_problem(args.workdir, args.num_samples),
    }
    wanted = [p for p in args.problems.split(",") if p and (p != "model" or args.workdir)]
    all_results, notes = {}, []
    for name in wanted:
        problem = builders[name]()
        fj = flowjax_sweep(problem)
        peers, peer_notes = ({}, ["peers disabled"]) if args.no_peers else peer_sweep(problem)
        notes += [f"{name}: {n}" for n in peer_notes]
        all_results[name] = {
            "reference": problem.ref_info,
            "flowjax": fj,
            "peers": peers,
            **summarise(fj, peers),
        }
        if name == "model":
            all_results[name]["timing"] = timing(problem)
            all_results[name]["checkpoint_step"] = problem.checkpoint_step
        print_summary(name, all_results[name])
    os.makedirs(RESULTS, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"problems": all_results, "notes": notes, "nfes": NFES}, f, indent=1)
    plot(all_results, os.path.join(RESULTS, "solver_sweep.png"))
    print(f"wrote {out} and results/experiments/solver_sweep.png")


def print_summary(name: str, res: dict) -> None:
    print(f"\n== {name} (reference: Tsit5, {res['reference']['nfe']} NFE)")
    print(f"{'NFE':>4} | {'best flowjax':>10} {'setting':<28} | {'best peer':>10} setting")
    for n, row in res["best"].items():
        (fe, fl), (pe, pl) = row["flowjax"], row["peer"]
        flag = "" if row["no_worse"] else "  <-- peer better"
        print(f"{n:>4} | {fe:10.4g} {fl:<28} | {pe:10.4g} {pl}{flag}")
    for s, r in res["boss_over_uniform"].items():
        cells = " ".join(f"{n}:{v:.2f}" for n, v in sorted(r.items()))
        print(f"  uniform/BOSS error ratio {s:12s} {cells}")
    if "timing" in res:
        print("  timing:", res["timing"])


if __name__ == "__main__":
    main()
