"""Benchmark: overhead of the training loop and throughput of the jitted samplers.

    python benchmarks/train_loop.py [--steps 2000] [--batch 512]

1. Runs the main job's loop (`train_and_evaluate` on configs/toy2d_rf.py, no mid-run
   evaluation, one checkpoint at the end) for ``--steps`` steps and reports its steps/s, both
   in steady state (the loop's own per-interval timings in ``metrics.jsonl``, which leave out
   the first interval, where the step compiles) and over the whole session (compilation and
   the final checkpoint included).
2. Runs the same jitted, donated `train_step` on the same batches in a bare Python loop and
   reports the pure step time (the toy data is generated inside the step in both).
3. Prints the ratio loop time / pure step time for the same number of steps (target <= 1.05,
   i.e. <= 5% overhead in steady state).
4. Compiles each sampler (Euler, Heun, midpoint, RK4) at 32 NFE for 20 000 2-D points and
   reports compile time and samples/s, and checks that new noise does not recompile.

Numbers depend on the machine's load; the ratio compares two runs in the same process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time

import jax

from flowjax import solvers
from flowjax.config_files import load_config
from flowjax.time import grids
from flowjax.training import Experiment, train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loop_benchmark(steps: int, batch: int, rounds: int = 3) -> dict:
    config = load_config("toy2d_rf")
    config.train.num_steps = steps
    config.train.batch_size = batch
    config.train.eval_every = 0
    config.train.checkpoint_every = 0
    config.train.progress = True
    config.eval.samplers = ("euler:2",)
    config.eval.num_samples = 256
    config.eval.num_kernel_samples = 256
    exp = Experiment(config)
    step_fn = exp.jit_train_step()
    # The toy source generates its batches inside the jitted step (``Experiment.fuse_data``), so
    # these are ``None`` placeholders; for a tfds source they are pre-loaded device batches.
    batches = list(itertools.islice(exp.batches(0), steps))
    jax.block_until_ready(step_fn(exp.init_state(), batches[0]))  # compile

    def pure_run(num: int) -> float:
        state = exp.init_state()
        start = time.perf_counter()
        for b in batches[:num]:
            state, metrics = step_fn(state, b)
        jax.block_until_ready((state, metrics))
        return time.perf_counter() - start

    def steady(workdir: str) -> tuple[int, float]:
        """Steps and seconds of the loop's logged intervals (after the compiling one)."""
        log_every = int(config.train.log_every)
        num, seconds = 0, 0.0
        with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
            for line in f:
                rate = json.loads(line).get("perf/examples_per_s")
                if rate:
                    num += log_every
                    seconds += log_every * batch / rate
        return num, seconds

    # Alternate loop and bare runs and keep the fastest of each: the machine may be shared.
    totals, steadies, pures, pures_steady = [], [], [], []
    with tempfile.TemporaryDirectory() as workdir:
        warm = config.copy_and_resolve_references()
        warm.train.num_steps = 2
        train_and_evaluate(warm, os.path.join(workdir, "warm"), progress=False)
        for r in range(rounds):
            run_dir = os.path.join(workdir, f"run{r}")
            summary = train_and_evaluate(config, run_dir)
            totals.append(summary["train_seconds_this_session"])
            num_steady, seconds = steady(run_dir)
            steadies.append(seconds)
            pures.append(pure_run(steps))
            pures_steady.append(pure_run(num_steady))
    return {
        "steps": steps,
        "batch": batch,
        "steady_steps": num_steady,
        "loop_steps_per_s": num_steady / min(steadies),
        "pure_steps_per_s": num_steady / min(pures_steady),
        "loop_over_pure": min(steadies) / min(pures_steady),
        "session_steps_per_s": steps / min(totals),
        "session_over_pure": min(totals) / min(pures),
        "rounds": rounds,
    }


def sampler_benchmark(n: int = 20_000, nfe: int = 32) -> list[dict]:
    config = load_config("toy2d_rf")
    exp = Experiment(config)
    params = exp.init_state().ema_params
    params = jax.tree.map(lambda p: p + 0.01, params)  # non-zero output layer

    def velocity(p, x, t, c):
        return exp.apply_fn(p, x, t, c)

    rows = []
    for name in ("euler", "heun", "midpoint", "rk4"):
        solver = solvers.make_solver(name)
        grid = grids.uniform_grid(solver.num_steps_for_nfe(nfe))
        run = solvers.make_sampler(solver, velocity, grid)
        x0 = jax.random.normal(jax.random.PRNGKey(0), (n, 2))
        start = time.perf_counter()
        jax.block_until_ready(run(params, x0))
        compile_s = time.perf_counter() - start
        reps = 3
        start = time.perf_counter()
        for r in range(reps):
            x0 = jax.random.normal(jax.random.PRNGKey(r + 1), (n, 2))
            jax.block_until_ready(run(params, x0))
        per_run = (time.perf_counter() - start) / reps
        rows.append(
            {
                "solver": name,
                "nfe": nfe,
                "samples_per_s": n / per_run,
                "first_call_s": compile_s,
                "compiled_programs": run._cache_size(),
            }
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    loop = loop_benchmark(args.steps, args.batch)
    print(f"\ntraining loop, {loop['steps']} steps of batch {loop['batch']} (toy MLP, CPU):")
    print(f"  loop (train_and_evaluate)  {loop['loop_steps_per_s']:8.1f} steps/s (steady state)")
    print(f"  pure jitted step           {loop['pure_steps_per_s']:8.1f} steps/s")
    print(f"  loop / pure wall time      {loop['loop_over_pure']:8.3f}   (target <= 1.05)")
    print(
        f"  whole session              {loop['session_steps_per_s']:8.1f} steps/s, "
        f"{loop['session_over_pure']:.3f} x pure (compile + final checkpoint included)"
    )
    print("  (fastest of", loop["rounds"], "alternating rounds each)")
    print("\nsamplers, 20000 points, 32 NFE (one compiled program each; new noise reuses it):")
    for row in sampler_benchmark():
        print(
            f"  {row['solver']:9s} {row['samples_per_s']:12.0f} samples/s   first call "
            f"{row['first_call_s']:.2f} s   compiled programs: {row['compiled_programs']}"
        )


if __name__ == "__main__":
    main()
