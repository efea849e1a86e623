"""Write (noise, sample) pairs of a teacher run for reflow.

    flowjax reflow --teacher=DIR --out=PAIRS --num_pairs=N

Restores the teacher's newest checkpoint (EMA weights; the model is rebuilt from
``DIR/config.json``), draws noise ``z0 ~ N(0, I)`` (noise at t = 0) and, for class-conditional
teachers, uniform labels, integrates the teacher's ODE to t = 1 with any flowjax solver (or the
adaptive diffrax reference, ``--solver=tsit5``, rectified flow's RK45-style tolerance 1e-5),
with the teacher config's CFG scale unless ``--cfg_scale`` is given, and writes the pairs
``(x0 = z0, x1 = z1[, label])`` as a tfds array_record data set
(:func:`flowjax.workflows.reflow.generate_pairs`).

Generation is sharded and resumable: re-running an interrupted command writes exactly the
missing shards, and the result is the same, byte for byte, as an uninterrupted run. Several
hosts can share the work without any collective: run the same command with
``--process_index=i --process_count=P`` on each (a shared POSIX directory), then once
``--finalize`` (or let process 0 finish last). Then train on the pairs, starting from the
teacher (k-rectified flow; one round = 2-RF)::

    flowjax train --config=toy2d_rf --workdir=/tmp/toy
    flowjax reflow --teacher=/tmp/toy --out=/tmp/toy_pairs --num_pairs=100000
    flowjax train --config=toy2d_reflow --workdir=/tmp/toy_2rf \\
        --config.data.pairs_dir=/tmp/toy_pairs --config.init.workdir=/tmp/toy
"""

from __future__ import annotations

import sys

from absl import flags

from flowjax import console
from flowjax.cli import _command

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "teacher", None, "Training directory of the teacher (config.json, checkpoints/)."
)
flags.DEFINE_string("out", None, "Directory of the pair data set (created or resumed).")
flags.DEFINE_integer("num_pairs", None, "Number of (noise, sample) pairs.")
flags.DEFINE_string("solver", "rk4", "A flowjax solver name, or tsit5/dopri5/dopri8 (adaptive).")
flags.DEFINE_integer("nfe", 64, "Velocity evaluations per pair (fixed-grid solvers).")
flags.DEFINE_string("grid", "uniform", "Time grid spec of a fixed-grid solver.")
flags.DEFINE_float("rtol", 1e-5, "Relative tolerance of an adaptive solver.")
flags.DEFINE_float("atol", 1e-5, "Absolute tolerance of an adaptive solver.")
flags.DEFINE_float("cfg_scale", None, "CFG scale of a conditional teacher (default: its config).")
flags.DEFINE_integer("shard_size", 4096, "Pairs per array_record shard (the unit of resumption).")
flags.DEFINE_integer("chunk", 1024, "Pairs integrated per compiled call.")
flags.DEFINE_integer("seed", 0, "Seed of the noise and labels.")
flags.DEFINE_integer("process_index", 0, "This host's index when several hosts share the work.")
flags.DEFINE_integer("process_count", 1, "Number of hosts sharing the work.")
flags.DEFINE_bool("finalize", False, "Only write the tfds metadata of a finished shard set.")


def main(argv):
    del argv
    console.setup_logging()  # WARNING unless -v, no backend-probe line
    try:
        if FLAGS.finalize:
            if not FLAGS.out:
                raise ValueError("--finalize needs --out")
            from flowjax.data import pairs  # deferred: --help and flag errors need no jax

            print(f"finalized {pairs.finalize_pairs(FLAGS.out)}")
            return
        for name in ("teacher", "out", "num_pairs"):
            if getattr(FLAGS, name) is None:
                raise ValueError(f"--{name} is required")
        from flowjax.workflows.reflow import generate_pairs  # deferred, as above

        report = generate_pairs(
            FLAGS.teacher,
            FLAGS.out,
            num_pairs=FLAGS.num_pairs,
            solver=FLAGS.solver,
            nfe=FLAGS.nfe,
            grid=FLAGS.grid,
            cfg_scale=FLAGS.cfg_scale,
            shard_size=FLAGS.shard_size,
            chunk=FLAGS.chunk,
            seed=FLAGS.seed,
            rtol=FLAGS.rtol,
            atol=FLAGS.atol,
            process_index=FLAGS.process_index,
            process_count=FLAGS.process_count,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
    state = "complete" if report["complete"] else "this host's shards written; not yet complete"
    print(f"{report['out_dir']}: {state} ({report['seconds']:.1f} s)")


def run(argv=None):
    _command.run(main, __name__, argv)
