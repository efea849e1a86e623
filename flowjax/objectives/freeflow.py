"""Flow-map distillation without data (FreeFlow; Tong, Ma, Xie, Jaakkola 2025).

Maths: docs/maths/freeflow.md.

Convention: noise (the prior) at t = 0, data at t = 1; every velocity points toward data. A
frozen teacher velocity ``v_T(x, t, c)`` (optionally with CFG scale ``g``:
``v_T^g = v_T(.|null) + g (v_T(.|c) - v_T(.|null))``) is distilled into a student flow map
*from the prior only*::

    f_theta(z, delta) = z + delta F_theta(z, delta)  ~  Phi_{0 -> delta}(z),   z ~ N(0, I)

``F_theta(z, delta)`` is an average-velocity network evaluated at start time 0 and end time
``delta`` (:class:`FreeFlowNetworks` ``.student``). It is optimal iff
``d/d delta f = v_T(f, delta)``, i.e. ``F + delta dF/d delta = v_T(f(z, delta), delta)``
(a partial derivative: ``z`` does not move; the teacher is queried at the student's point).
No data are read: each row draws its own noise (and a uniform class label).

Prediction objective (rows ``1 - correction_fraction`` of the batch, ``delta ~ delta_sampler``)::

    dF     = jvp(delta -> F(z, delta), 1)
    tgt    = sg( v_T(f, delta) - delta dF )
    Dg     = F + delta dF - v_T(f, delta)                (the generating-velocity error)
    L_pred = mean( sg(w) * mean_elements (F - tgt)^2 ),   w = 1 / (mean_elements Dg^2 + eps)^k

Correction objective (the other rows): student samples ``x_hat = f(z, 1)``; an online "fake"
velocity ``g_psi`` (:class:`FreeFlowNetworks` ``.fake``, initialised from the teacher) learns
the flow of the student's samples by flow matching on ``x_r = r sg(x_hat) + (1 - r) n``
(target ``sg(x_hat) - n``), and the student follows the surrogate gradient::

    L_corr = mean( < F(z, 1), sg( lambda (g_psi(x_r, r) - v_T(x_r, r)) ) > / d )
    lambda = alpha E||Dg|| / (E||g_psi - v_T|| + eps)        (balance with the prediction term)

Its gradient moves each student sample along ``-(g_psi - v_T)``, from the student's noising
velocity toward the teacher's (the integral-KL / VSD direction written with velocities).
``r ~ r_sampler`` covers all of (0, 1) and is biased toward noise (our t near 0); the
teacher's CFG applies in the correction only for ``r`` in ``correction_guidance_interval``.

The three networks live in one parameter tree ``{"student", "fake", "teacher"}``; the
teacher is frozen (:attr:`FreeFlow.frozen`: no optimizer state, no updates), ``L_fake``
trains only ``fake`` and the student terms only ``student`` (stop-gradients). One-step
sampling: ``flowmap:1``, ``x1 = z + F(z, 1)``.

Unverified in the spec (§12.8): the delta law, the exact r law, the student's delta embedding
and initialisation; the defaults here are stated in :class:`FreeFlow`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowjax.objectives import guidance
from flowjax.time import laws
from flowjax.types import ApplyFn, Array, Metrics, Model, Objective


def _bcast(a: Array, x: Array) -> Array:
    return a.reshape((a.shape[0],) + (1,) * (x.ndim - 1))


def _mean_el(a: Array) -> Array:
    return jnp.mean(a.reshape(a.shape[0], -1), axis=1)


class FreeFlowNetworks(nn.Module, Model):
    """Student (average velocity), fake velocity and frozen teacher in one module.

    ``__call__`` is the student ``u(x, t, cond, t_end)`` (what samplers and the evaluator see);
    :meth:`fake_velocity` and :meth:`teacher_velocity` are the instantaneous velocities.
    """

    student: nn.Module
    fake: nn.Module
    teacher: nn.Module
    use_end_time = True  # the default method is an average-velocity network

    def __call__(self, x, t, cond=None, *, t_end=None, train: bool = False):
        if self.is_initializing():
            self.fake(x, t, cond)
            self.teacher(x, t, cond)
        return self.student(x, t, cond, t_end=t_end, train=train)

    def fake_velocity(self, x, t, cond=None, *, train: bool = False):
        return self.fake(x, t, cond, train=train)

    def teacher_velocity(self, x, t, cond=None, *, train: bool = False):
        del train  # the teacher is frozen: always in eval mode
        return self.teacher(x, t, cond)


def zero_end_time_embedding(student_params: Any) -> Any:
    """Zero the last layer of every ``h_embed`` (the embedding of ``t_end - t``), so an
    average-velocity network initialised from an instantaneous-velocity one computes
    ``u(x, s, c, e) = v(x, s, c)`` for every ``e``."""

    def walk(tree):
        if not isinstance(tree, dict):
            return tree
        out = {}
        for k, v in tree.items():
            if k == "h_embed" and isinstance(v, dict):
                last = sorted(name for name in v if name.startswith("Dense"))[-1]
                v = {**v, last: jax.tree.map(jnp.zeros_like, v[last])}
            out[k] = walk(v)
        return out

    return walk(dict(student_params))


def copy_matching(target: Any, source: Any) -> Any:
    """``target`` with every leaf whose path also exists in ``source`` (same shape) replaced
    by ``source``'s (the student gets the teacher's weights, keeping its extra layers)."""
    if isinstance(target, dict) and isinstance(source, dict):
        return {k: copy_matching(v, source[k]) if k in source else v for k, v in target.items()}
    if hasattr(target, "shape") and hasattr(source, "shape"):
        if target.shape != source.shape:
            raise ValueError(
                f"teacher weight of shape {source.shape} does not fit the student's {target.shape}"
            )
        return jnp.asarray(source, target.dtype)
    return target


@dataclasses.dataclass(frozen=True)
class FreeFlow(Objective):
    """Data-free flow-map distillation (module docstring); fields are its hyperparameters.

    Attributes:
      num_classes: class-conditional student/teacher (labels drawn uniformly), or None.
      teacher_cfg_scale: ``g`` of the guided teacher (1 = plain conditional).
      correction_fraction: rows used by the correction objective (paper: 0.25; 0 = prediction
        only, no fake network training).
      delta_sampler: law of the student's jump length ``delta`` in L_pred (default U(0, 1)).
      r_sampler: law of the noising time in L_corr and L_fake (default logit-normal(-0.8, 1):
        biased toward noise, covering (0, 1)).
      weight_power, weight_eps: ``k`` and ``eps`` of the adaptive weight of L_pred.
      alpha: the balance ``alpha`` of lambda (robust in [0.3, 3]).
      correction_guidance_interval: ``r`` range where the teacher is guided in L_corr
        (default ``(0.3, 1)``: noise level <= 0.7).
    """

    num_classes: int | None = None
    teacher_cfg_scale: float = 1.0
    correction_fraction: float = 0.25
    delta_sampler: Any = laws.Uniform()
    r_sampler: Any = laws.LogitNormal(loc=-0.8, scale=1.0)
    weight_power: float = 1.0
    weight_eps: float = 1e-3
    alpha: float = 1.0
    correction_guidance_interval: tuple[float, float] | None = (0.3, 1.0)

    average_velocity = True  # the trained (sampled) network is the student u(z, 0, c, delta)
    frozen = ("teacher",)  # top-level parameter groups that are never updated
    data_free = True  # batches only fix the batch size: no pixel of data is read

    def __post_init__(self):
        if not 0.0 <= self.correction_fraction < 1.0:
            raise ValueError(
                f"correction_fraction must be in [0, 1); got {self.correction_fraction}"
            )
        if self.teacher_cfg_scale != 1.0 and self.num_classes is None:
            raise ValueError("teacher_cfg_scale != 1 needs a class-conditional teacher")
        object.__setattr__(
            self,
            "correction_guidance_interval",
            guidance.validate_interval(self.correction_guidance_interval),
        )

    # -- networks ---------------------------------------------------------------------------
    def build_model(self, make: Callable[[bool], nn.Module]) -> nn.Module:
        """``make(use_end_time)`` builds the config's network; student, fake and teacher."""
        return FreeFlowNetworks(student=make(True), fake=make(False), teacher=make(False))

    def initial_params(self, fresh: Any, teacher: Any) -> Any:
        """Start from the teacher: the student copies it (its ``h_embed`` output zeroed, so it
        starts as ``F(z, delta) = v_T(z, 0)``, an Euler step), the fake is a copy."""
        if "student" in teacher:  # a FreeFlow run given as the teacher: take its teacher
            teacher = teacher["teacher"]
        student = zero_end_time_embedding(copy_matching(dict(fresh["student"]), dict(teacher)))
        return {
            "student": student,
            "fake": copy_matching(dict(fresh["fake"]), dict(teacher)),
            "teacher": copy_matching(dict(fresh["teacher"]), dict(teacher)),
        }

    # -- loss -----------------------------------------------------------------------------
    def _teacher(self, params, apply_fn, x, t, labels, scale_rows):
        def v(c):
            return apply_fn(params, x, t, c, method="teacher_velocity")

        if labels is None:
            return jax.lax.stop_gradient(v(None))
        if self.teacher_cfg_scale == 1.0:
            return jax.lax.stop_gradient(v(labels))
        both = jnp.concatenate([labels, jnp.full_like(labels, self.num_classes)])
        b = x.shape[0]
        out = apply_fn(
            params,
            jnp.concatenate([x, x]),
            jnp.concatenate([t, t]),
            both,
            method="teacher_velocity",
        )
        v_c, v_u = out[:b], out[b:]
        return jax.lax.stop_gradient(v_u + _bcast(scale_rows, x) * (v_c - v_u))

    def loss_fn(
        self, params: Any, apply_fn: ApplyFn, batch: dict[str, Array], key: Array
    ) -> tuple[Array, Metrics]:
        shape = batch["x1"].shape  # only the shape: no data are used
        b = shape[0]
        n_corr = int(round(self.correction_fraction * b))
        n_pred = b - n_corr
        if n_pred < 1:
            raise ValueError(f"batch of {b} rows leaves no rows for the prediction objective")
        k_z, k_y, k_delta, k_r, k_n, k_model = jax.random.split(key, 6)
        z = jax.random.normal(k_z, shape, jnp.float32)
        labels = (
            None if self.num_classes is None else jax.random.randint(k_y, (b,), 0, self.num_classes)
        )

        def rows(a, lo, hi):
            return None if a is None else a[lo:hi]

        def student(z_, delta, c):
            zeros = jnp.zeros_like(delta)
            return apply_fn(params, z_, zeros, c, t_end=delta, train=True, rng=k_model)

        # Prediction: the student's generating velocity must match the teacher at f(z, delta).
        z_p, y_p = z[:n_pred], rows(labels, 0, n_pred)
        delta = self.delta_sampler.sample(k_delta, (n_pred,), jnp.float32)
        f_p, df = jax.jvp(lambda d: student(z_p, d, y_p), (delta,), (jnp.ones_like(delta),))
        db = _bcast(delta, z_p)
        x_f = jax.lax.stop_gradient(z_p + db * f_p)
        scale = jnp.full((n_pred,), self.teacher_cfg_scale)
        v_t = self._teacher(params, apply_fn, x_f, delta, y_p, scale)
        df = jax.lax.stop_gradient(df)
        dg = jax.lax.stop_gradient(f_p + db * df - v_t)
        err = _mean_el(dg**2)
        weight = 1.0 / (err + self.weight_eps) ** self.weight_power
        tgt = v_t - db * df
        l_pred = jnp.mean(weight * _mean_el((f_p - tgt) ** 2))
        metrics = {"pred_loss": l_pred, "generating_velocity_mse": jnp.mean(err)}
        loss = l_pred

        if n_corr:
            z_c, y_c = z[n_pred:], rows(labels, n_pred, b)
            ones = jnp.ones((n_corr,), jnp.float32)
            f_1 = student(z_c, ones, y_c)
            x_hat = jax.lax.stop_gradient(z_c + f_1)
            r = self.r_sampler.sample(k_r, (n_corr,), jnp.float32)
            n = jax.random.normal(k_n, x_hat.shape, x_hat.dtype)
            rb = _bcast(r, x_hat)
            x_r = rb * x_hat + (1.0 - rb) * n
            g = apply_fn(params, x_r, r, y_c, method="fake_velocity", train=True, rng=k_model)
            l_fake = jnp.mean(_mean_el((g - (x_hat - n)) ** 2))
            scale_r = guidance.guidance_weight(
                r, self.teacher_cfg_scale, self.correction_guidance_interval
            )
            v_tr = self._teacher(params, apply_fn, x_r, r, y_c, scale_r)
            direction = jax.lax.stop_gradient(g - v_tr)
            size_pred = jnp.mean(jnp.sqrt(_mean_el(dg**2)))
            size_corr = jnp.mean(jnp.sqrt(_mean_el(direction**2)))
            lam = jax.lax.stop_gradient(self.alpha * size_pred / (size_corr + 1e-8))
            l_corr = jnp.mean(_mean_el(f_1 * lam * direction))
            loss = loss + l_corr + l_fake
            metrics.update(
                corr_loss=l_corr,
                fake_loss=l_fake,
                corr_lambda=lam,
                fake_teacher_gap=jnp.mean(_mean_el(direction**2)),
            )
        metrics["loss"] = loss
        return loss, metrics
