"""Training objectives. Each is a frozen dataclass with ``loss_fn(params, apply_fn, batch, key)``.

:class:`FlowMatching` (rectified flow / CFM), :class:`MeanFlow` (average velocity, one JVP),
:class:`Reflow` (k-rectified flow, 2-rectified-flow++, distillation from pairs) and
:class:`FreeFlow` (data-free flow-map distillation), :class:`DecomposableFlowMatching`
(one network over the stages of a Laplacian pyramid) and :class:`BlockwiseFlowMatching` (one
velocity block per time segment, a shared feature network).

Build one from a config section with :func:`make_objective`.
"""

from flowjax.objectives.blockwise import BlockwiseFlowMatching
from flowjax.objectives.decomposable import DecomposableFlowMatching
from flowjax.objectives.dispersive import Dispersive
from flowjax.objectives.flow_matching import FlowMatching
from flowjax.objectives.freeflow import FreeFlow, FreeFlowNetworks
from flowjax.objectives.guidance import cfg_velocity, drop_labels
from flowjax.objectives.losses import L2, PseudoHuber, make_loss, register_loss
from flowjax.objectives.meanflow import MeanFlow, effective_guidance_scale, kappa_for_scale
from flowjax.objectives.reflow import Reflow
from flowjax.objectives.registry import (
    OBJECTIVES,
    make_objective,
    objective_names,
    register_objective,
)
from flowjax.types import ApplyFn, Objective, check_same_structure

__all__ = [
    "ApplyFn",
    "Objective",
    "check_same_structure",
    "FlowMatching",
    "MeanFlow",
    "Reflow",
    "FreeFlow",
    "FreeFlowNetworks",
    "DecomposableFlowMatching",
    "BlockwiseFlowMatching",
    "Dispersive",
    "effective_guidance_scale",
    "kappa_for_scale",
    "cfg_velocity",
    "drop_labels",
    "L2",
    "PseudoHuber",
    "make_loss",
    "register_loss",
    "OBJECTIVES",
    "objective_names",
    "register_objective",
    "make_objective",
]
