"""Benchmark: overhead of the training loop and throughput of the jitted samplers.

    python benchmarks/train_loop.py [--steps 2000] [--batch 512]

1. Runs the main job's loop (`train_and_evaluate` on configs/toy2d_rf.py, no mid-run
   evaluation, one checkpoint at the end) for ``--steps`` steps and reports its steps/s.
2. Runs the same jitted, donated `train_step` on the same batches in a bare Python loop
   (batches pre-computed on the device) and reports the pure step time.
3. Prints the ratio loop wall time / pure step time (target <= 1.05, i.e. <= 5% overhead).
4. Compiles each sampler (Euler, Heun, midpoint, RK4) at 32 NFE for 20 000 2-D points and
   reports compile time and samples/s, and checks that new noise does not recompile.

Numbers depend on the machine's load; the ratio compares two runs in the same process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))

import toy2d_rf  # noqa: E402

from flowjax import solvers, timesteps  # noqa: E402
from flowjax.training import Experiment, train_and_evaluate  # noqa: E402


def loop_benchmark(steps: int, batch: int, rounds: int = 3) -> dict:
    config = toy2d_rf.get_config()
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
    batches = [exp.global_batch(exp.data.get_batch(k)) for k in range(steps)]
    jax.block_until_ready(step_fn(exp.init_state(), batches[0]))  # compile

    def pure_run() -> float:
        state = exp.init_state()
        start = time.perf_counter()
        for b in batches:
            state, metrics = step_fn(state, b)
        jax.block_until_ready((state, metrics))
        return time.perf_counter() - start

    # Alternate loop and bare runs and keep the fastest of each: the machine may be shared.
    loop_times, pure_times = [], []
    with tempfile.TemporaryDirectory() as workdir:
        warm = config.copy_and_resolve_references()
        warm.train.num_steps = 2
        train_and_evaluate(warm, os.path.join(workdir, "warm"), progress=False)
        for r in range(rounds):
            summary = train_and_evaluate(config, os.path.join(workdir, f"run{r}"))
            loop_times.append(summary["train_seconds_this_session"])
            pure_times.append(pure_run())
    loop_seconds, pure_seconds = min(loop_times), min(pure_times)
    return {
        "steps": steps,
        "batch": batch,
        "loop_steps_per_s": steps / loop_seconds,
        "pure_steps_per_s": steps / pure_seconds,
        "loop_over_pure": loop_seconds / pure_seconds,
        "rounds": rounds,
    }


def sampler_benchmark(n: int = 20_000, nfe: int = 32) -> list[dict]:
    config = toy2d_rf.get_config()
    exp = Experiment(config)
    params = exp.init_state().ema_params
    params = jax.tree.map(lambda p: p + 0.01, params)  # non-zero output layer

    def velocity(p, x, t, c):
        return exp.apply_fn(p, x, t, c)

    rows = []
    for name in ("euler", "heun", "midpoint", "rk4"):
        solver = solvers.make_solver(name)
        grid = timesteps.uniform_grid(solver.num_steps_for_nfe(nfe))
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
    print(f"  loop (train_and_evaluate)  {loop['loop_steps_per_s']:8.1f} steps/s")
    print(f"  pure jitted step           {loop['pure_steps_per_s']:8.1f} steps/s")
    print(f"  loop / pure wall time      {loop['loop_over_pure']:8.3f}   (target <= 1.05)")
    print("  (fastest of", loop["rounds"], "alternating rounds each)")
    print("\nsamplers, 20000 points, 32 NFE (one compiled program each; new noise reuses it):")
    for row in sampler_benchmark():
        print(
            f"  {row['solver']:9s} {row['samples_per_s']:12.0f} samples/s   first call "
            f"{row['first_call_s']:.2f} s   compiled programs: {row['compiled_programs']}"
        )


if __name__ == "__main__":
    main()
