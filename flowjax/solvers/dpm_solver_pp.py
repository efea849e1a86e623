"""DPM-Solver++ (Lu et al.) for flow models on the linear path: 1, 2M, 3M (docs/maths/solvers.md).

Time convention: noise at t = 0, data at t = 1, ``x_t = t x1 + (1 - t) x0``, so
``alpha_t = t``, ``sigma_t = 1 - t`` and the log-SNR is ``lambda(t) = logit(t)`` (-inf at the
noise end, +inf at the data end). The solver integrates the *data-prediction* form of the
probability-flow ODE, with the data prediction computed from the velocity:

    m(x, t) = x1_hat = x + (1 - t) v(x, t)
    x_t = (sigma_t / sigma_s) x_s + sigma_t * integral_{lambda_s}^{lambda_t} e^lambda m dlambda

Step from s (current) to t (next), ``h = lambda_t - lambda_s``:

    first order   x_t = (sigma_t/sigma_s) x_s + phi1 m_s
    2M midpoint   x_t += phi1 D1 / 2,         D1 = (m_s - m_prev) h / h_prev
    2M heun       x_t += phi2 D1
    3M            x_t += phi2 D1' - phi3 D2

    phi1 = alpha_t - alpha_s sigma_t / sigma_s         (= alpha_t (1 - e^{-h}))
    phi2 = alpha_t ((e^{-h} - 1)/h + 1)
    phi3 = alpha_t ((e^{-h} - 1 + h)/h^2 - 1/2)

with ``D1'`` the slope (times h) of the quadratic through the last three data predictions in
lambda, and ``D2`` its second derivative times ``h^2`` (§7.1). ``phi1`` is written without
``h`` (the "stable form"), so the first-order step is finite at s = 0 (lambda = -inf) and lands
exactly on ``m_s`` at t = 1 (``sigma_t = 0``); on the linear path it *is* Euler,
``x_t = x_s + (t - s) v(x_s, s)`` (§7.2), up to rounding.

Third-order coefficient. The reference implementation (and diffusers, and §7.1 as written)
uses ``D2 = (D1_0 - D1_1) / (r0 + r1)``, which is ``h^2 m''/2 + O(h^3)``, while the Taylor
expansion of the exact integral multiplies ``-phi3`` by ``h^2 m''``: its third-order term is
half of what it should be, so that update is only second-order accurate (local error
``O(h^3)``; measured: a global slope of ~2.1 against ~2.9 with the fix, on logSNR grids). The
default ``third_order_form="taylor"`` uses ``2 (D1_0 - D1_1) / (r0 + r1)`` and is third order;
``third_order_form="diffusers"`` reproduces diffusers' samples exactly.

Order schedule (diffusers' defaults): step ``i`` uses order ``min(order, i + 1)`` (warm-up);
a step that ends at t = 1 is first order (``h = inf`` there, so the multistep corrections are
undefined); with ``lower_order_final`` and fewer than 15 steps the last step is first order and
the second-to-last at most second order. A history point at t = 0 has lambda = -inf and carries
no slope information, so its divided difference is 0: on a grid that starts at t = 0 the
second step is first order too. DPM-Solver grids start at ``t_min > 0`` (``logsnr``,
``diffusers``), where this does not happen.

Minimum number of steps: a multistep solver is only what its name says if at least one step
runs at its nominal order. On a grid ending at t = 1 that needs 3 steps for 2M (warm-up, one
second-order step, the final first-order step) and 5 for 3M with ``lower_order_final`` (4
without). Fewer steps raise a ValueError rather than silently running Euler under another name.

UniC corrector (``corrector=True``; Zhao et al., UniPC, the ``bh2`` variant): before each
step the data prediction just evaluated at the new point re-does the previous step with one
more interpolation node (order 1: trapezoid weight 1/2; orders 2-3: the weights solve UniPC's
small Vandermonde system in the ratios of log-SNR steps), then the predictor continues from the
corrected point. It costs no evaluation (the prediction is needed for the next step anyway)
and raises the order by one; ``order=2`` with the corrector is diffusers'
``UniPCMultistepScheduler`` (bh2) in flow form. The last step (to t = 1) is not corrected.

Classifier-free guidance: pass a guided velocity (``flowjax.velocity.cfg_velocity``);
the data prediction is affine in ``v``, so guiding ``v`` guides ``m``. ``thresholding``
applies dynamic thresholding (Imagen; diffusers' ``thresholding=True``) to ``m`` for
pixel-space models with data in ``[-1, 1]``.

Each step costs one velocity evaluation. The history (previous data predictions and their
log-SNRs) is the scan-carried solver state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from flowjax.solvers.base import register_solver
from flowjax.types import Array, Solver

# diffusers switches the last two steps to lower order when there are fewer than this many.
LOWER_ORDER_FINAL_BELOW = 15


@dataclasses.dataclass(frozen=True)
class DynamicThreshold:
    """Dynamic thresholding of a data prediction (Saharia et al.; diffusers' defaults).

    Per sample, ``s = clip(quantile(|m|, ratio), 1, max_value)`` over all elements, then
    ``m <- clip(m, -s, s) / s``. Meant for pixel-space models with data in ``[-1, 1]``.
    """

    ratio: float = 0.995
    max_value: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"thresholding ratio must be in (0, 1]; got {self.ratio!r}")
        if not self.max_value >= 1.0:
            raise ValueError(f"thresholding max_value must be >= 1; got {self.max_value!r}")

    def __call__(self, m: Array) -> Array:
        flat = jnp.abs(m.reshape(m.shape[0], -1))
        s = jnp.quantile(flat, float(self.ratio), axis=1)
        s = jnp.clip(s, 1.0, jnp.asarray(self.max_value, m.dtype))
        s = s.reshape((m.shape[0],) + (1,) * (m.ndim - 1))
        return jnp.clip(m, -s, s) / s


def _logit(t: Array) -> Array:
    return jnp.log(t) - jnp.log1p(-t)


def _ratio(num: Array, den: Array) -> Array:
    """``num / den`` where both are finite and ``den != 0``; else 0 (an infinitely long
    previous step carries no slope information)."""
    ok = jnp.isfinite(num) & jnp.isfinite(den) & (den != 0)
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


@dataclasses.dataclass(frozen=True)
class DPMSolverPP(Solver):
    """DPM-Solver++ in flow form (see the module docstring for the maths).

    Attributes:
      order: 1 (= Euler), 2 (2M) or 3 (3M).
      solver_type: ``"midpoint"`` (diffusers' default) or ``"heun"``: the form of the
        second-order correction (3M always uses the ``heun``-type coefficients).
      lower_order_final: with fewer than 15 steps, take the last step at first order and the
        second-to-last at most second order (diffusers' default; stabilises few-step runs).
      thresholding: optional :class:`DynamicThreshold` applied to the data prediction.
      third_order_form: ``"taylor"`` (3M is third order) or ``"diffusers"`` (the reference
        code's coefficient, second-order accurate; for bitwise-comparable samples).
      corrector: apply the UniC-bh2 corrector of UniPC (Zhao et al.) before each step: the
        data prediction evaluated at the new point (needed for the next step anyway) re-does
        the previous step at one order higher, for no extra NFE. ``order=2`` with the
        corrector is diffusers' ``UniPCMultistepScheduler`` (bh2, order 2) in flow form.
    """

    order: int = 2
    solver_type: str = "midpoint"
    lower_order_final: bool = True
    thresholding: DynamicThreshold | None = None
    third_order_form: str = "taylor"
    corrector: bool = False
    nfe_per_step: int = 1

    def __post_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"DPM-Solver++ order must be 1, 2 or 3; got {self.order!r}")
        if self.third_order_form not in ("taylor", "diffusers"):
            raise ValueError(
                f"third_order_form must be 'taylor' or 'diffusers'; got {self.third_order_form!r}"
            )
        if self.solver_type not in ("midpoint", "heun"):
            raise ValueError(f"solver_type must be 'midpoint' or 'heun'; got {self.solver_type!r}")

    @property
    def name(self) -> str:
        if self.corrector:
            return f"unipc{self.order}" if self.order < 3 else "dpm++3m-unic"
        return "dpm++1" if self.order == 1 else f"dpm++{self.order}m"

    @property
    def min_steps(self) -> int:
        if self.order == 1:
            return 1
        if self.corrector and self.order == 2:
            return 2  # the corrector of step 1 already uses two data predictions
        if self.order == 2:
            return 3
        return 5 if self.lower_order_final else 4

    @property
    def min_steps_note(self) -> str:
        if self.order == 1:
            return ""
        return (
            f"; with fewer steps on a grid ending at t=1 no step would run at order "
            f"{self.order} (warm-up and the final step to the data are lower order), so it "
            f"would be a lower-order DPM-Solver++ under another name: use dpm++1 (= euler)"
            + (" or dpm++2m (>= 3 NFE)" if self.order == 3 else "")
        )

    # -- state ------------------------------------------------------------------------------
    def _history(self) -> int:
        return self.order - 1 + int(self.corrector)

    def init(self, x: Array) -> Any:
        """History of the last data predictions and their log-SNRs; with the corrector also
        the previous (corrected) state, its time and the order of the step that left it."""
        k = self._history()
        state = (tuple(jnp.zeros_like(x) for _ in range(k)), jnp.zeros((k,), x.dtype))
        if self.corrector:
            state = state + (jnp.zeros_like(x), jnp.zeros((), x.dtype), jnp.ones((), jnp.int32))
        return state

    def effective_order(self, t_next: Array, index: Array, num_steps: int) -> Array:
        """Order used by step ``index`` of ``num_steps`` ending at ``t_next`` (traceable)."""
        order = jnp.minimum(self.order, index + 1)
        if self.lower_order_final and num_steps < LOWER_ORDER_FINAL_BELOW:
            order = jnp.where(index == num_steps - 1, 1, order)
            order = jnp.where(index == num_steps - 2, jnp.minimum(order, 2), order)
        return jnp.where(t_next >= 1.0, 1, order)

    def data_prediction(self, f, x: Array, t: Array) -> Array:
        m = x + (1.0 - t) * f(x, t)
        return self.thresholding(m) if self.thresholding is not None else m

    # -- step -------------------------------------------------------------------------------
    def step(self, f, x, t, t_next, state, index, num_steps):
        ms, lams = state[0], state[1]
        m0 = self.data_prediction(f, x, t)
        lam0 = _logit(t)
        if self.corrector:
            x_prev, t_prev, order_prev = state[2:]
            corrected = self._correct(x_prev, t_prev, t, lam0, m0, ms, lams, order_prev)
            x = jnp.where(index > 0, corrected, x)
        order = self.effective_order(t_next, index, num_steps)
        x_next = self._predict(x, t, t_next, lam0, m0, ms, lams, order)
        if self._history() == 0:
            return x_next, state
        new_state = (tuple([m0, *ms[:-1]]), jnp.concatenate([lam0[None], lams[:-1]]))
        if self.corrector:
            new_state = new_state + (x, t, order.astype(jnp.int32))
        return x_next, new_state

    def _predict(self, x, t, t_next, lam0, m0, ms, lams, order):
        """DPM-Solver++ step from ``(x, t)`` to ``t_next`` of the given (traced) order."""
        ratio = (1.0 - t_next) / (1.0 - t)  # sigma_t / sigma_s; t < t_next <= 1
        phi1 = t_next - t * ratio  # alpha_t (1 - e^{-h}), finite at s = 0 and t = 1
        x_next = ratio * x + phi1 * m0
        if self.order == 1:
            return x_next
        h = _logit(t_next) - lam0
        finite = jnp.isfinite(h) & (h > 0)
        h = jnp.where(finite, h, 1.0)
        e = jnp.expm1(-h)
        phi2 = t_next * (1.0 + e / h)  # alpha_t ((e^{-h} - 1)/h + 1)
        h0 = lam0 - lams[0]
        d1_0 = (m0 - ms[0]) * _ratio(h, h0)  # (m0 - m1) / r0
        if self.solver_type == "midpoint":
            second = 0.5 * phi1 * d1_0
        else:
            second = phi2 * d1_0
        correction = jnp.where(finite & (order == 2), 1.0, 0.0).astype(x.dtype) * second
        if self.order == 3:
            h1 = lams[0] - lams[1]
            d1_1 = (ms[0] - ms[1]) * _ratio(h, h1)  # (m1 - m2) / r1
            # r0 / (r0 + r1) = h0 / (h0 + h1);  1 / (r0 + r1) = h / (h0 + h1)
            d1 = d1_0 + _ratio(h0, h0 + h1) * (d1_0 - d1_1)
            d2 = _ratio(h, h0 + h1) * (d1_0 - d1_1)  # = h^2 m''/2 + O(h^3)
            if self.third_order_form == "taylor":
                d2 = 2.0 * d2  # h^2 m'': what the Taylor expansion's phi3 term multiplies
            phi3 = t_next * ((e + h) / (h * h) - 0.5)  # alpha_t ((e^{-h} - 1 + h)/h^2 - 1/2)
            third = phi2 * d1 - phi3 * d2
            use3 = jnp.where(finite & (order == 3), 1.0, 0.0).astype(x.dtype)
            correction = correction + use3 * third
        return x_next + correction

    def _correct(self, x_prev, t_prev, t, lam_t, m_t, ms, lams, order_c):
        """UniC-bh2 (Zhao et al., UniPC): redo the step ``t_prev -> t`` with ``m_t`` too.

        ``ms[0], lams[0]`` belong to ``t_prev``; ``ms[j], lams[j]`` to earlier points. Order
        ``k`` fits the data predictions at ``t`` and at ``k`` previous points; order 1 uses
        the trapezoid weight 1/2. Orders above what the history supports (a point at t = 0
        has lambda = -inf) fall back to lower ones.
        """
        m_prev = ms[0]
        ratio = (1.0 - t) / (1.0 - t_prev)
        phi1 = t - t_prev * ratio  # -alpha_t B(h) for bh2
        d1_t = m_t - m_prev
        out = ratio * x_prev + phi1 * (m_prev + 0.5 * d1_t)
        h = lam_t - lams[0]
        finite = jnp.isfinite(h) & (h > 0)
        h = jnp.where(finite, h, 1.0)
        hh = -h
        b_h = jnp.expm1(hh)
        b, h_phi_k, factorial = [], b_h / hh - 1.0, 1.0
        for i in range(1, self.order + 1):
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial
        for k in range(2, self.order + 1):
            ok = finite & jnp.all(jnp.isfinite(lams[1:k]))
            # Double where: a masked -inf log-SNR must not send NaN into the gradient.
            rks = [
                jnp.where(ok, jnp.where(ok, lams[j] - lams[0], 0.0) / h, -float(j))
                for j in range(1, k)
            ]
            rks = jnp.stack([*rks, jnp.ones_like(h)])
            rmat = jnp.stack([rks**p for p in range(k)])
            rhos = jnp.linalg.solve(rmat, jnp.stack(b[:k]))
            corr = rhos[-1] * d1_t
            for j in range(1, k):
                corr = corr + rhos[j - 1] * (ms[j] - m_prev) / rks[j - 1]
            cand = ratio * x_prev + phi1 * (m_prev + corr)
            out = jnp.where(ok & (order_c == k), cand, out)
        return out


def _factory(order: int):
    def make(**kwargs) -> DPMSolverPP:
        return DPMSolverPP(order=order, **kwargs)

    return make


register_solver("dpm++1", _factory(1))
register_solver("dpm++2m", _factory(2))
register_solver("dpm++3m", _factory(3))
register_solver("unipc1", lambda **kw: DPMSolverPP(order=1, corrector=True, **kw))
register_solver("unipc2", lambda **kw: DPMSolverPP(order=2, corrector=True, **kw))
register_solver("dpm++3m-unic", lambda **kw: DPMSolverPP(order=3, corrector=True, **kw))
