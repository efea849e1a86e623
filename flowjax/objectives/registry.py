"""Build an objective from the ``objective`` section of a config.

The section's keys are the objective's constructor arguments (:func:`flowjax.spec.from_section`):
only the keys a config states are passed, so every default lives once, in the objective's
dataclass, and an unknown key is an error naming the valid ones. Shared keys (each passed to
the objectives whose dataclass has that field; command-line overrides such as
``--config.objective.time_sampler=logit_normal,loc=0.4``):

- ``name``: a registered objective (:data:`OBJECTIVES`: ``"flow_matching"``, ``"meanflow"``,
  ``"reflow"``, ``"freeflow"``, ``"decomposable"``, ...).
- ``path``: ``"linear"`` | ``"cosine"`` | ``"vp"`` (a ``name,k=v`` spec).
- ``time_sampler``: the training-time law as one ``name,k=v`` spec
  (:func:`flowjax.time.laws.time_sampler_from_spec`): ``"uniform"``,
  ``"logit_normal,loc=0.4,scale=1"``, ``"u_shaped,a=4"``, ``"discrete,num_steps=2"``;
  ``shift=alpha`` applies the resolution shift ``t' = t / (t + alpha (1 - t))``
  (``"logit_normal,loc=0,shift=3"``). The former sub-sections named after a law
  (``objective.logit_normal.loc``) and ``objective.time_shift`` are errors that show the spec.
- ``loss``: ``"l2"`` | ``"pseudo_huber"`` with ``huber_c`` (None = ``0.00054 sqrt(d)``, or
  ``0.00054 d`` with ``reflow.huber_normalize``; :class:`~flowjax.objectives.losses.PseudoHuber`).
- ``label_dropout``: CFG training label dropout (needs a class-conditional data set).

Per-objective sub-sections, named after the objective:

- ``meanflow``: the fields of :class:`~flowjax.objectives.meanflow.MeanFlow` (``equal_fraction``,
  ``adaptive_p``, ``adaptive_c``, ``label_dropout_rows``, ``omega``, ``kappa``,
  ``guidance_interval``), and ``dispersive``: the fields of
  :class:`~flowjax.objectives.dispersive.Dispersive` (absent or ``weight=0``: no dispersive term).
- ``reflow``: ``lpips_time_weight`` (a :class:`~flowjax.objectives.reflow.Reflow` field) and
  three builder keys: ``huber_normalize`` (the 2-rectified-flow++ scaling of the pseudo-Huber
  loss), ``lpips_weights`` (a weight file for the LPIPS-Huber loss, None = no LPIPS) and
  ``lpips_replace_pooling``.
- ``freeflow``: the fields of :class:`~flowjax.objectives.freeflow.FreeFlow`; its
  ``delta_sampler`` and ``r_sampler`` are ``name,k=v`` specs like ``time_sampler``.
- ``decomposable``: ``num_stages``, ``stage_probs``, ``current_sampler``, ``earlier_loc``,
  ``earlier_scale``, ``thresholds``, ``phase_weights``
  (:func:`~flowjax.objectives.decomposable.decomposable_from_config`).
- ``blockwise``: ``num_segments``, ``boundaries``, ``align_weight``, ``encoder``,
  ``encoder_cache_dir``, ``frn`` (:func:`~flowjax.objectives.blockwise.build_blockwise`).
"""

from __future__ import annotations

from typing import Any, Callable

from flowjax import paths
from flowjax.objectives import blockwise, flow_matching, freeflow, losses, meanflow, reflow
from flowjax.objectives.decomposable import decomposable_from_config
from flowjax.objectives.dispersive import Dispersive
from flowjax.registry import Registry
from flowjax.spec import format_spec, from_section, interval, parse_spec, section_kwargs
from flowjax.time import laws
from flowjax.types import Objective

#: Keys of the ``objective`` section shared by the objectives (each is passed to the objectives
#: whose dataclass has the field of that name; ``huber_c`` goes into the loss).
SHARED_KEYS = ("name", "path", "time_sampler", "loss", "huber_c", "label_dropout")


