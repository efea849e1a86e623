"""Reward-guided particle search on a trained run.

    flowjax search --workdir=DIR --method=rbf --budget=NFE --reward=SPEC

Restores the newest checkpoint of ``DIR`` (EMA weights), samples ``--num_samples`` independent
problems with ``--method`` (``bon``, ``smc``, ``sop``, ``rbf``) and the ``--proposal``
(``ode``, ``sde``, ``vp-ode``, ``vp-sde``; ``--steps`` grid steps, ``g = eta (1 - t)^2``),
each spending at most ``--budget`` NFE, and writes into ``DIR/search/`` (or ``--out``)
``<method>_<proposal>_nfe<budget>.npz`` (samples, rewards), ``.json`` (NFE spent, rewards) and
``.png``. Rewards: ``toy_mode,mode=K`` (8gaussians), ``digits_class,label=K`` (digits),
``constant``, or your own ``module:function`` / ``path/to/file.py:function``; a reward declared
for other data than the run's is refused. For class-conditional runs the model samples
unconditionally (null label) unless ``--label`` is given. Example::

    flowjax train --config=toy2d_rf:8gaussians --workdir=/tmp/toy
    flowjax search --workdir=/tmp/toy --method=rbf --budget=100 --reward=toy_mode,mode=0
"""

from __future__ import annotations

import sys

from absl import flags

from flowjax import console
from flowjax.cli import _command

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training directory (config.json and checkpoints/).")
flags.DEFINE_enum("method", "rbf", ["bon", "smc", "sop", "rbf"], "Search method.")
flags.DEFINE_integer("budget", None, "NFE budget per sample.")
flags.DEFINE_string(
    "reward",
    None,
    "Reward spec, e.g. toy_mode,mode=0 or digits_class,label=3, or your own function "
    "module:function or path/to/file.py:function (R(x [B, ...]) -> [B]).",
)
flags.DEFINE_enum("proposal", "vp-sde", ["ode", "sde", "vp-ode", "vp-sde"], "Proposal.")
flags.DEFINE_integer("steps", 10, "Grid steps of one sampling pass (= its NFE).")
flags.DEFINE_float("eta", 3.0, "Diffusion scale of g(t) = eta (1 - t)^2 (SDE proposals).")
flags.DEFINE_integer("num_samples", 16, "Independent problems (one selected sample each).")
flags.DEFINE_integer("chunk", 16, "Problems per compiled batch (the progress bar's unit).")
flags.DEFINE_integer("label", None, "Class label for class-conditional runs (default: none).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_float("temperature", 1.0, "SMC: lambda of the weights exp(dR / lambda).")
flags.DEFINE_integer("width", 2, "Search over paths: copies per kept particle.")
flags.DEFINE_enum(
    "rbf_threshold",
    "running_best",
    ["running_best", "accepted"],
    "RBF: a proposal is accepted at once if it beats the best reward so far (running_best, the "
    "official rule) or the current state's reward (accepted).",
)
flags.DEFINE_string("out", None, "Output directory (default DIR/search).")
flags.mark_flags_as_required(["workdir", "budget", "reward"])


def main(argv):
    del argv
    console.setup_logging()  # WARNING unless -v, no backend-probe line
    from flowjax.workflows.search import run_search  # deferred: --help without loading jax

    options = {
        "smc": {"temperature": FLAGS.temperature},
        "sop": {"width": FLAGS.width},
        "rbf": {"threshold": FLAGS.rbf_threshold},
    }
    try:
        report = run_search(
            FLAGS.workdir,
            method=FLAGS.method,
            budget=FLAGS.budget,
            reward=FLAGS.reward,
            proposal=FLAGS.proposal,
            num_steps=FLAGS.steps,
            num_samples=FLAGS.num_samples,
            chunk=FLAGS.chunk,
            label=FLAGS.label,
            eta=FLAGS.eta,
            seed=FLAGS.seed,
            out_dir=FLAGS.out,
            method_options=options.get(FLAGS.method),
        )
    except ValueError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
    print(
        f"{report['method']}/{report['proposal']}: NFE spent {report['nfe_spent_per_sample']} "
        f"<= budget {report['budget']}, reward mean {report['reward_mean']:.4g} "
        f"(std {report['reward_std']:.3g}) over {report['num_samples']} samples"
    )
    print("wrote " + ", ".join(report["files"]) + f" in {report['out_dir']}")


def run(argv=None):
    _command.run(main, __name__, argv)
