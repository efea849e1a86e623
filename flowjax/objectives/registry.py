"""Build an objective from the ``objective`` section of a config.

Config fields (all overridable on the command line, e.g.
``--config.objective.time_sampler=logit_normal --config.objective.logit_normal.loc=0.4``):

- ``name``: ``"flow_matching"``.
- ``path``: ``"linear"`` | ``"cosine"`` | ``"vp"``.
- ``time_sampler``: ``"uniform"`` | ``"logit_normal"`` | ``"mode"`` | ``"cosmap"`` |
  ``"u_shaped"``; its parameters live in the sub-section of the same name
  (``objective.logit_normal.loc`` ...), and ``time_shift`` applies the resolution shift
  ``t' = t / (t + alpha (1 - t))`` on top (1.0 = none).
- ``loss``: ``"l2"`` | ``"pseudo_huber"`` with ``huber_c`` (None = ``0.00054 sqrt(d)``).
- ``label_dropout``: CFG training label dropout (needs a class-conditional data set).
"""

from __future__ import annotations

from typing import Any

from flowjax import paths, timesteps
from flowjax.objectives import flow_matching, losses

_OBJECTIVES = ("flow_matching",)


def time_sampler_from_config(cfg: Any):
    name = cfg.time_sampler
    kwargs = dict(cfg.get(name, {}) or {})
    shift = float(cfg.get("time_shift", 1.0))
    return timesteps.make_time_sampler(name, shift=shift, **kwargs)


def loss_from_config(cfg: Any):
    name = cfg.get("loss", "l2")
    if name == "pseudo_huber":
        return losses.PseudoHuber(c=cfg.get("huber_c", None))
    return losses.make_loss(name)


def make_objective(cfg: Any, *, num_classes: int | None = None):
    """Return the objective value described by ``cfg`` (an ``objective`` ConfigDict)."""
    name = cfg.get("name", "flow_matching")
    if name not in _OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {list(_OBJECTIVES)}")
    return flow_matching.FlowMatching(
        path=paths.make_path(cfg.get("path", "linear")),
        time_sampler=time_sampler_from_config(cfg),
        loss=loss_from_config(cfg),
        num_classes=num_classes,
        label_dropout=float(cfg.get("label_dropout", 0.0)),
    )
