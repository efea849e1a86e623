"""Config validation at the boundary: every numeric field and path checked before any work.

:func:`validate_config` returns a copy of the config with every path field absolute (``~``
expanded, relative paths resolved from the current directory; URLs such as ``gs://`` kept)
and ``data.name`` the data's real name (:func:`flowjax.data.data_name`: an array file's stem,
an image folder's name), and raises :class:`~flowjax.training.faults.SetupError` with one line
naming the field, its value and what is expected (the command line prints it and exits 2). The
checks are the ones a value can fail before anything is built; a model- or data-specific error
(a mesh that does not match the devices, an unknown sampler) is still raised by the component
that knows.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

from flowjax import data as data_lib
from flowjax import parallel, solvers
from flowjax.evaluation.settings import EvalSettings, eval_settings
from flowjax.solvers.spec import objective_keywords, parse_eval_spec
from flowjax.training import optim as optim_lib
from flowjax.training.experiment import InitSettings, TrainSettings
from flowjax.training.faults import SetupError

# (section, field, minimum, what it means); None values are allowed where the config says so.
_INTEGERS = (
    ("train", "num_steps", 1, "the number of training steps"),
    ("train", "batch_size", 1, "the global batch size"),
    ("train", "log_every", 1, "steps between train-loss logs"),
    ("train", "eval_every", 0, "steps between evaluations (0: only at the end)"),
    ("train", "checkpoint_every", 0, "steps between checkpoints (0: only at the end)"),
    ("train", "keep_checkpoints", 1, "how many checkpoints are kept"),
    ("train", "grad_accum_steps", 1, "micro-batches per step"),
    ("train", "preemption_check_every", 1, "steps between SIGTERM agreements"),
    ("eval", "num_samples", 1, "evaluation samples"),
    ("eval", "num_kernel_samples", 1, "samples of the kernel metrics"),
    ("optim", "warmup_steps", 0, "warm-up steps"),
)

# Path fields: made absolute; a path that must be a directory may not be a file.
_PATHS = (
    ("data", "data_dir"),
    ("data", "pairs_dir"),
    ("eval", "feature_cache_dir"),
    ("init", "workdir"),
)
# Path fields that may name a file or a directory (the data of kind array / image_folder).
_FILE_OR_DIR_PATHS = (("data", "path"), ("data", "eval_path"))


def _get(config: Any, section: str, field: str):
    part = config.get(section, None)
    if part is None or field not in part:
        return None
    return part[field]


def _int(value: Any, name: str, minimum: int, meaning: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise SetupError(f"{name}={value!r}: expected an integer >= {minimum} ({meaning})")
    if value < minimum:
        raise SetupError(f"{name}={value!r}: must be >= {minimum} ({meaning})")
    return int(value)


def validate_config(config: Any) -> Any:
    """A validated copy of ``config`` (paths with ``~`` expanded); see the module docstring."""
    config = copy.deepcopy(config)
    for section, field, minimum, meaning in _INTEGERS:
        value = _get(config, section, field)
        if value is not None:
            _int(value, f"{section}.{field}", minimum, meaning)
    seed = config["seed"] if "seed" in config else None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SetupError(f"seed={seed!r}: expected an integer")
    decay = _get(config, "train", "ema_decay")
    if decay is not None and not (isinstance(decay, (int, float)) and 0.0 <= decay < 1.0):
        raise SetupError(f"train.ema_decay={decay!r}: expected a number in [0, 1)")
    _check_sections(config)
    _check_optim(optim_lib.OptimSettings.from_config(config))
    samplers = _get(config, "eval", "samplers")
    if samplers is not None:
        _check_samplers(samplers)
    for section, field in _PATHS + _FILE_OR_DIR_PATHS:
        value = _get(config, section, field)
        if not value:
            continue
        if not isinstance(value, str):
            raise SetupError(f"{section}.{field}={value!r}: expected a path")
        path = _absolute(value)
        if (section, field) in _PATHS and os.path.isfile(path):
            raise SetupError(f"{section}.{field}={value}: is a file; pass a directory")
        with config.unlocked() if hasattr(config, "unlocked") else _nothing():
            config[section][field] = path
    if config.get("data", None) is not None and "name" in config.data:
        with config.unlocked() if hasattr(config, "unlocked") else _nothing():
            config.data["name"] = data_lib.data_name(config.data)
    return config


# (field, lowest, highest, lowest allowed, highest allowed, what it is) of the ``optim`` section
# (:mod:`flowjax.training.optim`); a bound of None is open.
_OPTIM_NUMBERS = (
    ("lr", 0.0, None, True, False, "the peak learning rate; 0 freezes the weights"),
    ("b1", 0.0, 1.0, True, False, "Adam's first-moment decay"),
    ("b2", 0.0, 1.0, True, False, "Adam's second-moment decay"),
    ("eps", 0.0, None, False, False, "Adam's denominator offset"),
    ("weight_decay", 0.0, None, True, False, "AdamW's decoupled weight decay"),
    ("grad_clip", 0.0, None, True, False, "the global gradient-norm bound; 0 turns it off"),
    ("final_lr_fraction", 0.0, 1.0, True, True, "the cosine schedule's last rate over lr"),
)


def _interval(lo: float, hi: float | None, lo_closed: bool, hi_closed: bool) -> str:
    if hi is None:
        return f"{'>=' if lo_closed else '>'} {lo:g}"
    return f"in {'[' if lo_closed else '('}{lo:g}, {hi:g}{']' if hi_closed else ')'}"


def _check_sections(config: Any) -> None:
    """Each declared section of the training job builds: no unknown key, no missing one."""
    for settings in (
        TrainSettings,
        optim_lib.OptimSettings,
        InitSettings,
        parallel.MeshSettings,
        parallel.ShardingSettings,
    ):
        try:
            settings.from_config(config)
        except ValueError as err:
            raise SetupError(str(err)) from None
    if config.get("eval", None) is not None:
        _eval_settings(config)


def _eval_settings(config: Any) -> EvalSettings:
    """The declared ``eval`` section (:class:`flowjax.evaluation.settings.EvalSettings`), or a
    :class:`SetupError` naming the unknown / missing key."""
    try:
        return eval_settings(config)
    except ValueError as err:
        raise SetupError(str(err)) from None


def _check_optim(optim: optim_lib.OptimSettings) -> None:
    """The optimizer and schedule fields: each number in its range, each name a known one."""
    for field, lo, hi, lo_closed, hi_closed, meaning in _OPTIM_NUMBERS:
        value = getattr(optim, field)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        inside = (
            number
            and math.isfinite(value)
            and (value >= lo if lo_closed else value > lo)
            and (hi is None or (value <= hi if hi_closed else value < hi))
        )
        if not inside:
            raise SetupError(
                f"optim.{field}={value!r}: expected a finite number "
                f"{_interval(lo, hi, lo_closed, hi_closed)} ({meaning})"
            )
    for field, choices in (
        ("name", optim_lib.OPTIMIZERS),
        ("schedule", optim_lib.SCHEDULES),
        ("mu_dtype", optim_lib.MU_DTYPES),
    ):
        if getattr(optim, field) not in choices:
            raise SetupError(f"optim.{field}={getattr(optim, field)!r}: choose one of {choices}")


# The evaluation's two-sample estimators that need two examples of each side: the kernel
# distances of points (MMD's unbiased form, the energy distance) and the covariance of a
# Frechet distance (FID's Inception features).
MIN_EVAL_EXAMPLES = 2


def check_data_size(data: Any, config: Any) -> None:
    """Refuse (:class:`SetupError`) data too small to train on or for the evaluation's
    estimators: no training example; for points (kernel distances) or with FID against the
    held-out data's own statistics, fewer than :data:`MIN_EVAL_EXAMPLES` held-out examples, or
    ``eval.num_samples`` / ``eval.num_kernel_samples`` below it. Checked at set-up: such a run
    used to train to the end and then fail in its final evaluation."""
    name = getattr(data, "name", type(data).__name__)
    train = getattr(data, "num_examples", None)
    if train is not None and int(train) < 1:
        raise SetupError(f"the data {name!r} has no training example; add examples")
    settings = _eval_settings(config)
    fid = bool(settings.inception_weights)
    points = getattr(data, "kind", None) == "points"
    needs = ["eval.num_samples"] * (points or fid) + ["eval.num_kernel_samples"] * points
    for field in needs:
        value = int(getattr(settings, field.split(".")[1]))
        if value < MIN_EVAL_EXAMPLES:
            raise SetupError(
                f"{field}={value}: must be >= {MIN_EVAL_EXAMPLES} for "
                f"{'the kernel distances of points' if points else 'a covariance (FID)'}"
            )
    if not (points or (fid and not settings.fid_stats)):
        return
    if not data_lib.has_eval_data(data):
        return
    held = len(data.eval_array(MIN_EVAL_EXAMPLES)[0])
    if held < MIN_EVAL_EXAMPLES:
        where = getattr(data, "path", None)
        raise SetupError(
            f"the data {name!r}{f' ({where})' if where else ''} has {held} held-out "
            f"example(s); the evaluation needs at least {MIN_EVAL_EXAMPLES}: add examples, "
            f"raise data.eval_fraction or give data.eval_path"
        )


def check_sampler_options(config: Any, objective: Any) -> None:
    """Refuse (:class:`SetupError`) an ``eval.samplers`` string whose ``@`` options or ``a|b``
    segments the run's objective does not declare (:attr:`flowjax.types.Objective.
    sampler_options`). Called at set-up once the objective is built, before anything is
    written: the grammar itself is checked earlier, by :func:`validate_config`."""
    for spec in _eval_settings(config).samplers:
        try:
            objective_keywords(objective, *parse_eval_spec(spec))
        except ValueError as err:
            raise SetupError(f"eval.samplers: {err}") from None


def _absolute(path: str) -> str:
    """``path`` absolute (``~`` expanded, relative to the current directory); a URL
    (``gs://bucket/dir``) unchanged."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def _check_samplers(samplers: Any) -> None:
    if isinstance(samplers, str) or not hasattr(samplers, "__iter__"):
        raise SetupError(
            f"eval.samplers={samplers!r}: expected a tuple of 'solver:nfe' strings, e.g. "
            "\"('euler:4','rk4:64')\""
        )
    specs = list(samplers)
    if not specs:
        raise SetupError("eval.samplers is empty: list at least one 'solver:nfe'")
    for spec in specs:
        try:
            pieces, _ = parse_eval_spec(spec)  # 'a|b' per segment, '@frn' options: blockwise
            for name, nfe, _ in pieces:
                solver = solvers.make_solver(name)
                if nfe < 1:
                    raise ValueError(f"eval sampler {spec!r}: the NFE must be >= 1")
                solver.num_steps_for_nfe(nfe)
        except (ValueError, KeyError) as err:
            raise SetupError(f"eval.samplers: {str(err).strip(chr(39))}") from None


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
