"""Sample a trained run with one sampler and score it.

    flowjax sample --workdir=DIR --solver=NAME --nfe=K

Restores the newest readable checkpoint in ``DIR/checkpoints`` (the model is rebuilt from
``DIR/config.json``), samples with the EMA parameters from the evaluator's fixed noise batch
(noise at t = 0 integrated to data at t = 1), and writes into ``DIR/samples/``:

- ``<label>.png``: a scatter against held-out data (2-D) or a grid of images;
- ``<label>.npz``: the samples (``x``) and labels (``label``, conditional models);
- ``<label>.json``: the metrics of the training evaluator against the run's own held-out data
  (sliced-Wasserstein, MMD, energy distance for points; digits Fréchet distance for the bundled
  digits), the NFE, samples/s, compile time and whether a new noise batch recompiled. Where
  ``config.json`` does not rebuild the data the run was trained on (data passed in code, a
  data file that is gone or changed: its recorded sha256 differs), the metrics are skipped and
  ``metrics_skipped`` (also printed) says why.

``--grid`` is any :func:`flowjax.time.grids.grid_from_spec` spec (``uniform``, ``logsnr``,
``edm,rho=7``, ``shifted,alpha=3``, ``diffusers``, or a list of times ``0,0.5,1``) or
``boss``. ``--solver=boss`` means Euler on the BOSS grid. ``--grid=learned`` and
``--solver=bespoke-NAME`` use a learned grid / learned coefficients stored by
``flowjax calibrate`` in ``DIR/learned_schedules.json``. A BOSS schedule is computed
from a calibration batch of the model's own trajectories (``--boss_calibration`` noises on a
``--boss_fine_steps`` fine grid) once, stored in ``DIR/boss_schedules.json`` keyed by (costed
solver, K, N, M, reference integrator, checkpoint step) and reused afterwards.

A run whose objective samples with its own sampler (blockwise, decomposable) takes the
options that objective declares: ``--sampler`` is a full sampler string of
``config.eval.samplers`` form, per-segment settings joined by ``|`` (``euler:2|heun:4``) and
options after ``@`` (``euler:8@frn``, ``euler:40@tau=0.7,phases=1/1``); docs/cli.md lists
each objective's options. The report's ``inference_flops_per_sample`` counts the network
evaluations actually made (x2 under CFG).

``--height=H --width=W`` samples images of that size from a run whose network takes it (an
any-resolution transformer, at any multiple of its patch; a network whose weights fix the
size, such as the MLP, is refused); the data-based scores are then skipped (the held-out data
has the trained size) and the files are labelled ``<label>_HxW``. ``--rope=SPEC`` replaces the
network's ``model.rope`` (its rotary extrapolation rule: ``visionyarn``, ``ntk``, ``pi``,
``time_aware``, ...) for this sampling only, without retraining; a network without a ``rope``
field is refused. ``--guidance_channels=0,1,2`` guides only those channels under CFG (FiT and
Lumina-Next as released), the others taking the conditional velocity. Example::

    flowjax train --config=toy2d_rf --workdir=/tmp/toy
    flowjax sample --workdir=/tmp/toy --solver=dpm++2m --nfe=8 --grid=logsnr
    flowjax sample --workdir=/tmp/toy --solver=boss --nfe=4
    flowjax sample --workdir=/tmp/fit --nfe=32 --height=32 --width=48 --rope=visionyarn
"""

from __future__ import annotations

import sys

from absl import flags

