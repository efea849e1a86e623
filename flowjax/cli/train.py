"""Train (or resume) a run described by a config; evaluate it.

    flowjax train --config=toy2d_rf --workdir=DIR

``--config`` takes a bundled config by name (``toy2d_rf``, ``toy2d_reflow:2rf``) or a config
file by path (``configs/toy2d_rf.py``, ``my_config.py:variant``); see
:mod:`flowjax.config_files`.

Any config field can be overridden on the command line, e.g.
``--config.optim.lr=3e-4 --config.objective.time_sampler=logit_normal,loc=0.4``; a field that does
not exist is an error. Re-running the same command resumes from the newest checkpoint in
``DIR``. SIGTERM / SIGINT save a checkpoint and exit 0.

A config that differs from the one the run in ``DIR`` was trained with is refused (exit 2,
listing the changed fields) unless only fields that cannot change the state differ
(evaluation, logging, checkpoint cadence, ``num_steps`` upwards): pass
``--allow_config_change=optim.lr`` (or ``--config_change_ok``) for an intended change. A
second process on the same ``DIR`` stops at once (exit 2, naming the holder). A run none of
whose checkpoints passes verification is refused (exit 2) unless ``--start_over`` is given.
Every user mistake is one line on stderr and exit code 2; a failed checkpoint save is one line
and exit code 1.

Multi-host: pass ``--coordinator_address``, ``--num_processes`` and ``--process_id``, or
``--distributed`` on a TPU pod slice / SLURM / Open MPI job (where
``jax.distributed.initialize()`` finds the cluster by itself), and launch the same command on
every host.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import flags
from ml_collections import config_flags

from flowjax import config_files, console
from flowjax.cli import _command

_DEFAULT_CONFIG = os.path.join(config_files.CONFIG_DIR, "toy2d_rf.py")

# The arguments the config's ``--config.FIELD=VALUE`` overrides are read from: the argv being
# parsed (set by _parse_config), not sys.argv when this module is imported (ml_collections
# would otherwise load the default config with sys.argv's overrides at import, and a bad
# override would be a traceback there).
_ARGV: list[str] = [""]

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    _DEFAULT_CONFIG,
    "A bundled config name (toy2d_rf, toy2d_reflow:2rf) or a path to a config file.",
    lock_config=True,
    sys_argv=_ARGV,
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host only).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host only).")
flags.DEFINE_integer("process_id", None, "Index of this process (multi-host only).")
flags.DEFINE_bool(
    "distributed",
    False,
    "Call jax.distributed.initialize() with the cluster found in the environment (Cloud TPU "
    "pod slices, SLURM, Open MPI); implied by --coordinator_address / --num_processes.",
)
flags.DEFINE_list(
    "allow_config_change",
    [],
    "Config fields (or sections, e.g. optim) allowed to differ from the run being resumed in "
    "--workdir (an intended change, e.g. a fine-tune with another learning rate).",
)
flags.DEFINE_bool(
    "config_change_ok",
    False,
    "Resume the run in --workdir whatever fields of the config changed (see "
    "--allow_config_change).",
)
flags.DEFINE_bool(
    "start_over",
    False,
    "When every checkpoint in --workdir fails verification (each is moved to "
    "checkpoints.unreadable/), train again from step 0 there instead of refusing; a usable "
    "checkpoint is resumed either way.",
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    console.setup_logging()  # WARNING unless -v, no backend-probe line
    import jax  # deferred: flags parse and --help answer without loading jax

    if FLAGS.coordinator_address or FLAGS.num_processes:
        from flowjax.parallel import multihost

        multihost.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    elif FLAGS.distributed:
        jax.distributed.initialize()
    from flowjax.training import (
        CheckpointSaveError,
        NonFiniteLossError,
        SetupError,
        train_and_evaluate,
    )

    config = FLAGS.config
    workdir = os.path.abspath(os.path.expanduser(FLAGS.workdir))
    allow = True if FLAGS.config_change_ok else tuple(FLAGS.allow_config_change)
    logging.info("devices: %s", jax.devices())
    try:
        summary = train_and_evaluate(
            config, workdir, allow_config_change=allow, start_over=FLAGS.start_over
        )
    except NonFiniteLossError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(1)
    except CheckpointSaveError as err:
        print(f"ERROR: {err}", file=sys.stderr, flush=True)
        os._exit(1)  # no interpreter teardown: a failed async save's threads may not join
    except SetupError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
    if jax.process_index() == 0:
        if summary.get("preempted"):
            print(f"preempted: checkpoint saved at step {summary['step']} in {workdir}")
        else:
            print(
                json.dumps(
                    {  # final: EMA weights; initial (a fine-tune) or untrained: the start
                        k: summary[k]
                        for k in ("final", "final_raw", "initial", "untrained")
                        if k in summary
                    },
                    indent=1,
                )
            )
            print(f"wrote {os.path.join(workdir, 'summary.json')} and samples.png")


def _resolve_config_arg(argv: list[str]) -> list[str]:
    """``--config=NAME[:arg]`` -> ``--config=<bundled file>[:arg]``; paths pass unchanged.
    Without ``--config``, the default config is named first (its overrides follow it)."""
    out = list(argv)
    if not any(a == "--config" or a.startswith("--config=") for a in out[1:]):
        out.insert(1, "--config=" + _DEFAULT_CONFIG)
    for i, a in enumerate(out):
        if a.startswith("--config="):
            out[i] = "--config=" + config_files.resolve(a[len("--config=") :])
        elif a == "--config" and i + 1 < len(out):
            out[i + 1] = config_files.resolve(out[i + 1])
    return out


def _parse_flags(argv):
    """Parse flags; a bad config or ``--config.*`` override is reported in one line."""
    try:
        argv = _resolve_config_arg(argv)
    except FileNotFoundError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        return _parse_config(argv)
    except OSError as err:
        print(
            f"ERROR: {str(err).splitlines()[0]}: {str(err).splitlines()[-1].strip()}",
            file=sys.stderr,
        )
        sys.exit(2)
    except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as err:
        message = str(err).strip("'\"").replace("\\n", " ").replace("\\'", "'")
        retired = _retired_override(argv)
        print(f"ERROR: bad command-line flag: {retired or message}", file=sys.stderr)
        sys.exit(2)


def _parse_config(argv: list[str]) -> list[str]:
    """``FLAGS(argv)`` and the config loaded; an error raised by the config file's own code (a
    syntax error, a ``get_config`` that fails) is one line naming its file and line, exit 2."""
    try:
        _ARGV[:] = argv
        remaining = FLAGS(argv)
        FLAGS.config.keys()  # a config file that fails to load is reported here, not mid-run
        return remaining
    except Exception as err:
        given = [b for a, b in zip(argv, argv[1:] + [""]) if a == "--config"] + [
            a[len("--config=") :] for a in argv if a.startswith("--config=")
        ]
        path = given[-1].partition(":")[0] if given else _DEFAULT_CONFIG
        located = config_files.config_file_error(err, path)
        if located is None:
            raise
        print(f"ERROR: config file {located}", file=sys.stderr)
        sys.exit(2)


def _retired_override(argv: list[str]) -> str | None:
    """The message for a ``--config.objective.<key>`` override of a retired key (the former
    second form of the time sampler, e.g. ``--config.objective.logit_normal.loc=0.4``)."""
    from flowjax.objectives.registry import retired_key_message  # deferred: loads jax
    from flowjax.spec import parse_value

    for a in argv:
        if a.startswith("--config.objective."):
            key, _, value = a[len("--config.objective.") :].partition("=")
            name, _, field = key.partition(".")
            found = retired_key_message(name, {field: parse_value(value)} if field else None)
            if found:
                return found
    return None


def run(argv=None):
    _command.run(main, __name__, argv, flags_parser=_parse_flags)
