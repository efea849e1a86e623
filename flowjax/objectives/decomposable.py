"""Decomposable Flow Matching (DFM; Haji-Ali, Menapace et al. 2025; docs/maths/decomposable.md).

The data ``x1 [B, H, W, C]`` is split by the Laplacian pyramid (:mod:`flowjax.pyramid`) into
``S`` stages ``P_1`` (coarsest) ... ``P_S``. Each stage has its own noise ``eps_s`` and time::

    P_s^{t_s} = t_s P_s + (1 - t_s) eps_s,        target  v_s = P_s - eps_s

and ONE network ``G`` (:class:`flowjax.models.DecomposableDiT`) sees all the stages and times
and predicts every stage's velocity. Training times (the paper's Algorithm 1, in flowjax time,
noise 0 / data 1)::

    Q ~ Categorical(p_q)                   the stage being generated (2 stages: p = [0.9, 0.1])
    t_Q ~ logit-normal(0, 1)               (``current_sampler``)
    t_s ~ logit-normal(1.5, 1),  s < Q     earlier stages, already mostly generated
    t_s = 0, M_s = 0,            s > Q     stages not yet started: pure noise, masked
    L = mean_batch  sum_s M_s mean_elements (G_s(P^t, t_1..t_S, y) - v_s)^2

``earlier_loc = 1.5`` is the paper's location; the public SiT re-implementation uses 2.0 (in
flowjax's convention). The masked stages' inputs are zeroed inside the network, so they
cannot influence any output. Classifier-free guidance is trained by label dropout.

Sampling (:meth:`DecomposableFlowMatching.make_sampler`) runs ``S`` phases. With thresholds
``tau_1, ..., tau_{S-1}`` (``tau_S = 1``), every started stage is tied to the next one by
``t_r = tau_r + (1 - tau_r) t_{r+1}``; phase ``s`` moves stage ``s`` from 0 to ``tau_s`` and
the earlier stages follow, so all times are affine in the phase's own clock ``u in [0, 1]``:
``t_r(u) = e_r - b_r (1 - u)`` (``e_r`` the time at the phase's end, ``b_r`` the distance it
travels; later stages ``b_r = 0``, masked). Each phase integrates the ODE
``dx_r/du = b_r v_r(x, t(u))`` over a grid of ``u`` with any explicit one-step solver
(Euler, as in the paper, gives one Euler update per active stage with its own
``dt_r = b_r du``). For ``S = 2`` this is the paper's schedule: ``t_1: 0 -> tau`` in phase 1,
then ``t_2: 0 -> 1`` with ``t_1 = tau + (1 - tau) t_2``. The NFE budget is split over the
phases in proportion to ``phase_weights`` (the paper's ``(T_1, T_2) = (30, 10)`` is
``(3, 1)``), largest remainders first, each phase at least the solver's minimum. The samples
are the recomposed stages.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import pyramid, solvers, spec
from flowjax.models.decomposable import DecomposableDiT
from flowjax.objectives import guidance
from flowjax.time import grids, laws
from flowjax.types import ApplyFn, Array, Metrics, Objective, SamplerOption

# Solvers whose step uses the velocity only as the right-hand side of an ODE, so they can
# integrate a phase over its own clock u (DPM-Solver++ and the SDE, learned and flow-map
# samplers assume the linear path's time and cannot).
PHASE_SOLVERS = (solvers.Euler, solvers.Heun, solvers.Midpoint, solvers.RK4)


def _default_probs(num_stages: int) -> tuple[float, ...]:
    if num_stages == 1:
        return (1.0,)
    if num_stages == 2:
        return (0.9, 0.1)
    raise ValueError(
        f"set stage_probs (one probability per stage, summing to 1) for num_stages="
        f"{num_stages}; the paper's default (0.9, 0.1) is for 2 stages"
    )


@dataclasses.dataclass(frozen=True)
class DecomposableFlowMatching(Objective):
    """Decomposable Flow Matching (see the module docstring).

    Attributes:
      num_stages: ``S``, the number of Laplacian-pyramid stages.
      stage_probs: ``p_q``, the probability that stage ``q`` is the one being generated
        (default ``(0.9, 0.1)`` for 2 stages, ``(1,)`` for one).
      current_sampler: the law of the current stage's time ``t_Q`` (default logit-normal(0, 1)).
      earlier_loc, earlier_scale: the logit-normal law of the earlier stages' times.
      thresholds: ``tau_1 .. tau_{S-1}`` of the staged sampler (default 0.9 each).
      phase_weights: the share of the NFE budget each sampling phase gets (default ``(3, 1)``
        for 2 stages, equal shares otherwise).
      num_classes: class-conditional network with null class ``num_classes``, or ``None``.
      label_dropout: probability of replacing a label by the null label (CFG training).

    Sampler strings (:meth:`make_sampler`) set the thresholds and the NFE split at sampling
    time: ``"euler:40@tau=0.7,phases=1/1"``.
    """

    sampler_options: ClassVar[Mapping[str, SamplerOption]] = {
        "tau": SamplerOption("thresholds", help="the stage thresholds, one per stage but the last"),
        "phases": SamplerOption("phase_weights", help="the NFE share of each sampling phase"),
    }

    num_stages: int = 2
    stage_probs: tuple[float, ...] | None = None
    current_sampler: Any = laws.LogitNormal(loc=0.0, scale=1.0)
    earlier_loc: float = 1.5
    earlier_scale: float = 1.0
    thresholds: tuple[float, ...] | None = None
    phase_weights: tuple[float, ...] | None = None
    num_classes: int | None = None
    label_dropout: float = 0.0

    def __post_init__(self):
        s = self.num_stages
        if isinstance(s, bool) or int(s) != s or s < 1:
            raise ValueError(f"num_stages must be an integer >= 1; got {s!r}")
        probs = _default_probs(s) if self.stage_probs is None else tuple(self.stage_probs)
        if len(probs) != s or any(not (p >= 0.0) for p in probs) or abs(sum(probs) - 1) > 1e-6:
            raise ValueError(
                f"stage_probs must give {s} non-negative probabilities summing to 1 (one per "
                f"stage); got {self.stage_probs}"
            )
        taus = (0.9,) * (s - 1) if self.thresholds is None else tuple(self.thresholds)
        if len(taus) != s - 1 or any(not (0.0 < tau <= 1.0) for tau in taus):
            raise ValueError(
                f"thresholds must give {s - 1} value(s) in (0, 1] (the time stage s reaches "
                f"before stage s+1 starts, one per stage but the last); got {self.thresholds}"
            )
        default_weights = (3.0, 1.0) if s == 2 else (1.0,) * s
        weights = default_weights if self.phase_weights is None else tuple(self.phase_weights)
        if len(weights) != s or any(not (w > 0.0) for w in weights):
            raise ValueError(
                f"phase_weights must give {s} positive shares of the NFE budget (one per "
                f"sampling phase); got {self.phase_weights}"
            )
        if not (math.isfinite(self.earlier_loc) and self.earlier_scale > 0):
            raise ValueError(
                f"earlier_loc must be finite and earlier_scale > 0; got {self.earlier_loc}, "
                f"{self.earlier_scale}"
            )
        if self.label_dropout and self.num_classes is None:
            raise ValueError("label_dropout > 0 needs num_classes (a class-conditional model)")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"label_dropout must be in [0, 1]; got {self.label_dropout}")
        object.__setattr__(self, "num_stages", int(s))
        object.__setattr__(self, "stage_probs", tuple(float(p) for p in probs))
        object.__setattr__(self, "thresholds", tuple(float(t) for t in taus))
        object.__setattr__(self, "phase_weights", tuple(float(w) for w in weights))

    # -- model -------------------------------------------------------------------------------
    def build_model(self, make):
        model = make(False)
        if not isinstance(model, DecomposableDiT) or model.num_stages != self.num_stages:
            raise ValueError(
                f"objective.name='decomposable' trains a DecomposableDiT with num_stages="
                f"{self.num_stages}; set model.name='decomposable_dit' and model.num_stages="
                f"{self.num_stages} (see configs/digits_dfm.py)"
            )
        return model

    def noise_shape(self, element_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The packed noise of all stages, ``(S, H, W, C)`` (:func:`flowjax.pyramid.pack`)."""
        return pyramid.packed_shape(element_shape, self.num_stages)

    # -- training ----------------------------------------------------------------------------
    def sample_stage_times(self, key: Array, batch: int) -> tuple[Array, Array, Array]:
        """``(q [B], times [B, S], mask [B, S])``: the index (0-based) of the stage being
        generated, every stage's time and the mask of started stages (Algorithm 1).

        ``t_q`` is drawn from ``current_sampler`` with ``key`` itself (as flow matching draws
        its time), the stage and the earlier times from keys folded from it.
        """
        s = self.num_stages
        t_current = self.current_sampler.sample(key, (batch,))
        key_q, key_early = jax.random.split(jax.random.fold_in(key, 1))
        logits = jnp.log(jnp.asarray(self.stage_probs, jnp.float32))
        q = jax.random.categorical(key_q, logits, shape=(batch,))
        n = jax.random.normal(key_early, (batch, s))
        t_early = jax.nn.sigmoid(self.earlier_loc + self.earlier_scale * n)
        idx = jnp.arange(s)[None, :]
        times = jnp.where(
            idx < q[:, None], t_early, jnp.where(idx == q[:, None], t_current[:, None], 0.0)
        )
        mask = (idx <= q[:, None]).astype(jnp.float32)
        return q, times, mask

    def loss_fn(
        self, params: Any, apply_fn: ApplyFn, batch: dict[str, Array], key: Array
    ) -> tuple[Array, Metrics]:
        x1 = batch["x1"]
        b = x1.shape[0]
        key_t, key_noise, key_drop, key_model = jax.random.split(key, 4)
        q, times, mask = self.sample_stage_times(key_t, b)
        times, mask = times.astype(x1.dtype), mask.astype(x1.dtype)
        data = pyramid.pack(pyramid.decompose(x1, self.num_stages))
        noise = jax.random.normal(key_noise, data.shape, x1.dtype)
        t5 = times[:, :, None, None, None]
        x_t = t5 * data + (1.0 - t5) * noise
        target = data - noise
        cond = None
        if self.num_classes is not None:
            if "label" not in batch:
                raise ValueError("a class-conditional objective needs batch['label']")
            cond = guidance.drop_labels(
                key_drop, batch["label"], self.label_dropout, self.num_classes
            )
        t_q = jnp.take_along_axis(times, q[:, None], axis=1)[:, 0]
        v = apply_fn(
            params, x_t, t_q, cond, train=True, rng=key_model, stage_times=times, stage_mask=mask
        )
        per_stage = jnp.stack(
            [
                jnp.mean(jnp.square(vs - ts).reshape(b, -1), axis=1)
                for vs, ts in zip(pyramid.unpack(v), pyramid.unpack(target))
            ],
            axis=1,
        )  # [B, S]
        per_sample = jnp.sum(mask * per_stage, axis=1)
        loss = jnp.mean(per_sample)
        metrics = {"loss": loss}
        for s in range(self.num_stages):
            count = jnp.maximum(jnp.sum(mask[:, s]), 1.0)
            metrics[f"loss_stage{s + 1}"] = jnp.sum(mask[:, s] * per_stage[:, s]) / count
            metrics[f"frac_current_stage{s + 1}"] = jnp.mean((q == s).astype(jnp.float32))
        return loss, metrics

    # -- sampling ----------------------------------------------------------------------------
    def phase_steps(self, num_steps: int, min_steps: int = 1) -> tuple[int, ...]:
        """``num_steps`` split over the ``S`` phases in proportion to ``phase_weights``
        (largest remainders first), each phase at least ``min_steps``."""
        s = self.num_stages
        if num_steps < s * min_steps:
            raise ValueError(
                f"the staged sampler runs {s} phases of at least {min_steps} step(s) each; "
                f"{num_steps} step(s) are too few: raise the NFE to at least {s * min_steps} "
                f"steps' worth"
            )
        w = np.asarray(self.phase_weights, np.float64)
        exact = (num_steps - s * min_steps) * w / w.sum()
        steps = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - steps), kind="stable")[
            : num_steps - s * min_steps - steps.sum()
        ]:
            steps[i] += 1
        return tuple(int(n) + min_steps for n in steps)

    def phase_coefficients(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per phase ``(end [S], travel [S], mask [S])`` (float64): during phase ``s`` stage
        ``r`` is at ``t_r(u) = end_r - travel_r (1 - u)``, ``u in [0, 1]``; ``mask_r = 1`` for
        the started stages ``r <= s``. The last phase ends every stage at exactly 1."""
        s_count = self.num_stages
        taus = (*self.thresholds, 1.0)
        out = []
        for s in range(s_count):
            end, travel = np.zeros(s_count), np.zeros(s_count)
            end[s], travel[s] = taus[s], taus[s]
            for r in range(s - 1, -1, -1):  # t_r = tau_r + (1 - tau_r) t_{r+1}
                end[r] = taus[r] + (1.0 - taus[r]) * end[r + 1]
                travel[r] = (1.0 - taus[r]) * travel[r + 1]
            if s == s_count - 1:
                end[: s + 1] = 1.0
            mask = (np.arange(s_count) <= s).astype(np.float64)
            out.append((end, travel, mask))
        return out

    def schedule(self, nfe: int, solver: Any, grid_spec: str = "uniform") -> list[np.ndarray]:
        """The stage times ``[T_s + 1, S]`` at the grid points of each phase (float64)."""
        out = []
        for (end, travel, _), grid in zip(
            self.phase_coefficients(), self._grids(nfe, solver, grid_spec)
        ):
            out.append(end[None, :] - travel[None, :] * (1.0 - grid[:, None]))
        return out

    def _grids(self, nfe: int, solver: Any, grid_spec: str) -> list[np.ndarray]:
        if not isinstance(solver, PHASE_SOLVERS):
            names = ", ".join(sorted({c().name for c in PHASE_SOLVERS}))
            raise ValueError(
                f"the staged DFM sampler integrates each phase over its own clock, which "
                f"solver {getattr(solver, 'name', solver)!r} cannot do (it assumes the linear "
                f"path's time or another kind of model); use one of: {names}"
            )
        steps = self.phase_steps(solver.num_steps_for_nfe(nfe), solver.min_steps)
        return [np.asarray(grids.grid_from_spec(grid_spec, n), np.float64) for n in steps]

    def make_sampler(
        self,
        velocity: Callable[..., Array],
        solver: Any,
        nfe: int,
        grid_spec: str,
        *,
        thresholds: tuple[float, ...] | None = None,
        phase_weights: tuple[float, ...] | None = None,
    ) -> Callable[..., Array]:
        """The staged sampler ``run(params, x0 [B, S, H, W, C], cond) -> [B, H, W, C]`` (jitted).

        ``velocity(params, x, t, cond, stage_times=[B, S], stage_mask=[B, S])`` is the network
        (with the evaluation's guidance); ``t`` is the time of the stage being generated. The
        ``nfe`` evaluations are split over the phases (:meth:`phase_steps`); ``grid_spec``
        spaces the steps within each phase's clock ``u``. ``thresholds`` / ``phase_weights``
        replace the objective's own for this sampler (``"euler:40@tau=0.7"``,
        ``"@phases=1/1"``): the thresholds are a sampling choice the paper tunes per
        resolution, not part of what the network learned.
        """
        if thresholds is not None or phase_weights is not None:
            changed = {
                k: tuple(float(v) for v in value)
                for k, value in (("thresholds", thresholds), ("phase_weights", phase_weights))
                if value is not None
            }
            staged = dataclasses.replace(self, **changed)  # validated like the config's
            return staged.make_sampler(velocity, solver, nfe, grid_spec)
        phase_grids = self._grids(nfe, solver, grid_spec)
        coefs = self.phase_coefficients()

        @jax.jit
        def run(params, x0, cond=None):
            if x0.ndim != 5 or x0.shape[1] != self.num_stages:
                raise ValueError(
                    f"x0 must be packed stage noise [B, {self.num_stages}, H, W, C] "
                    f"(objective.noise_shape); got {x0.shape}"
                )
            x = x0
            for s, ((end, travel, mask), grid) in enumerate(zip(coefs, phase_grids)):
                end_, travel_ = jnp.asarray(end, x0.dtype), jnp.asarray(travel, x0.dtype)
                mask_ = jnp.asarray(mask, x0.dtype)

                def phase_velocity(x, u, c, end_=end_, travel_=travel_, mask_=mask_, s=s):
                    times = end_[None, :] - travel_[None, :] * (1.0 - u[:, None])
                    masks = jnp.broadcast_to(mask_, times.shape)
                    v = velocity(params, x, times[:, s], c, stage_times=times, stage_mask=masks)
                    return v * travel_[None, :, None, None, None]

                x = solvers.sample(solver, phase_velocity, x, grid, cond)
            return pyramid.recompose(pyramid.unpack(x))

        return run


_CONVERT = dict(
    stage_probs=lambda v: tuple(float(p) for p in v),
    current_sampler=laws.time_sampler_from_spec,
    thresholds=lambda v: tuple(float(t) for t in v),
    phase_weights=lambda v: tuple(float(w) for w in v),
)


def decomposable_from_config(cfg: Any, num_classes: int | None) -> DecomposableFlowMatching:
    """The objective of ``objective.name='decomposable'``: the fields of
    ``objective.decomposable`` are the dataclass's (``num_stages``, ``stage_probs``,
    ``current_sampler`` as a text spec such as ``"logit_normal,loc=0,scale=1"``,
    ``earlier_loc``, ``earlier_scale``, ``thresholds``, ``phase_weights``; absent or unset ones
    keep the dataclass defaults), plus ``objective.label_dropout``."""
    section = {k: v for k, v in dict(cfg.get("decomposable", None) or {}).items() if v is not None}
    return spec.from_section(
        DecomposableFlowMatching,
        section,
        where="objective.decomposable",
        convert=_CONVERT,
        num_classes=num_classes,
        label_dropout=float(cfg.get("label_dropout", 0.0)),
    )