from flowjax import console
from flowjax.cli import _command

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training directory (with config.json and checkpoints/).")
flags.DEFINE_string(
    "solver",
    "euler",
    "Solver name (euler, heun, midpoint, rk4, dpm++1, "
    "dpm++2m, dpm++3m), 'boss' (= euler on the BOSS grid) or 'bespoke-NAME' (learned "
    "coefficients on NAME, stored by flowjax calibrate).",
)
flags.DEFINE_integer("nfe", None, "Number of velocity evaluations per sample.")
flags.DEFINE_string("grid", "uniform", "Time grid spec, 'boss', or 'learned' (flowjax calibrate).")
flags.DEFINE_integer("num_samples", None, "Samples to draw (default: config.eval.num_samples).")
flags.DEFINE_integer("boss_fine_steps", 100, "BOSS fine grid size N.")
flags.DEFINE_integer("boss_calibration", 256, "BOSS calibration batch size M.")
flags.DEFINE_string("boss_reference", "euler", "Integrator of the BOSS calibration trajectories.")
flags.DEFINE_string("out", None, "Output directory (default DIR/samples).")
flags.DEFINE_string(
    "sampler",
    None,
    "A full sampler string as in config.eval.samplers (replaces --solver/--nfe/--grid): "
    "per-segment settings joined by '|' ('euler:2|heun:4') and the options the run's objective "
    "declares after '@' ('euler:8@frn').",
)
flags.DEFINE_integer(
    "height", None, "Sample images of this height (with --width); default: the run's data size."
)
flags.DEFINE_integer("width", None, "Sample images of this width (with --height).")
flags.DEFINE_string(
    "rope",
    None,
    "Rotary spec replacing the network's model.rope for this sampling, e.g. 'visionyarn' or "
    "'ntk,theta=1e4' (any-resolution transformers only; no retraining).",
)
flags.DEFINE_string(
    "guidance_channels",
    None,
    "Guide only these channels under CFG, e.g. '0,1,2' (the others take the conditional "
    "velocity); default: eval.guidance_channels of the run.",
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    console.setup_logging()  # WARNING unless -v, no backend-probe line
    from flowjax.workflows.sample import STAGES, run_sampling  # deferred: --help needs no jax

    bar = console.progress_bar(len(STAGES), desc="sample", unit="stage")
    bar.set_postfix_str(STAGES[0])

    def on_stage(name: str) -> None:
        following = STAGES.index(name) + 1
        bar.set_postfix_str(STAGES[following] if following < len(STAGES) else "done", False)
        bar.update(1)

    if FLAGS.nfe is None and FLAGS.sampler is None:
        print("ERROR: give --nfe (with --solver, --grid) or --sampler", file=sys.stderr)
        sys.exit(2)
    try:
        report = run_sampling(
            FLAGS.workdir,
            FLAGS.solver,
            FLAGS.nfe,
            FLAGS.grid,
            num_samples=FLAGS.num_samples,
            boss_fine_steps=FLAGS.boss_fine_steps,
            boss_calibration=FLAGS.boss_calibration,
            boss_reference=FLAGS.boss_reference,
            out_dir=FLAGS.out,
            on_stage=on_stage,
            spec=FLAGS.sampler,
            height=FLAGS.height,
            width=FLAGS.width,
            rope=FLAGS.rope,
            guidance_channels=FLAGS.guidance_channels,
        )
    except ValueError as err:
        bar.close()
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
    bar.close()
    if "metrics_skipped" in report:
        print(report["metrics_skipped"])
    metrics = " ".join(f"{k}={v:.4g}" for k, v in report["metrics"].items())
    flops = report.get("inference_flops_per_sample")
    if flops is not None:
        print(f"inference FLOPs per sample: {flops:.4g} (network calls {report['network_calls']})")
    print(
        f"{report['label']}: NFE={report['nfe']} samples/s={report['samples_per_second']:.1f} "
        f"compile={report['compile_seconds']:.2f}s recompiled_for_new_noise="
        f"{report['recompiled_for_new_noise']} {metrics}"
    )
    if "boss" in report:
        b = report["boss"]
        print(
            f"BOSS grid ({'reused' if b['reused'] else 'computed'}): "
            f"{[round(t, 4) for t in b['times']]} cost={b['cost']:.4g}"
        )
    print("wrote " + ", ".join(report["files"]))


def run(argv=None):
    _command.run(main, __name__, argv)
