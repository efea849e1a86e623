"""Velocity functions as the solvers see them: kind tags, classifier-free guidance, and the
velocity of a trained network bound to its guidance settings.

A velocity function is ``v(x, t, cond)`` (instantaneous: ODE solvers integrate it) or
``u(x, t, cond, t_end)`` (average velocity over ``[t, t_end]``: the ``flowmap`` solver steps
with it). :func:`instantaneous_velocity` / :func:`average_velocity` tag a function with its
kind so a solver of the other kind is refused with a clear message.

Guided velocity (docs/maths/flow_matching.md)::

    v_w(x, t, c) = v(x, t, null) + w * (v(x, t, c) - v(x, t, null))

``w = 1`` is the plain conditional model and ``w = 0`` the unconditional one; labels are
integers in ``[0, num_classes)`` and the "no class" label is ``null = num_classes``. Because
the data prediction and the score are affine in ``v``, guiding ``v`` guides them identically.
With a guidance interval ``[t_lo, t_hi]`` the scale ``w`` applies only to rows whose time lies
in the interval and ``w = 1`` elsewhere (REPA guides for noise level <= 0.7, i.e.
``t >= 0.3``).

Guiding a subset of channels (FiT, Lumina-Next as released): with ``channels = (0, 1, 2)``
only those channels (the last axis of ``x``) take ``v_w``; every other channel takes the
conditional velocity ``v(x, t, c)``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from flowjax.types import Array


def tag_velocity(fn: Callable, kind: str) -> Callable:
    """``fn`` tagged with its kind, ``"average"`` or ``"instantaneous"``."""

    def tagged(*args, **kwargs):
        return fn(*args, **kwargs)

    tagged.velocity_kind = kind
    tagged.__doc__ = fn.__doc__
    return tagged


def average_velocity(fn: Callable) -> Callable:
    """Tag ``fn(x, t, cond, t_end)`` as an average-velocity function (for :class:`FlowMap`)."""
    return tag_velocity(fn, "average")


def instantaneous_velocity(fn: Callable) -> Callable:
    """Tag ``fn(x, t, cond)`` as an instantaneous velocity (for ODE solvers)."""
    return tag_velocity(fn, "instantaneous")


def velocity_kind(fn: Callable) -> str | None:
    """``"average"``, ``"instantaneous"`` or ``None`` (untagged)."""
    return getattr(fn, "velocity_kind", None)


def diagonal_velocity(average_fn: Callable) -> Callable:
    """The instantaneous velocity ``v(x, t, cond) = u(x, t, cond, t)`` of an average-velocity
    function (MeanFlow's ``e = s`` rows train exactly this), for ODE solvers."""

    def v(x, t, cond=None):
        return average_fn(x, t, cond, t)

    return instantaneous_velocity(v)


def guidance_weight(t: Array, scale, interval: Sequence[float] | None) -> Array:
    """Per-row guidance scale: ``scale`` inside ``interval`` (inclusive), 1 outside."""
    w = jnp.broadcast_to(jnp.asarray(scale, dtype=t.dtype), t.shape)
    if interval is None:
        return w
    t_lo, t_hi = interval
    inside = (t >= t_lo) & (t <= t_hi)
    return jnp.where(inside, w, jnp.ones_like(w))


def validate_interval(interval: Sequence[float] | None) -> tuple[float, float] | None:
    if interval is None:
        return None
    if len(interval) != 2 or not 0.0 <= interval[0] <= interval[1] <= 1.0:
        raise ValueError(
            f"guidance interval must be (t_lo, t_hi) with 0 <= t_lo <= t_hi <= 1 in flowjax "
            f"time (noise at 0, data at 1); got {interval}"
        )
    return float(interval[0]), float(interval[1])


def validate_channels(channels: Sequence[int] | None) -> tuple[int, ...] | None:
    """``channels`` as a sorted tuple of distinct non-negative ints (None: every channel)."""
    if channels is None:
        return None
    if isinstance(channels, str):
        channels = [c for c in channels.split(",") if c.strip()]
    try:
        out = tuple(sorted({int(c) for c in channels}))
    except (TypeError, ValueError):
        out = ()
    if not out or min(out) < 0 or len(out) != len(tuple(channels)):
        raise ValueError(
            f"guidance channels must be distinct non-negative channel indices such as 0,1,2 "
            f"(or None for every channel); got {channels!r}"
        )
    return out


def cfg_velocity(
    velocity_fn: Callable[[Array, Array, Array], Array],
    scale: float,
    null_label: int,
    interval: Sequence[float] | None = None,
    channels: Sequence[int] | None = None,
) -> Callable[[Array, Array, Array], Array]:
    """Wrap ``v(x, t, labels)`` into the guided ``v_w(x, t, labels)``.

    The conditional and unconditional halves are evaluated in ONE batched call of
    ``velocity_fn`` on ``2B`` rows (one network evaluation per NFE, at twice the batch).
    ``scale`` may be a Python float or a traced scalar (so a sweep over scales need not
    recompile). Extra per-row arguments (the end time of an average-velocity model,
    ``u(x, t, labels, t_end)``) are passed through, duplicated like ``x``. ``channels``
    (indices on the last axis of ``x``) restricts the guidance to those channels; the others
    take the conditional velocity (None: every channel is guided).
    """
    interval = validate_interval(interval)
    channels = validate_channels(channels)

    def guided(x: Array, t: Array, labels: Array, *extra: Array) -> Array:
        if labels is None:
            raise ValueError("classifier-free guidance needs class labels; got cond=None")
        batch = x.shape[0]
        x2 = jnp.concatenate([x, x], axis=0)
        t2 = jnp.concatenate([t, t], axis=0)
        extra2 = [jnp.concatenate([a, a], axis=0) for a in extra]
        null = jnp.full_like(labels, null_label)
        v2 = velocity_fn(x2, t2, jnp.concatenate([labels, null], axis=0), *extra2)
        v_cond, v_uncond = v2[:batch], v2[batch:]
        w = guidance_weight(t, scale, interval).reshape((batch,) + (1,) * (x.ndim - 1))
        guided_v = v_uncond + w * (v_cond - v_uncond)
        if channels is None:
            return guided_v
        if channels[-1] >= x.shape[-1]:
            raise ValueError(
                f"guidance channels {list(channels)} name a channel beyond the {x.shape[-1]} "
                "channels of x"
            )
        selected = jnp.isin(jnp.arange(x.shape[-1]), jnp.asarray(channels))
        return jnp.where(selected, guided_v, v_cond)

    return guided


def make_velocity_fn(
    apply_fn,
    *,
    num_classes: int | None,
    cfg_scale: float = 1.0,
    cfg_interval=None,
    cfg_channels=None,
    average_velocity: bool = False,
):
    """``v(params, x, t, cond, **extra)`` of the network, with classifier-free guidance if asked.

    For an average-velocity network (``average_velocity``) it is
    ``u(params, x, t, cond, t_end)``, for the ``flowmap`` solver. The function is tagged with
    its kind, so a solver of the other kind is refused with a clear message.

    Keyword ``extra`` arguments go to the network (e.g. ``segment=k`` of the blockwise
    network): array values are per-row (duplicated like ``x`` for the two halves of CFG),
    other values are passed as they are. A call with ``method=...`` (another method of the
    module, e.g. ``"features"``) is never guided: it returns that method's output for the rows
    given. ``velocity.guidance`` is ``(cfg_scale, null_label)`` when guidance is on, else
    ``None`` (samplers that evaluate parts of the network themselves read it).
    ``cfg_channels`` guides only those channels of ``x`` (:func:`cfg_velocity`).
    """
    guided = num_classes is not None and cfg_scale != 1.0

    def velocity(params, x, t, cond, *t_end, **extra):
        if "method" in extra:
            return apply_fn(params, x, t, cond, **extra)
        static = {k: a for k, a in extra.items() if not isinstance(a, jax.Array)}
        names = tuple(k for k in extra if k not in static)
        n_end = len(t_end)

        def v(x_, t_, c_, *rest):
            per_row = dict(zip(names, rest[n_end:]))
            end = {"t_end": rest[0]} if n_end else {}
            return apply_fn(params, x_, t_, c_, **end, **static, **per_row)

        if guided:
            v = cfg_velocity(v, cfg_scale, num_classes, cfg_interval, cfg_channels)
        return v(x, t, cond, *t_end, *(extra[k] for k in names))

    tagged = tag_velocity(velocity, "average" if average_velocity else "instantaneous")
    tagged.guidance = (cfg_scale, num_classes) if guided else None
    return tagged
