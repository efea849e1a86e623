"""Build an objective from the ``objective`` section of a config.

Config fields (all overridable on the command line, e.g.
``--config.objective.time_sampler=logit_normal --config.objective.logit_normal.loc=0.4``):

- ``name``: ``"flow_matching"`` | ``"meanflow"`` | ``"reflow"`` | ``"freeflow"`` |
  ``"blockwise"``.
- ``path``: ``"linear"`` | ``"cosine"`` | ``"vp"``.
- ``time_sampler``: ``"uniform"`` | ``"logit_normal"`` | ``"mode"`` | ``"cosmap"`` |
  ``"u_shaped"``; its parameters live in the sub-section of the same name
  (``objective.logit_normal.loc`` ...), and ``time_shift`` applies the resolution shift
  ``t' = t / (t + alpha (1 - t))`` on top (1.0 = none).
- ``loss``: ``"l2"`` | ``"pseudo_huber"`` with ``huber_c`` (None = ``0.00054 sqrt(d)``, or
  ``0.00054 d`` with ``reflow.huber_normalize``; :class:`~flowjax.objectives.losses.PseudoHuber`).
- ``label_dropout``: CFG training label dropout (needs a class-conditional data set).
- ``meanflow``: ``equal_fraction``, ``adaptive_p``, ``adaptive_c``, ``label_dropout_rows``
  (``"leading"``: the published rule, or ``"random"``), ``omega``, ``kappa``,
  ``guidance_interval`` (:class:`~flowjax.objectives.meanflow.MeanFlow`), and ``dispersive``:
  ``weight`` (0 = off), ``layers``, ``variant``, ``tau``, ``normalize``, ``margin``
  (:class:`~flowjax.objectives.dispersive.Dispersive`). Absent fields take the dataclass's
  default.
- ``reflow``: ``huber_normalize`` (the 2-rectified-flow++ scaling: divide the pseudo-Huber
  loss by d, with c = 0.00054 d unless ``huber_c`` is set), ``lpips_weights`` (a
  weight file for the LPIPS-Huber loss, None = no LPIPS), ``lpips_time_weight``
  (``"inverse"`` or ``"one"``), ``lpips_replace_pooling``.
- ``freeflow``: ``teacher_cfg_scale``, ``correction_fraction``, ``delta_sampler`` and
  ``r_sampler`` (text specs such as ``"logit_normal,loc=-0.8,scale=1"``), ``weight_power``,
  ``weight_eps``, ``alpha``, ``correction_guidance_interval``.
- ``blockwise``: ``num_segments``, ``boundaries``, ``align_weight``, ``encoder``,
  ``encoder_cache_dir``, ``frn`` (:func:`~flowjax.objectives.blockwise.build_blockwise`).
"""

from __future__ import annotations

from typing import Any, Callable

from flowjax import paths, timesteps
from flowjax.objectives import blockwise, flow_matching, freeflow, losses, meanflow, reflow
from flowjax.objectives.base import Objective
from flowjax.objectives.dispersive import Dispersive


def time_sampler_from_config(cfg: Any):
    name = cfg.time_sampler
    kwargs = dict(cfg.get(name, {}) or {})
    shift = float(cfg.get("time_shift", 1.0))
    return timesteps.make_time_sampler(name, shift=shift, **kwargs)


def loss_from_config(cfg: Any):
    name = cfg.get("loss", "l2")
    if name == "pseudo_huber":
        normalize = bool((cfg.get("reflow", None) or {}).get("huber_normalize", False))
        return losses.PseudoHuber(c=cfg.get("huber_c", None), normalize=normalize)
    return losses.make_loss(name)


def _section(cfg: Any, name: str) -> dict:
    return dict(cfg.get(name, None) or {})


def _interval(value):
    return None if value is None else tuple(float(v) for v in value)


def _fields(section: dict, name: str, convert: dict) -> dict:
    """The entries of a config ``section`` present there, converted; the objective's
    dataclass holds the defaults of the absent ones (they live only there)."""
    unknown = sorted(set(section) - set(convert))
    if unknown:
        raise ValueError(
            f"unknown field(s) {unknown} in objective.{name}; known: {sorted(convert)}"
        )
    return {k: convert[k](v) for k, v in section.items()}


