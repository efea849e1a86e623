"""Optimizer and learning-rate schedule from the ``optim`` config section (optax).

The section's keys are the fields of :class:`OptimSettings` (their defaults are stated there,
once): ``name`` (``adamw`` | ``adam``), ``lr``, ``b1``, ``b2``, ``eps``, ``weight_decay``,
``warmup_steps`` (linear from 0), ``schedule`` (``constant`` | ``cosine``; cosine decays to
``final_lr_fraction * lr`` at the last step), ``grad_clip`` (global-norm clipping; 0 = off),
``mu_dtype`` (``None`` = the parameters' dtype, or ``"bfloat16"``: Adam's first moment stored in
bf16, optax's ``mu_dtype``; the second moment stays float32, its range needs it). An unknown
key is refused with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax.numpy as jnp
import optax

from flowjax.spec import Section, from_section

MU_DTYPES = (None, "float32", "bfloat16")
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimSettings(Section):
    """The ``optim`` section. ``lr`` (the peak learning rate) has no default."""

    section: ClassVar[str] = "optim"
    lr: float
    name: str = "adamw"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    final_lr_fraction: float = 0.0
    grad_clip: float = 0.0
    mu_dtype: str | None = None


def optim_settings(cfg: OptimSettings | Any) -> OptimSettings:
    """``cfg`` as :class:`OptimSettings` (an ``optim`` section, or settings already built)."""
    if isinstance(cfg, OptimSettings):
        return cfg
    return from_section(OptimSettings, cfg, where="optim")


def make_schedule(cfg: OptimSettings | Any, total_steps: int) -> optax.Schedule:
    """The learning rate per update of the ``optim`` section ``cfg`` over ``total_steps``."""
    cfg = optim_settings(cfg)
    lr, warmup = float(cfg.lr), int(cfg.warmup_steps)
    if cfg.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        decay_steps = max(total_steps - warmup, 1)
        main = optax.cosine_decay_schedule(lr, decay_steps, alpha=float(cfg.final_lr_fraction))
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; choose 'constant' or 'cosine'")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(cfg: OptimSettings | Any, total_steps: int) -> optax.GradientTransformation:
    """The optimizer of the ``optim`` section ``cfg`` (its schedule over ``total_steps``)."""
    cfg = optim_settings(cfg)
    schedule = make_schedule(cfg, total_steps)
    kwargs = dict(b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps))
    if cfg.mu_dtype not in MU_DTYPES:
        raise ValueError(f"optim.mu_dtype={cfg.mu_dtype!r}; choose one of {MU_DTYPES}")
    kwargs["mu_dtype"] = None if cfg.mu_dtype is None else jnp.dtype(cfg.mu_dtype)
    if cfg.name == "adamw":
        opt = optax.adamw(schedule, weight_decay=float(cfg.weight_decay), **kwargs)
    elif cfg.name == "adam":
        opt = optax.adam(schedule, **kwargs)
    else:
        raise ValueError(f"unknown optimizer {cfg.name!r}; choose 'adamw' or 'adam'")
    clip = float(cfg.grad_clip)
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip > 0 else opt
