"""The training system: state, pure step, optimizer, EMA, orbax checkpoints and the loop."""

from flowjax.training.checkpoint import Checkpointer, abstract_like
from flowjax.training.experiment import Experiment, load_run, pretrained_params
from flowjax.training.faults import (
    CheckpointMismatchError,
    CheckpointSaveError,
    ConfigChangedError,
    NonFiniteLossError,
    NoUsableCheckpointError,
    PreemptionGuard,
    SetupError,
    WorkdirLockedError,
)
from flowjax.training.loop import train_and_evaluate
from flowjax.training.optim import make_optimizer, make_schedule
from flowjax.training.restore import run_data
from flowjax.training.state import TrainState
from flowjax.training.step import make_train_step
from flowjax.training.writers import MetricWriter, read_metrics

__all__ = [
    "Checkpointer",
    "abstract_like",
    "NonFiniteLossError",
    "PreemptionGuard",
    "SetupError",
    "ConfigChangedError",
    "WorkdirLockedError",
    "CheckpointMismatchError",
    "CheckpointSaveError",
    "NoUsableCheckpointError",
    "Experiment",
    "load_run",
    "pretrained_params",
    "run_data",
    "train_and_evaluate",
    "make_optimizer",
    "make_schedule",
    "TrainState",
    "make_train_step",
    "MetricWriter",
    "read_metrics",
]