def retired_key_message(key: str, section: Any = None) -> str | None:
    """The error for a retired ``objective.<key>`` (the old second form of the time sampler),
    showing the one form that replaces it; None if ``key`` is not retired."""
    if key == "time_shift":
        return (
            "objective.time_shift is retired: the shift is part of the time-sampler spec, "
            "e.g. objective.time_sampler='logit_normal,loc=0,shift=3'"
        )
    if key in laws.LAWS:
        example = format_spec(key, dict(section or {})) if section else f"{key},..."
        if key == "logit_normal" and not section:
            example = laws.SPEC_EXAMPLE
        return (
            f"objective.{key} is retired: a time sampler's arguments are part of its spec, "
            f"e.g. objective.time_sampler='{example}'"
        )
    return None


def upgrade_time_sampler(section: Any) -> dict:
    """A stored ``objective`` section (a run's ``config.json``) with the retired second form of
    the time sampler (``time_sampler="logit_normal"`` + ``logit_normal=dict(loc=...)`` +
    ``time_shift``) rewritten to the one spec form that builds the same law; other sections
    are returned unchanged (as a dict). Runs trained before the change load with it."""
    section = dict(section)
    retired = [k for k in section if k == "time_shift" or k in laws.LAWS]
    if not retired:
        return section
    name = section.get("time_sampler", None)
    kwargs = dict(section.get(name, None) or {}) if name in laws.LAWS else {}
    shift = section.get("time_shift", None)
    if shift is not None and float(shift) != 1.0:  # 1.0 was "no shift" in the retired form
        kwargs["shift"] = float(shift)
    for key in retired:
        del section[key]
    if name is not None:
        section["time_sampler"] = format_spec(name, kwargs)
    return section


def check_objective_section(cfg: Any) -> None:
    """Refuse retired and unknown keys of the ``objective`` section (one line each)."""
    for key in cfg:
        message = retired_key_message(key, cfg[key])
        if message:
            raise ValueError(message)
    valid = set(SHARED_KEYS) | set(OBJECTIVES) | {"dispersive"}
    unknown = sorted(set(cfg) - valid)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in objective; valid keys: {sorted(valid)}")


def time_sampler_from_config(cfg: Any):
    """The law of ``cfg.time_sampler`` (a ``name,k=v`` spec)."""
    return laws.time_sampler_from_spec(cfg["time_sampler"])


def loss_from_config(cfg: Any):
    """``cfg.loss`` (a ``name,k=v`` spec); ``pseudo_huber`` also reads ``huber_c`` and
    ``reflow.huber_normalize`` when they are stated."""
    name, kwargs = parse_spec(cfg.get("loss"), kind="loss", example="pseudo_huber")
    if name == "pseudo_huber":
        if cfg.get("huber_c", None) is not None:
            kwargs.setdefault("c", cfg["huber_c"])
        normalize = (cfg.get("reflow", None) or {}).get("huber_normalize", None)
        if normalize is not None:
            kwargs.setdefault("normalize", bool(normalize))
    return losses.make_loss(name, **kwargs)


def _path_from_config(cfg: Any):
    name, kwargs = parse_spec(cfg["path"], kind="path", example="cosine")
    return paths.make_path(name, **kwargs)


# The shared keys -> constructor arguments (only those the config states, for the objectives
# whose dataclass has the field).
_SHARED = {
    "path": _path_from_config,
    "time_sampler": time_sampler_from_config,
    "loss": loss_from_config,
    "label_dropout": lambda cfg: float(cfg["label_dropout"]),
}


def _shared(cls: type, cfg: Any) -> dict:
    fields = set(cls.__dataclass_fields__)
    return {k: build(cfg) for k, build in _SHARED.items() if k in fields and k in cfg}


def _section(cfg: Any, name: str) -> dict:
    return dict(cfg.get(name, None) or {})