_MEANFLOW_FIELDS = dict(
    equal_fraction=float,
    adaptive_p=float,
    adaptive_c=float,
    label_dropout_rows=str,
    omega=float,
    kappa=float,
    guidance_interval=_interval,
)
_DISPERSIVE_FIELDS = dict(
    weight=float, layers=tuple, variant=str, tau=float, normalize=str, margin=float
)


def _meanflow(cfg: Any, num_classes: int | None):
    mf = _fields(_section(cfg, "meanflow"), "meanflow", _MEANFLOW_FIELDS)
    disp = _fields(_section(cfg, "dispersive"), "dispersive", _DISPERSIVE_FIELDS)
    dispersive = Dispersive(**disp) if disp.get("weight", 0.0) > 0.0 else None
    return meanflow.MeanFlow(
        time_sampler=time_sampler_from_config(cfg),
        num_classes=num_classes,
        label_dropout=float(cfg.get("label_dropout", 0.0)),
        dispersive=dispersive,
        **mf,
    )


def _reflow(cfg: Any, num_classes: int | None):
    rf = _section(cfg, "reflow")
    lpips = None
    if rf.get("lpips_weights", None):
        from flowjax.evaluation.lpips import LPIPS  # deferred: only runs that configure LPIPS

        lpips = LPIPS.from_file(
            rf["lpips_weights"], replace_pooling=bool(rf.get("lpips_replace_pooling", False))
        )
    return reflow.Reflow(
        time_sampler=time_sampler_from_config(cfg),
        loss=loss_from_config(cfg),
        num_classes=num_classes,
        label_dropout=float(cfg.get("label_dropout", 0.0)),
        lpips=lpips,
        lpips_time_weight=rf.get("lpips_time_weight", "inverse"),
    )


def _freeflow(cfg: Any, num_classes: int | None):
    ff = _section(cfg, "freeflow")
    return freeflow.FreeFlow(
        num_classes=num_classes,
        teacher_cfg_scale=float(ff.get("teacher_cfg_scale", 1.0)),
        correction_fraction=float(ff.get("correction_fraction", 0.25)),
        delta_sampler=timesteps.time_sampler_from_spec(ff.get("delta_sampler", "uniform")),
        r_sampler=timesteps.time_sampler_from_spec(
            ff.get("r_sampler", "logit_normal,loc=-0.8,scale=1")
        ),
        weight_power=float(ff.get("weight_power", 1.0)),
        weight_eps=float(ff.get("weight_eps", 1e-3)),
        alpha=float(ff.get("alpha", 1.0)),
        correction_guidance_interval=_interval(ff.get("correction_guidance_interval", (0.3, 1.0))),
    )


def _flow_matching(cfg: Any, num_classes: int | None):
    return flow_matching.FlowMatching(
        path=paths.make_path(cfg.get("path", "linear")),
        time_sampler=time_sampler_from_config(cfg),
        loss=loss_from_config(cfg),
        num_classes=num_classes,
        label_dropout=float(cfg.get("label_dropout", 0.0)),
    )


ObjectiveBuilder = Callable[[Any, "int | None"], Objective]

# name -> builder(objective config section, num_classes) -> Objective. Adding an objective is
# one file with an ``Objective`` subclass and one line here (or ``register_objective``).
OBJECTIVES: dict[str, ObjectiveBuilder] = {
    "flow_matching": _flow_matching,
    "meanflow": _meanflow,
    "reflow": _reflow,
    "freeflow": _freeflow,
    "blockwise": blockwise.build_blockwise,
}


def register_objective(name: str, builder: ObjectiveBuilder) -> ObjectiveBuilder:
    """Make ``objective.name=name`` build ``builder(cfg, num_classes)`` (an :class:`Objective`);
    returns ``builder`` (usable as a decorator via ``functools.partial``)."""
    if name in OBJECTIVES and OBJECTIVES[name] is not builder:
        raise ValueError(f"objective {name!r} is already registered")
    OBJECTIVES[name] = builder
    return builder


def objective_names() -> list[str]:
    """The registered objective names, in registration order."""
    return list(OBJECTIVES)


def make_objective(cfg: Any, *, num_classes: int | None = None) -> Objective:
    """Return the objective value described by ``cfg`` (an ``objective`` ConfigDict)."""
    name = cfg.get("name", "flow_matching")
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {objective_names()}")
    return OBJECTIVES[name](cfg, num_classes)
