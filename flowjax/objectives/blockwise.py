"""Blockwise Flow Matching (Park, Lee, Joo, Kim 2025; docs/maths/blockwise.md).

Time convention: noise at 0, data at 1, ``x_t = t x1 + (1 - t) x0``, ``v = x1 - x0`` (the
official code has ``x = (1 - tau) x_data + tau eps`` and target ``eps - x_data``: ``t = 1 - tau``,
our velocity = minus theirs, its segment ``k`` counted from ``tau = 1`` is our segment ``k``
counted from ``t = 0``).

``[0, 1]`` is cut at ``0 = b_0 < b_1 < ... < b_K = 1`` into ``K`` segments (default equal);
segment ``k`` (0 the noisiest) has its own velocity block ``V_k`` and every block reads the
features ``r_t = R_phi(x_t, t, y)`` of one shared feature network
(:class:`flowjax.models.BlockwiseFlowNet`).

Training step (``stage="velocity"``):

1. The batch of ``B`` rows is split into ``K`` consecutive groups of sizes
   ``n_k = floor(B / K) + [k < B mod K]`` (:func:`split_sizes`; static, so each block runs on
   exactly its rows); rows of group ``k`` draw ``t ~ U(b_k, b_{k+1})``.
2. ``x_t``, ``v = x1 - x0``; labels dropped to the null class with probability
   ``label_dropout`` (CFG).
3. ``(v_hat, r_t) = net(x_t, t, y, segment_sizes=(n_0, ...))``;
   ``L = mean_rows D(v_hat, v) + align_weight * L_align`` with
   ``L_align = mean_{rows, tokens} -cos(P(r_t)_n, z*_n)``, ``z* = sg(encoder(x1)) [B, N, F]``
   the representation encoder's tokens of the clean data (``N`` must equal the network's
   token count, ``F`` its ``align_dim``).

Feature Residual Approximation (``stage="frn"``; every part but ``frn`` frozen, started from a
stage-1 run): for a row in segment ``k`` with ``t_s = b_k``, ``t_e = b_{k+1}``,

    gamma(t) = (t - t_s) / (t_e - t_s),      x_{t_s} = t_s x1 + (1 - t_s) x0   (same x0, x1)
    r~_t = sg(R_phi(x_{t_s})) + gamma(t) G_psi(E_R(x_t), c(t, y))
    L    = mean (r~_t - sg(R_phi(x_t)))^2

Sampling (:meth:`BlockwiseFlowMatching.make_sampler`): segment by segment, each with its own
solver, NFE and grid (mapped affinely onto the segment); in FRN mode ``R_phi`` runs once per
segment (at ``x_{t_s}``) and the steps use ``r~``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Callable, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import solvers as solvers_lib
from flowjax import spec
from flowjax.models.blockwise import BlockwiseFlowNet
from flowjax.objectives import guidance, losses
from flowjax.objectives.flow_matching import binned_means
from flowjax.time import grids
from flowjax.types import ApplyFn, Array, Metrics, Objective, SamplerOption, check_same_structure

STAGES = ("velocity", "frn")


def equal_boundaries(num_segments: int) -> tuple[float, ...]:
    """``(0, 1/K, ..., 1)``."""
    if int(num_segments) < 1:
        raise ValueError(f"num_segments must be >= 1; got {num_segments}")
    k = int(num_segments)
    return tuple(float(i) / k for i in range(k)) + (1.0,)


def validate_boundaries(boundaries: Sequence[float]) -> tuple[float, ...]:
    """The boundaries as floats, or a one-line error: at least 2, start 0, end 1, increasing."""
    b = tuple(float(v) for v in boundaries)
    if len(b) < 2:
        raise ValueError(f"segment boundaries need at least 2 values (0 and 1); got {list(b)}")
    if b[0] != 0.0 or b[-1] != 1.0:
        raise ValueError(
            f"segment boundaries must cover [0, 1]: start at 0 and end at 1; got {list(b)}"
        )
    if any(hi <= lo for lo, hi in zip(b[:-1], b[1:])):
        raise ValueError(f"segment boundaries must be strictly increasing; got {list(b)}")
    return b


def split_sizes(batch: int, num_segments: int) -> tuple[int, ...]:
    """Rows per segment: ``B // K`` each, the first ``B mod K`` segments one more."""
    q, r = divmod(int(batch), int(num_segments))
    return tuple(q + (1 if k < r else 0) for k in range(int(num_segments)))