def _dispersive(section: dict) -> Dispersive | None:
    """The dispersive term of ``objective.dispersive``; None when absent or ``weight == 0``."""
    if not section:
        return None
    term = from_section(
        Dispersive, section, where="objective.dispersive", convert={"layers": tuple}
    )
    return term if term.weight > 0.0 else None


def _meanflow(cfg: Any, num_classes: int | None):
    shared = _shared(meanflow.MeanFlow, cfg)
    mf = section_kwargs(
        meanflow.MeanFlow,
        _section(cfg, "meanflow"),
        where="objective.meanflow",
        convert={"guidance_interval": interval},
        exclude=(*shared, "num_classes", "dispersive", "time_sampler", "label_dropout"),
    )
    dispersive = _dispersive(_section(cfg, "dispersive"))
    extra = {} if dispersive is None else {"dispersive": dispersive}
    return meanflow.MeanFlow(num_classes=num_classes, **shared, **mf, **extra)


_REFLOW_BUILDER_KEYS = ("huber_normalize", "lpips_weights", "lpips_replace_pooling")


def _reflow(cfg: Any, num_classes: int | None):
    section = _section(cfg, "reflow")
    builder = {k: section.pop(k) for k in _REFLOW_BUILDER_KEYS if k in section}
    shared = _shared(reflow.Reflow, cfg)
    rf = section_kwargs(
        reflow.Reflow,
        section,
        where="objective.reflow (also: huber_normalize, lpips_weights, lpips_replace_pooling)",
        exclude=(*shared, "num_classes", "lpips", "time_sampler", "loss", "label_dropout"),
    )
    if builder.get("lpips_weights", None):
        from flowjax.evaluation.lpips import LPIPS  # deferred: only runs that configure LPIPS

        options = {}
        if "lpips_replace_pooling" in builder:
            options["replace_pooling"] = bool(builder["lpips_replace_pooling"])
        rf["lpips"] = LPIPS.from_file(builder["lpips_weights"], **options)
    return reflow.Reflow(num_classes=num_classes, **shared, **rf)


def _freeflow(cfg: Any, num_classes: int | None):
    return from_section(
        freeflow.FreeFlow,
        _section(cfg, "freeflow"),
        where="objective.freeflow",
        convert={
            "delta_sampler": laws.time_sampler_from_spec,
            "r_sampler": laws.time_sampler_from_spec,
            "correction_guidance_interval": interval,
        },
        num_classes=num_classes,
        **_shared(freeflow.FreeFlow, cfg),
    )


def _flow_matching(cfg: Any, num_classes: int | None):
    return flow_matching.FlowMatching(
        num_classes=num_classes, **_shared(flow_matching.FlowMatching, cfg)
    )


ObjectiveBuilder = Callable[[Any, "int | None"], Objective]

# name -> builder(objective config section, num_classes) -> Objective. Adding an objective is
# one file with an ``Objective`` subclass and one line here (or ``register_objective``).
OBJECTIVES: Registry[ObjectiveBuilder] = Registry(
    "objective",
    {
        "flow_matching": _flow_matching,
        "meanflow": _meanflow,
        "reflow": _reflow,
        "freeflow": _freeflow,
        "decomposable": decomposable_from_config,
        "blockwise": blockwise.build_blockwise,
    },
)


def register_objective(name: str, builder: ObjectiveBuilder) -> ObjectiveBuilder:
    """Make ``objective.name=name`` build ``builder(cfg, num_classes)`` (an :class:`Objective`);
    returns ``builder`` (usable as a decorator via ``functools.partial``)."""
    return OBJECTIVES.register(name, builder)


def objective_names() -> list[str]:
    """The registered objective names, in registration order."""
    return OBJECTIVES.names()


def make_objective(cfg: Any, *, num_classes: int | None = None) -> Objective:
    """Return the objective value described by ``cfg`` (an ``objective`` ConfigDict)."""
    check_objective_section(cfg)
    return OBJECTIVES[cfg.get("name", "flow_matching")](cfg, num_classes)
