"""Learn a step grid or bespoke coefficients for a run and store them.

    flowjax calibrate --workdir=RUN --solver=unipc2 --nfe=4             # grid
    flowjax calibrate --workdir=RUN --solver=bespoke-unipc2 --nfe=4     # coefficients
    flowjax sample --workdir=RUN --solver=unipc2 --nfe=4 --grid=learned
    flowjax sample --workdir=RUN --solver=bespoke-unipc2 --nfe=4

Restores the newest checkpoint of ``RUN`` (EMA parameters; the guided field if the run's
``config.eval.cfg_scale`` asks for guidance), draws ``--calibration`` noises (and labels, for
a conditional model) from ``--seed``, solves them with the reference (``tsit5``, or
``rk4:N``), fits the grid (``--solver=NAME``) or the bespoke coefficients on top of a base
solver (``--solver=bespoke-NAME``; ``bespoke`` alone means ``bespoke-unipc2``) with Adam, and
stores the result in ``RUN/learned_schedules.json`` keyed by (kind, solver, NFE, M,
reference, seed, slack, requested initial grid, checkpoint step). A stored result is reused
unless ``--force``. Prints the calibration NFE and seconds, and the RMS error against the
reference on ``--calibration`` held-out noises, for the initial and the learned setting
(:func:`flowjax.workflows.calibrate.calibrate_run`).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from flowjax import console
from flowjax.cli import _command

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training directory (with config.json and checkpoints/).")
flags.DEFINE_string("solver", "unipc2", "Solver whose grid to learn, or bespoke-<base solver>.")
flags.DEFINE_integer("nfe", None, "Number of velocity evaluations per sample.")
flags.DEFINE_integer("calibration", 256, "Calibration noises M.")
flags.DEFINE_string("reference", "tsit5", "Reference solve: tsit5, dopri5, dopri8 or rk4:N.")
flags.DEFINE_string(
    "init",
    "best",
    "Grid spec the optimisation starts from, or 'best' (the fixed grid among uniform, "
    "diffusers, logsnr, edm, shifted,alpha=3 with the lowest calibration loss).",
)
flags.DEFINE_integer("iters", 300, "Adam steps.")
flags.DEFINE_float("lr", None, "Adam step size (default 0.05 for grids, 0.02 for bespoke).")
flags.DEFINE_float("slack", 0.0, "LD3-style slack radius (RMS units).")
flags.DEFINE_integer("seed", 0, "Calibration seed.")
flags.DEFINE_bool("force", False, "Recompute even if a stored result exists.")
flags.mark_flags_as_required(["workdir", "nfe"])


def main(argv):
    del argv
    console.setup_logging()  # WARNING unless -v, no backend-probe line
    from flowjax.workflows.calibrate import calibrate_run  # deferred: --help needs no jax

    try:
        report = calibrate_run(
            os.path.abspath(FLAGS.workdir),
            FLAGS.solver,
            FLAGS.nfe,
            calibration=FLAGS.calibration,
            reference=FLAGS.reference,
            init=FLAGS.init,
            iters=FLAGS.iters,
            lr=FLAGS.lr,
            slack=FLAGS.slack,
            seed=FLAGS.seed,
            force=FLAGS.force,
        )
    except ValueError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
    s = report["schedule"]
    print(
        f"{report['key']}: {'reused' if report['reused'] else 'computed'}; calibration "
        f"NFE={s['calibration_nfe']} in {s['seconds']:.1f}s (M={s['num_calibration']}, "
        f"ref={s['reference']}); calibration RMSE {s['initial_loss'] ** 0.5:.4g} -> "
        f"{s['loss'] ** 0.5:.4g}; held-out RMSE {report['heldout_rmse_initial']:.4g} -> "
        f"{report['heldout_rmse_learned']:.4g}"
    )
    print(f"grid: {[round(t, 4) for t in s['times']]}")
    print(f"stored in {report['store']}")


def run(argv=None):
    _command.run(main, __name__, argv)