def segment_of_rows(sizes: Sequence[int]) -> np.ndarray:
    """``[B]`` int: the segment of each row of a batch grouped by :func:`split_sizes`."""
    return np.repeat(np.arange(len(sizes)), np.asarray(sizes))


def negative_cosine(a: Array, b: Array) -> Array:
    """``mean_{rows, tokens} -cos(a_n, b_n)`` of ``[B, N, F]`` token arrays."""
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-6)
    b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-6)
    return -jnp.mean(jnp.sum(a * b, axis=-1))


def _bcast(a: Array, x: Array) -> Array:
    return a.reshape((a.shape[0],) + (1,) * (x.ndim - 1))


@dataclasses.dataclass(frozen=True)
class BlockwiseFlowMatching(Objective):
    """The BFM objective (module docstring); fields are its hyperparameters.

    Attributes:
      boundaries: ``(0, b_1, ..., 1)``, strictly increasing (``K = len - 1`` segments).
      align_weight: ``lambda_align`` (0 = no alignment loss; the official XL setting 0.05).
      encoder: ``encoder(x1 [B, H, W, C]) -> [B, N, F]`` (a traceable jax function; its
        output is not differentiated), or None (no alignment).
      encoder_dim: ``F`` (sets the network's ``align_dim``); None = the network's own.
      loss: per-row velocity premetric (default ``losses.L2()``: mean squared error).
      num_classes, label_dropout: class conditioning and CFG label dropout.
      stage: ``"velocity"`` (train R_phi, P, every V_k) or ``"frn"`` (train G_psi only).

    Sampler strings (:meth:`make_sampler`): one ``solver:nfe[:grid]`` per segment joined by
    ``|``, and ``@frn`` / ``@full`` (features from the FRN, or the feature network at every
    step).
    """

    segmented_sampler: ClassVar[bool] = True
    sampler_options: ClassVar[Mapping[str, SamplerOption]] = {
        "frn": SamplerOption("frn", True, "Feature Residual Approximation"),
        "full": SamplerOption("frn", False, "the feature network at every step"),
    }

    boundaries: tuple[float, ...] = (0.0, 0.5, 1.0)
    align_weight: float = 0.0
    encoder: Callable[[Array], Array] | None = None
    encoder_dim: int | None = None
    loss: Any = losses.L2()
    num_classes: int | None = None
    label_dropout: float = 0.0
    stage: str = "velocity"

    def __post_init__(self):
        object.__setattr__(self, "boundaries", validate_boundaries(self.boundaries))
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}; got {self.stage!r}")
        if self.align_weight < 0:
            raise ValueError(f"align_weight must be >= 0; got {self.align_weight}")
        if self.align_weight > 0 and self.encoder is None:
            raise ValueError(
                "align_weight > 0 needs a representation encoder (objective.blockwise.encoder, "
                "e.g. 'digits'); set align_weight=0 to train without alignment"
            )
        if self.label_dropout and self.num_classes is None:
            raise ValueError("label_dropout > 0 needs num_classes (a class-conditional model)")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"label_dropout must be in [0, 1]; got {self.label_dropout}")

    @property
    def num_segments(self) -> int:
        return len(self.boundaries) - 1

    @property
    def frozen(self) -> tuple[str, ...]:  # type: ignore[override]
        """Stage 1 never updates G_psi; stage 2 updates nothing else."""
        if self.stage == "velocity":
            return ("frn",)
        return ("cond_embed", "feature_net", "projector") + tuple(
            f"segment_{k}" for k in range(self.num_segments)
        )

    # -- model --------------------------------------------------------------------------------
    def build_model(self, make):
        model = make(False)
        if not isinstance(model, BlockwiseFlowNet):
            raise ValueError(
                f"objective 'blockwise' trains the blockwise network; set model.name='blockwise' "
                f"(got {type(model).__name__})"
            )
        fields = {"num_segments": self.num_segments}
        if self.encoder_dim is not None:
            fields["align_dim"] = int(self.encoder_dim)
        return model.clone(**fields)

    def initial_params(self, fresh: Any, loaded: Any) -> Any:
        """A stage-2 (FRN) run starts from a stage-1 run's weights with a fresh G_psi."""
        check_same_structure(loaded, fresh)
        if self.stage == "frn":
            return {**loaded, "frn": fresh["frn"]}
        return loaded

    # -- training -----------------------------------------------------------------------------
    def draws(self, key: Array, batch: dict[str, Array]) -> dict[str, Any]:
        """The random draws of one step: segment ``sizes`` (static), ``t [B]`` (each in its
        segment), the segment bounds ``lo, hi [B]``, the noise ``x0``, the labels ``cond`` and
        the network's ``key_model``. Keys are split as :class:`FlowMatching` splits them, so
        ``K = 1`` draws exactly its ``t``, ``x0`` and labels."""
        x1 = batch["x1"]
        b = x1.shape[0]
        key_t, key_noise, key_drop, key_model = jax.random.split(key, 4)
        sizes = split_sizes(b, self.num_segments)
        seg = segment_of_rows(sizes)
        bounds = np.asarray(self.boundaries)
        lo = jnp.asarray(bounds[seg], x1.dtype)
        hi = jnp.asarray(bounds[seg + 1], x1.dtype)
        u = jax.random.uniform(key_t, (b,), x1.dtype)
        t = jnp.clip(lo + (hi - lo) * u, lo, hi)
        x0 = jax.random.normal(key_noise, x1.shape, x1.dtype)
        cond = None
        if self.num_classes is not None:
            if "label" not in batch:
                raise ValueError("a class-conditional objective needs batch['label']")
            cond = guidance.drop_labels(
                key_drop, batch["label"], self.label_dropout, self.num_classes
            )
        return dict(sizes=sizes, t=t, lo=lo, hi=hi, x0=x0, cond=cond, key_model=key_model)

    def loss_fn(
        self, params: Any, apply_fn: ApplyFn, batch: dict[str, Array], key: Array
    ) -> tuple[Array, Metrics]:
        d = self.draws(key, batch)
        if self.stage == "frn":
            return self._frn_loss(params, apply_fn, batch, d)
        x1, t, x0, cond = batch["x1"], d["t"], d["x0"], d["cond"]
        x_t = _bcast(t, x1) * x1 + (1.0 - _bcast(t, x1)) * x0
        target = x1 - x0
        v, r = apply_fn(
            params,
            x_t,
            t,
            cond,
            train=True,
            rng=d["key_model"],
            segment_sizes=d["sizes"],
            return_features=True,
        )
        per_row = self.loss(v, target)
        fm = jnp.mean(per_row)
        metrics = {"fm_loss": fm, **binned_means(per_row, t)}
        start = 0
        for k, n in enumerate(d["sizes"]):
            if n:
                metrics[f"loss_segment{k}"] = jnp.mean(per_row[start : start + n])
            start += n
        loss = fm
        if self.align_weight > 0:
            z = jax.lax.stop_gradient(self.encoder(x1)).astype(jnp.float32)
            if z.ndim != 3 or z.shape[:2] != r.shape[:2]:
                raise ValueError(
                    f"the encoder gives tokens of shape {tuple(z.shape)}; the alignment needs "
                    f"[B, {r.shape[1]}, F] (one per network token): change the encoder or the "
                    "network's patch size"
                )
            projected = apply_fn(params, r, None, None, method="project")
            if projected.shape[-1] != z.shape[-1]:
                raise ValueError(
                    f"the projector outputs {projected.shape[-1]} features but the encoder "
                    f"gives {z.shape[-1]}: set objective.blockwise.encoder_dim / model.align_dim"
                )
            align = negative_cosine(projected, z)
            metrics["align"] = align
            loss = loss + self.align_weight * align
        metrics["loss"] = loss
        return loss, metrics

    def _frn_loss(self, params, apply_fn, batch, d) -> tuple[Array, Metrics]:
        x1, t, x0, cond, lo, hi = batch["x1"], d["t"], d["x0"], d["cond"], d["lo"], d["hi"]
        x_t = _bcast(t, x1) * x1 + (1.0 - _bcast(t, x1)) * x0
        x_s = _bcast(lo, x1) * x1 + (1.0 - _bcast(lo, x1)) * x0
        anchor = jax.lax.stop_gradient(apply_fn(params, x_s, lo, cond, method="features"))
        target = jax.lax.stop_gradient(apply_fn(params, x_t, t, cond, method="features"))
        g = apply_fn(params, x_t, t, cond, method="residual", train=True, rng=d["key_model"])
        gamma = (t - lo) / (hi - lo)
        approx = anchor + gamma[:, None, None] * g
        per_row = jnp.mean(jnp.square(approx - target).reshape(t.shape[0], -1), axis=1)
        loss = jnp.mean(per_row)
        base = jnp.mean(jnp.square(anchor - target))
        return loss, {"loss": loss, "frn_anchor_only": base, **binned_means(per_row, t)}

    # -- sampling -----------------------------------------------------------------------------
    def segment_plan(self, solver: Any, nfe: Any, grid_spec: Any = "uniform") -> list[dict]:
        """Per-segment ``{solver, nfe, grid}`` (grids mapped onto the segments), checked.

        ``solver`` / ``nfe`` / ``grid_spec``: one value for every segment (the total ``nfe``
        is split evenly: it must be a multiple of ``K``), or sequences of ``K`` values (the
        per-segment form, ``nfe`` then per segment).
        """
        k_count = self.num_segments
        per_segment = isinstance(nfe, (list, tuple))
        if per_segment:
            if not (
                isinstance(solver, (list, tuple))
                and isinstance(grid_spec, (list, tuple))
                and len(solver) == len(nfe) == len(grid_spec)
            ):
                raise ValueError("the per-segment form needs one solver, NFE and grid per segment")
            if len(nfe) != k_count:
                raise ValueError(
                    f"the per-segment sampler gives {len(nfe)} segment(s) but the model has "
                    f"K={k_count}: give {k_count} settings joined by '|', e.g. "
                    f"{'|'.join(['euler:2'] * k_count)!r}"
                )
            settings = list(zip(solver, (int(n) for n in nfe), grid_spec))
        else:
            nfe = int(nfe)
            if nfe < k_count or nfe % k_count:
                raise ValueError(
                    f"nfe={nfe} does not split evenly over K={k_count} segments; give a "
                    f"multiple of {k_count} or the per-segment form "
                    f"(e.g. {'|'.join(['euler:2'] * k_count)!r})"
                )
            settings = [(solver, nfe // k_count, grid_spec)] * k_count
        plan = []
        for k, (slv, n, grid_text) in enumerate(settings):
            if getattr(slv, "needs_end_time", False) or not isinstance(slv, solvers_lib.Solver):
                raise ValueError(
                    f"segment {k}: {getattr(slv, 'name', slv)!r} is not an instantaneous-velocity "
                    "solver; use euler, heun, midpoint, rk4, dpm++2m, ..."
                )
            try:
                steps = slv.num_steps_for_nfe(n)
            except ValueError as err:
                raise ValueError(f"segment {k}: {err}") from None
            unit = grids.grid_from_spec(grid_text, steps)
            t_s, t_e = self.boundaries[k], self.boundaries[k + 1]
            grid = t_s + (t_e - t_s) * np.asarray(unit, np.float64)
            grid[0], grid[-1] = t_s, t_e
            plan.append(dict(solver=slv, nfe=n, grid=tuple(float(g) for g in grid), spec=grid_text))
        return plan

    def make_sampler(
        self,
        velocity: Callable[..., Array],
        solver: Any,
        nfe: Any,
        grid_spec: Any = "uniform",
        *,
        frn: bool | None = None,
    ) -> Callable[..., Array]:
        """The segment-wise sampler ``run(params, x0, cond) -> x1`` (jitted).

        Segment ``k`` integrates ``dx/dt = velocity(params, x, t, cond, segment=k)`` over its
        grid with its solver. ``frn`` (default: on for a stage-2 objective): R_phi is evaluated
        once per segment at ``x_{t_s}`` (both CFG branches in one batched call when
        ``velocity`` is guided) and the steps use the FRN features. ``run.network_calls``:
        evaluations per sample by kind (``{"full": n}`` or ``{"features": K, "frn": n}``),
        which :func:`flowjax.training.accounting.inference_flops` prices.
        """
        plan = self.segment_plan(solver, nfe, grid_spec)
        use_frn = (self.stage == "frn") if frn is None else bool(frn)
        guided = getattr(velocity, "guidance", None)
        bounds = self.boundaries

        def anchor_features(params, x, t_s, cond):
            t = jnp.full((x.shape[0],), t_s, x.dtype)
            if guided is not None and cond is not None:
                b = x.shape[0]
                null = jnp.full_like(cond, guided[1])
                r2 = velocity(
                    params,
                    jnp.concatenate([x, x]),
                    jnp.concatenate([t, t]),
                    jnp.concatenate([cond, null]),
                    method="features",
                )
                return jnp.stack([r2[:b], r2[b:]], axis=1)
            return velocity(params, x, t, cond, method="features")

        @jax.jit
        def run(params, x0, cond=None):
            x = x0
            for k, seg in enumerate(plan):
                extra: dict[str, Any] = {"segment": k}
                if use_frn:
                    extra["anchor"] = anchor_features(params, x, bounds[k], cond)
                    extra["frn_span"] = (bounds[k], bounds[k + 1])

                def f(x_, t_, c_, extra=extra):
                    return velocity(params, x_, t_, c_, **extra)

                f = solvers_lib.instantaneous_velocity(f)
                ts = jnp.asarray(seg["grid"], x.dtype)
                x = solvers_lib.sample(seg["solver"], f, x, ts, cond)
            return x

        total = sum(seg["nfe"] for seg in plan)
        run.network_calls = (
            {"features": self.num_segments, "frn": total} if use_frn else {"full": total}
        )
        run.plan = plan
        return run


def _encoder(name: str | None, cache_dir: str | None):
    """``(encoder, dim)`` from a config name: ``None``/``"none"``; ``"digits"`` (the digits
    classifier of :mod:`flowjax.models.digits_classifier`, trained here and cached);
    ``"digits:<file>"`` (its weights read from that msgpack file, never downloaded)."""
    if name in (None, "", "none"):
        return None, None
    from flowjax.models import digits_classifier

    kind, _, path = str(name).partition(":")
    if kind != "digits":
        raise ValueError(
            f"unknown representation encoder {name!r}; use 'digits', 'digits:<weights file>' or "
            "'none' (or pass a callable to BlockwiseFlowMatching(encoder=...))"
        )
    if path:
        path = os.path.expanduser(path)
        if not os.path.exists(path):
            raise ValueError(f"encoder weights {path} do not exist (they are never downloaded)")
        params, _ = digits_classifier.load_weights(path)
        classifier = digits_classifier.TrainedDigitsClassifier(params)
    else:
        classifier = digits_classifier.TrainedDigitsClassifier.load_or_train(cache_dir=cache_dir)
    return classifier.spatial_encoder(), digits_classifier.ARCHITECTURE["conv_features"][-1]


# The config section's keys: the dataclass's hyperparameters in config form (K or explicit
# boundaries; the encoder by name; the stage as a flag). Unset ones keep the dataclass defaults.
_FIELDS = ("num_segments", "boundaries", "align_weight", "encoder", "encoder_cache_dir", "frn")


def build_blockwise(cfg: Any, num_classes: int | None) -> BlockwiseFlowMatching:
    """The objective of ``objective.name='blockwise'``; fields of ``objective.blockwise``:
    ``num_segments`` (K, equal segments), ``boundaries`` (explicit, overrides K),
    ``align_weight``, ``encoder`` (``'digits'``, ``'digits:<file>'``, ``'none'``),
    ``encoder_cache_dir``, ``frn`` (train the Feature Residual Approximation, stage 2)."""
    section = {k: v for k, v in dict(cfg.get("blockwise", None) or {}).items() if v is not None}
    spec.check_keys(section, _FIELDS, "objective.blockwise")
    kwargs: dict[str, Any] = {}
    if "boundaries" in section:
        kwargs["boundaries"] = tuple(float(b) for b in section["boundaries"])
    elif "num_segments" in section:
        kwargs["boundaries"] = equal_boundaries(int(section["num_segments"]))
    if "align_weight" in section:
        kwargs["align_weight"] = float(section["align_weight"])
    if kwargs.get("align_weight", BlockwiseFlowMatching.align_weight) > 0:
        kwargs["encoder"], kwargs["encoder_dim"] = _encoder(
            section.get("encoder"), section.get("encoder_cache_dir")
        )
    if section.get("frn", False):
        kwargs["stage"] = "frn"
    return BlockwiseFlowMatching(
        num_classes=num_classes, label_dropout=float(cfg.get("label_dropout", 0.0)), **kwargs
    )
