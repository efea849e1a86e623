"""Straightness of sampled ODE trajectories (Liu et al., "Flow Straight and Fast", 2022).

Time convention: noise at t=0, data at t=1; a trajectory runs from ``Z_0`` (noise) to ``Z_N``.

The straightness of a flow is

    S(Z) = int_0^1 E || (Z_1 - Z_0) - dZ_t/dt ||^2 dt,

which is 0 iff every trajectory is a straight line traversed at constant speed (then one Euler
step is exact). :func:`straightness` estimates it from a discretised trajectory by comparing
each step's finite-difference velocity with the chord velocity of the whole path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["straightness"]


def straightness(trajectory, times, *, time_weighted: bool = False) -> jax.Array:
    """Discrete straightness of trajectories ``Z_0..Z_N`` on the time grid ``t_0..t_N``.

    .. code-block:: text

        v_k   = (Z_{k+1} - Z_k) / (t_{k+1} - t_k)          step velocity, k = 0..N-1
        v_bar = (Z_N - Z_0) / (t_N - t_0)                   chord velocity
        S_hat = mean_k mean_elements (v_k - v_bar)^2

    where ``mean_elements`` averages over the batch and every data element. For a uniform grid
    on ``[0, 1]`` this is the rectified-flow estimator (``v_bar = Z_N - Z_0``). It is 0 for
    straight, constant-speed paths, whatever the grid, and positive otherwise.

    With ``time_weighted=True`` the mean over steps is weighted by ``(t_{k+1} - t_k) /
    (t_N - t_0)``, i.e. it is the Riemann sum of ``(1/T) int || v(t) - v_bar ||^2 dt`` for the
    piecewise-linear path; on a uniform grid both forms coincide.

    Args:
      trajectory: ``[N + 1, B, ...]`` states at the grid times (``N >= 1``), real floats; e.g.
        the stacked states of an Euler run.
      times: ``[N + 1]`` strictly monotone times (increasing for noise -> data).
      time_weighted: weight steps by their length (see above).

    Returns:
      A non-negative 0-d array in the floating dtype of ``trajectory`` (at least float32).
      Jit-friendly (the monotonicity check is skipped for traced ``times``).
    """
    z = jnp.asarray(trajectory)
    t = jnp.asarray(times)
    if z.ndim < 2:
        raise ValueError(
            f"trajectory must have shape [N + 1, B, ...] (time first, then batch), got {z.shape}."
        )
    if z.shape[0] < 2:
        raise ValueError(f"trajectory needs at least 2 time points, got {z.shape[0]}.")
    if t.ndim != 1 or t.shape[0] != z.shape[0]:
        raise ValueError(
            f"times must have shape [N + 1] = [{z.shape[0]}] matching trajectory.shape[0], "
            f"got {t.shape}."
        )
    dtype = jnp.promote_types(jnp.result_type(z, t), jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"trajectory and times must be real-valued, got dtype {dtype}.")
    if not isinstance(t, jax.core.Tracer):
        dt_np = np.diff(np.asarray(t, dtype=np.float64))
        if not (np.all(dt_np > 0) or np.all(dt_np < 0)):
            raise ValueError(
                "times must be strictly monotone (no repeated or out-of-order entries); got "
                f"{np.asarray(t)}."
            )
    z = z.astype(dtype)
    t = t.astype(dtype)
    expand = (slice(None),) + (None,) * (z.ndim - 1)
    dt = jnp.diff(t)
    step_velocity = jnp.diff(z, axis=0) / dt[expand]
    chord_velocity = (z[-1] - z[0]) / (t[-1] - t[0])
    per_step = jnp.mean(
        jnp.square(step_velocity - chord_velocity[None]).reshape(dt.shape[0], -1), axis=1
    )
    if time_weighted:
        return jnp.sum(per_step * dt) / (t[-1] - t[0])
    return jnp.mean(per_step)
