"""Optimizer and learning-rate schedule from the ``optim`` config section (optax).

Fields: ``name`` (``adamw`` | ``adam``), ``lr``, ``b1``, ``b2``, ``eps``, ``weight_decay``,
``warmup_steps`` (linear from 0), ``schedule`` (``constant`` | ``cosine``; cosine decays to
``final_lr_fraction * lr`` at the last step), ``grad_clip`` (global-norm clipping; 0 = off),
``mu_dtype`` (``None`` = the parameters' dtype, or ``"bfloat16"``: Adam's first moment stored in
bf16, optax's ``mu_dtype``; the second moment stays float32, its range needs it).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

MU_DTYPES = (None, "float32", "bfloat16")
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("constant", "cosine")


def make_schedule(cfg: Any, total_steps: int) -> optax.Schedule:
    lr = float(cfg.lr)
    warmup = int(cfg.get("warmup_steps", 0))
    kind = cfg.get("schedule", "constant")
    if kind == "constant":
        main = optax.constant_schedule(lr)
    elif kind == "cosine":
        decay_steps = max(total_steps - warmup, 1)
        main = optax.cosine_decay_schedule(
            lr, decay_steps, alpha=float(cfg.get("final_lr_fraction", 0.0))
        )
    else:
        raise ValueError(f"unknown schedule {kind!r}; choose 'constant' or 'cosine'")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(cfg: Any, total_steps: int) -> optax.GradientTransformation:
    schedule = make_schedule(cfg, total_steps)
    name = cfg.get("name", "adamw")
    kwargs = dict(
        b1=float(cfg.get("b1", 0.9)),
        b2=float(cfg.get("b2", 0.999)),
        eps=float(cfg.get("eps", 1e-8)),
    )
    mu_dtype = cfg.get("mu_dtype", None)
    if mu_dtype not in MU_DTYPES:
        raise ValueError(f"optim.mu_dtype={mu_dtype!r}; choose one of {MU_DTYPES}")
    kwargs["mu_dtype"] = None if mu_dtype is None else jnp.dtype(mu_dtype)
    if name == "adamw":
        opt = optax.adamw(schedule, weight_decay=float(cfg.get("weight_decay", 0.0)), **kwargs)
    elif name == "adam":
        opt = optax.adam(schedule, **kwargs)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose 'adamw' or 'adam'")
    clip = float(cfg.get("grad_clip", 0.0))
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip > 0 else opt
