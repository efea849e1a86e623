"""MeanFlow (Geng et al. 2025): one-step generation by regressing the average velocity.

Time convention: noise at 0, data at 1 (docs/maths/meanflow.md; MeanFlow's code uses the opposite
one, converted with ``s = 1 - t_MF``, ``e = 1 - r_MF``, ``ubar = -u_MF``; see
:mod:`flowjax.convention`). The network is an average-velocity model
``u_theta(x, s, cond, t_end=e)`` approximating ``ubar(x, s, e) = (Phi_{s->e}(x) - x)/(e - s)``
(it embeds ``s`` and ``h = e - s``). Differentiating ``(e - s) ubar(x_s, s, e) =
int_s^e v(x_tau, tau) dtau`` in ``s`` gives the MeanFlow identity

    ubar(x_s, s, e) = v(x_s, s) + (e - s) d/ds ubar(x_s, s, e),
    d/ds ubar       = (d ubar / dx) v(x_s, s) + d ubar / ds          (e held fixed)

Training step (official JAX code, converted):

1. ``(s, e)``: two iid draws of ``time_sampler`` (logit-normal, location +0.4 over our t =
   MeanFlow's -0.4), ``s = min``, ``e = max``; the first ``floor(equal_fraction * B)`` rows get
   ``e = s`` (ImageNet: 75%).
2. ``x_s = s x1 + (1 - s) x0``, ``v_c = x1 - x0``.
3. Guidance folded into the target (no CFG at sampling): for labelled rows with ``s`` in
   ``guidance_interval``, ``v~ = omega v_c + kappa u(x_s, s, y, s) + (1 - omega - kappa)
   u(x_s, s, null, s)`` (network in eval mode, no gradient); elsewhere ``v~ = v_c``. Label
   dropout (those rows get the null class and ``v~ = v_c``), ``label_dropout_rows``:
   ``"leading"`` (default, the published JAX code): a count ``K ~ Binomial(B, label_dropout)``
   is drawn and the FIRST ``K`` rows are dropped, the rows that step 1 made ``e = s``, so the
   null class is trained on instantaneous velocities only (while ``K <= floor(equal_fraction
   B)``, which fails with negligible probability at the published 10% / 75%);
   ``"random"``: each row independently with probability ``label_dropout``, any ``(s, e)``.
   The effective CFG scale of the trained model is ``omega / (1 - kappa)``
   (:func:`effective_guidance_scale`).
4. One JVP: ``(u, du) = jvp(F, (x_s, s, e), (v~, 1, 0))``, ``F(x, s, e) = u_theta(x, s, y,
   t_end=e)``; the network computes ``h = e - s`` itself, so ``dh/ds = -1``. Only on the rows
   that need it: on the ``e = s`` rows the target's ``(e - s) du`` term is exactly zero, so
   those rows (the leading ``floor(equal_fraction * B)``, 75% on ImageNet) take a plain
   forward pass with target ``v~`` and the JVP runs on the other rows only. Same loss and
   gradients as one JVP over the batch (the published code; ``jvp_all_rows=True``), with the
   tangent work of a quarter of the batch instead of all of it.
5. ``u_tgt = sg(v~ + clip(e - s, 0, 1) du)``, ``Delta = sum_elements (u - u_tgt)^2`` and the
   adaptively weighted loss ``mean_batch(Delta / sg((Delta + c)^p))`` (``p = 0``: plain
   squared error; ImageNet ``p = 1``, ``c = 0.01``). Gradients flow only through ``u``.

Optionally ``+ dispersive(features)`` on intermediate features of the primal pass (§3.5).
Sampling: :class:`flowjax.solvers.FlowMap` (``flowmap:1`` = ``x0 + u(x0, 0, 1)``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from flowjax.objectives import guidance
from flowjax.objectives.dispersive import Dispersive
from flowjax.objectives.flow_matching import binned_means
from flowjax.time import laws
from flowjax.types import ApplyFn, Array, Metrics, Objective

LABEL_DROPOUT_ROWS = ("leading", "random")


def label_dropout_mask(key: Array, batch_size: int, prob: float, rows: str = "leading") -> Array:
    """``[B]`` bool: the rows whose label is dropped (step 3 of the module docstring).

    ``"leading"``: ``arange(B) < K`` with ``K = sum_i [u_i < prob]``, ``u_i ~ U(0, 1)`` iid
    (MeanFlow's code); ``"random"``: ``u_i < prob`` itself. Both drop ``Binomial(B, prob)``
    rows; only where they fall differs.
    """
    if rows not in LABEL_DROPOUT_ROWS:
        raise ValueError(
            f"label_dropout_rows must be one of {LABEL_DROPOUT_ROWS} ('leading': the published "
            f"rule, on the e = s rows; 'random': any row); got {rows!r}"
        )
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"label drop probability must be in [0, 1]; got {prob}")
    hit = jax.random.uniform(key, (batch_size,)) < prob
    if rows == "random":
        return hit
    return jnp.arange(batch_size) < jnp.sum(hit)


def effective_guidance_scale(omega: float, kappa: float) -> float:
    """The CFG scale ``omega / (1 - kappa)`` a MeanFlow model trained with (omega, kappa) has."""
    if kappa >= 1.0:
        raise ValueError(f"kappa must be < 1; got {kappa}")
    return omega / (1.0 - kappa)


def kappa_for_scale(omega: float, scale: float) -> float:
    """The ``kappa`` giving effective CFG scale ``scale`` with ``omega``: ``1 - omega/scale``."""
    if scale <= 0:
        raise ValueError(f"the effective guidance scale must be > 0; got {scale}")
    return 1.0 - omega / scale


def guided_velocity(v_c: Array, u_cond: Array, u_uncond: Array, omega, kappa) -> Array:
    """``omega v_c + kappa u_cond + (1 - omega - kappa) u_uncond`` (the target's velocity).

    At a fixed point of training (``u_cond`` equals this target and ``u_uncond`` the
    unconditional velocity ``v_u``), ``u_cond = v_u + omega / (1 - kappa) (v_c - v_u)``.
    """
    return omega * v_c + kappa * u_cond + (1.0 - omega - kappa) * u_uncond


def meanflow_target(net, x_s: Array, s: Array, e: Array, v_tilde: Array):
    """``(u, u_tgt, aux)`` with one JVP: ``u = net(x_s, s, e)`` and
    ``u_tgt = sg(v~ + clip(e - s, 0, 1) * d/ds u)``, where ``d/ds u`` is the derivative along
    the tangent ``(v~, 1, 0)`` (steps 4-5 of the module docstring).

    ``net(x, s, e) -> (u, aux)``; ``aux`` (e.g. captured features) comes from the primal pass.
    """
    u, du, aux = jax.jvp(
        net, (x_s, s, e), (v_tilde, jnp.ones_like(s), jnp.zeros_like(e)), has_aux=True
    )
    gap = _bcast(jnp.clip(e - s, 0.0, 1.0), x_s)
    return u, jax.lax.stop_gradient(v_tilde + gap * du), aux


def _concat_rows(first: Array, second: Array) -> Array:
    """The two row groups of one batch back in batch order (``[n, ...] + [B - n, ...]``)."""
    return jnp.concatenate([first, second], axis=0)


def _bcast(a: Array, x: Array) -> Array:
    return a.reshape((a.shape[0],) + (1,) * (x.ndim - 1))


@dataclasses.dataclass(frozen=True)
class MeanFlow(Objective):
    """The MeanFlow objective (module docstring); fields are its hyperparameters.

    Attributes:
      time_sampler: the law of each of the two time draws (default logit-normal(0.4, 1)).
      equal_fraction: fraction of rows with ``e = s`` (flow-matching rows).
      adaptive_p, adaptive_c: the adaptive weight ``1 / (Delta + c)^p``.
      num_classes, label_dropout: class conditioning and CFG label dropout.
      label_dropout_rows: where the dropped labels fall, ``"leading"`` (the published rule:
        the first rows, which are the ``e = s`` rows) or ``"random"`` (:func:`label_dropout_mask`).
      omega, kappa, guidance_interval: guidance folded into the target (``omega = 1,
        kappa = 0``: none); the interval is over ``s`` in flowjax time (None = all of [0, 1]).
      dispersive: optional :class:`~flowjax.objectives.dispersive.Dispersive` regulariser.
      jvp_all_rows: ``True`` runs the JVP over the whole batch, as the published code does;
        ``False`` (default) only over the rows with ``e > s`` possible (step 4): the same loss
        and gradients for less work. (A network with dropout draws its masks for the two row
        groups from two keys, so its draws differ between the settings.)
    """

    time_sampler: Any = laws.LogitNormal(loc=0.4, scale=1.0)
    equal_fraction: float = 0.75
    adaptive_p: float = 1.0
    adaptive_c: float = 0.01
    num_classes: int | None = None
    label_dropout: float = 0.0
    label_dropout_rows: str = "leading"
    omega: float = 1.0
    kappa: float = 0.0
    guidance_interval: tuple[float, float] | None = None
    dispersive: Dispersive | None = None
    jvp_all_rows: bool = False

    average_velocity = True  # the network models u(x, s, cond, t_end)

    def __post_init__(self):
        if not 0.0 <= self.equal_fraction <= 1.0:
            raise ValueError(f"equal_fraction must be in [0, 1]; got {self.equal_fraction}")
        if self.adaptive_p < 0 or self.adaptive_c <= 0:
            raise ValueError(
                f"adaptive weight needs p >= 0 and c > 0; got p={self.adaptive_p}, "
                f"c={self.adaptive_c}"
            )
        if self.label_dropout and self.num_classes is None:
            raise ValueError("label_dropout > 0 needs num_classes (a class-conditional model)")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"label_dropout must be in [0, 1]; got {self.label_dropout}")
        if self.label_dropout_rows not in LABEL_DROPOUT_ROWS:
            raise ValueError(
                f"label_dropout_rows must be one of {LABEL_DROPOUT_ROWS} ('leading': the "
                f"published rule, on the e = s rows; 'random': any row); got "
                f"{self.label_dropout_rows!r}"
            )
        if self.guided and self.num_classes is None:
            raise ValueError(
                f"guidance in the target (omega={self.omega}, kappa={self.kappa}) needs a "
                "class-conditional model; set omega=1, kappa=0 for an unconditional one"
            )
        if self.kappa >= 1.0:
            raise ValueError(
                f"kappa must be < 1 (effective scale omega/(1-kappa)); got {self.kappa}"
            )
        object.__setattr__(
            self, "guidance_interval", guidance.validate_interval(self.guidance_interval)
        )

    @property
    def guided(self) -> bool:
        return self.omega != 1.0 or self.kappa != 0.0

    def target_velocity(self, params, apply_fn, x_s, s, v_c, labels, dropped) -> Array:
        """``v~`` of step 3 (no gradient): the guided velocity, or ``v_c`` where unguided."""
        if not self.guided:
            return v_c
        null = jnp.full_like(labels, self.num_classes)
        u_uncond = apply_fn(params, x_s, s, null, t_end=s)
        u_cond = apply_fn(params, x_s, s, labels, t_end=s) if self.kappa else jnp.zeros_like(v_c)
        mixed = jax.lax.stop_gradient(
            guided_velocity(v_c, u_cond, u_uncond, self.omega, self.kappa)
        )
        use = ~dropped
        if self.guidance_interval is not None:
            lo, hi = self.guidance_interval
            use = use & (s >= lo) & (s <= hi)
        return jnp.where(_bcast(use, v_c), mixed, v_c)

    def draws(self, key: Array, batch: dict[str, Array]) -> dict[str, Any]:
        """The random draws of one step from ``key`` (steps 1-3): ``s, e [B]``, the noise
        ``x0`` (shape of ``batch["x1"]``), the network's labels ``y_in`` (None if
        unconditional; null where dropped), the ``dropped [B]`` mask and the network's
        ``key_model``. :meth:`loss_fn` is ``loss_from_draws(..., draws(key, batch))``."""
        x1 = batch["x1"]
        b = x1.shape[0]
        key_t, key_noise, key_drop, key_model = jax.random.split(key, 4)
        s, e = laws.sample_pair(key_t, (b,), self.time_sampler, self.equal_fraction, x1.dtype)
        x0 = jax.random.normal(key_noise, x1.shape, x1.dtype)
        y_in = dropped = None
        if self.num_classes is not None:
            if "label" not in batch:
                raise ValueError("a class-conditional objective needs batch['label']")
            labels = batch["label"]
            dropped = label_dropout_mask(key_drop, b, self.label_dropout, self.label_dropout_rows)
            y_in = jnp.where(dropped, jnp.asarray(self.num_classes, labels.dtype), labels)
        return dict(s=s, e=e, x0=x0, y_in=y_in, dropped=dropped, key_model=key_model)

    def loss_fn(
        self, params: Any, apply_fn: ApplyFn, batch: dict[str, Array], key: Array
    ) -> tuple[Array, Metrics]:
        return self.loss_from_draws(params, apply_fn, batch, self.draws(key, batch))

    def loss_from_draws(
        self, params: Any, apply_fn: ApplyFn, batch: dict[str, Array], draws: dict[str, Any]
    ) -> tuple[Array, Metrics]:
        """Steps 2-5 (and the dispersive term) for the draws of :meth:`draws`.

        Draws made otherwise must keep its layout: ``e = s`` on the leading
        ``floor(equal_fraction * B)`` rows, which skip the JVP (or set ``jvp_all_rows=True``).
        """
        x1 = batch["x1"]
        b = x1.shape[0]
        s, e, x0, y_in = draws["s"], draws["e"], draws["x0"], draws["y_in"]
        dropped, key_model = draws["dropped"], draws["key_model"]
        x_s = _bcast(s, x1) * x1 + (1.0 - _bcast(s, x1)) * x0
        v_c = x1 - x0
        labels = None if self.num_classes is None else batch["label"]
        v_tilde = self.target_velocity(params, apply_fn, x_s, s, v_c, labels, dropped)

        capture = self.dispersive.layers if self.dispersive is not None else None

        def network(rows: slice, rng: Array):
            """``F(x, s, e) -> (u, features)`` on the batch rows ``rows``."""
            y = None if y_in is None else y_in[rows]

            def net(x, s_, e_):
                out = apply_fn(params, x, s_, y, t_end=e_, train=True, rng=rng, capture=capture)
                return out if capture else (out, {})

            return net

        n_eq = 0 if self.jvp_all_rows else laws.num_equal_rows(b, self.equal_fraction)
        if n_eq == 0:
            u, u_tgt, features = meanflow_target(
                network(slice(None), key_model), x_s, s, e, v_tilde
            )
        else:
            # Step 4 on the rows that need it: e = s on the leading n_eq rows, where the
            # target is v~ itself and a plain forward pass gives u.
            eq, rest = slice(0, n_eq), slice(n_eq, None)
            u, features = network(eq, key_model)(x_s[eq], s[eq], e[eq])
            u_tgt = jax.lax.stop_gradient(v_tilde[eq])
            if n_eq < b:
                net = network(rest, jax.random.fold_in(key_model, 1))
                u_r, u_tgt_r, features_r = meanflow_target(
                    net, x_s[rest], s[rest], e[rest], v_tilde[rest]
                )
                u, u_tgt = _concat_rows(u, u_r), _concat_rows(u_tgt, u_tgt_r)
                features = jax.tree.map(_concat_rows, features, features_r)
        delta = jnp.sum(jnp.square(u - u_tgt).reshape(b, -1), axis=1)
        weight = jax.lax.stop_gradient(1.0 / (delta + self.adaptive_c) ** self.adaptive_p)
        mf_loss = jnp.mean(weight * delta)
        mse = delta / (x1.size // b)
        metrics = {"mf_loss": mf_loss, "mse": jnp.mean(mse), **binned_means(mse, s)}
        loss = mf_loss
        if self.dispersive is not None:
            disp = self.dispersive(features)
            metrics["dispersive"] = disp
            loss = loss + disp
        metrics["loss"] = loss
        return loss, metrics
