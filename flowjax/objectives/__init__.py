"""Training objectives. Each is a frozen dataclass with ``loss_fn(params, apply_fn, batch, key)``.

Build one from a config section with :func:`make_objective`.
"""

from flowjax.objectives.base import ApplyFn, Objective
from flowjax.objectives.flow_matching import FlowMatching
from flowjax.objectives.guidance import cfg_velocity, drop_labels
from flowjax.objectives.losses import L2, PseudoHuber, make_loss
from flowjax.objectives.registry import make_objective

__all__ = [
    "ApplyFn",
    "Objective",
    "FlowMatching",
    "cfg_velocity",
    "drop_labels",
    "L2",
    "PseudoHuber",
    "make_loss",
    "make_objective",
]
