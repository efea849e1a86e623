"""Conditional flow matching / rectified flow (docs/maths/flow_matching.md).

    L(theta) = E_{t ~ p(t), x0 ~ N(0, I), x1 ~ data} [ D( v_theta(x_t, t, c), v_cond ) ]
    x_t = alpha_t x1 + sigma_t x0,          v_cond = alpha'_t x1 + sigma'_t x0

With the default linear path, ``x_t = t x1 + (1 - t) x0`` and ``v_cond = x1 - x0``; the
minimiser is the marginal velocity ``E[x1 - x0 | x_t = x]``. Classifier-free guidance is
trained by replacing each label with the null label ``num_classes`` with probability
``label_dropout``.

Besides the loss, the metrics report the loss in four equal bins of ``t`` (``loss_t0`` is
the noisiest quarter), which is where time-sampler ablations show their effect.

Token batches (images of mixed sizes, docs/maths/any_resolution.md): a batch that carries
``"mask"`` holds ``x1`` as patch tokens ``[B, N, p^2 C]`` with ``mask [B, N]`` and
``positions [B, N, 2]`` (:class:`flowjax.data.tokens.TokenBatch`). One time per image, the
noise of token ``n`` drawn from the key folded with ``n`` (so a token's noise does not depend
on how far the batch is padded), ``mask`` and ``positions`` (and ``context`` /
``context_mask`` when present) passed to the network as keywords, and the per-token loss
averaged over each image's valid tokens, then over the images
(:func:`flowjax.data.tokens.masked_token_mean`); the binned metrics use the per-image losses.
Padding never enters the loss or its gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from flowjax import paths as paths_lib
from flowjax.data.tokens import masked_token_mean, per_image_token_mean
from flowjax.objectives import guidance, losses
from flowjax.time import laws
from flowjax.types import ApplyFn, Array, Metrics, Objective

NUM_TIME_BINS = 4

#: Batch entries of a mixed-size token batch that the network receives as keywords when present.
TOKEN_KEYS = ("mask", "positions", "context", "context_mask")


def binned_means(values: Array, t: Array, num_bins: int = NUM_TIME_BINS) -> Metrics:
    """Mean of ``values [B]`` within ``num_bins`` equal bins of ``t [B]`` (NaN-free: empty
    bins report 0)."""
    bins = jnp.clip((t * num_bins).astype(jnp.int32), 0, num_bins - 1)
    one_hot = jax.nn.one_hot(bins, num_bins, dtype=values.dtype)
    sums = one_hot.T @ values
    counts = one_hot.sum(axis=0)
    means = sums / jnp.maximum(counts, 1.0)
    return {f"loss_t{i}": means[i] for i in range(num_bins)}


@dataclasses.dataclass(frozen=True)
class FlowMatching(Objective):
    """Flow-matching objective; fields are its hyperparameters.

    Attributes:
      path: the interpolant (default linear).
      time_sampler: training-time distribution over t (see :mod:`flowjax.time.laws`).
      loss: per-sample premetric (``losses.L2()`` or ``losses.PseudoHuber(...)``).
      num_classes: number of classes for conditional models, or None (unconditional).
      label_dropout: probability of replacing a label by the null label ``num_classes``.
    """

    path: paths_lib.Path = paths_lib.LinearPath()
    time_sampler: Any = laws.Uniform()
    loss: Any = losses.L2()
    num_classes: int | None = None
    label_dropout: float = 0.0

    optional_batch_keys: ClassVar[tuple[str, ...]] = TOKEN_KEYS

    def __post_init__(self):
        if self.label_dropout and self.num_classes is None:
            raise ValueError("label_dropout > 0 needs num_classes (a class-conditional model)")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"label_dropout must be in [0, 1]; got {self.label_dropout}")

    def conditioning(self, batch: dict[str, Array], key: Array) -> Array | None:
        if self.num_classes is None:
            return None
        if "label" not in batch:
            raise ValueError("a class-conditional objective needs batch['label']")
        return guidance.drop_labels(key, batch["label"], self.label_dropout, self.num_classes)

    def loss_fn(
        self, params: Any, apply_fn: ApplyFn, batch: dict[str, Array], key: Array
    ) -> tuple[Array, Metrics]:
        x1 = batch["x1"]
        tokens = "mask" in batch  # a mixed-size token batch (module docstring)
        if tokens:
            self._check_token_batch(x1, batch["mask"])
        key_t, key_noise, key_drop, key_model = jax.random.split(key, 4)
        t = self.time_sampler.sample(key_t, (x1.shape[0],)).astype(x1.dtype)
        draw = token_noise if tokens else jax.random.normal
        x0 = draw(key_noise, x1.shape, x1.dtype)
        x_t = self.path.interpolate(x0, x1, t)
        target = self.path.target_velocity(x0, x1, t)
        cond = self.conditioning(batch, key_drop)
        extra = {k: batch[k] for k in TOKEN_KEYS if k in batch}
        v = apply_fn(params, x_t, t, cond, train=True, rng=key_model, **extra)
        if tokens:  # the L2 premetric per token, averaged over valid tokens per image
            per_token = jnp.mean(jnp.square(v - target), axis=-1)
            loss = masked_token_mean(per_token, batch["mask"])
            per_sample, _ = per_image_token_mean(per_token, batch["mask"])
        else:
            per_sample = self.loss(v, target)
            loss = jnp.mean(per_sample)
        return loss, {"loss": loss, **binned_means(per_sample, t)}

    def _check_token_batch(self, x1: Array, mask: Array) -> None:
        if x1.ndim != 3 or mask.shape != x1.shape[:2]:
            raise ValueError(
                f"a token batch needs x1 [B, N, p^2 C] and mask [B, N]; got {tuple(x1.shape)} "
                f"and {tuple(mask.shape)} (flowjax.data.tokens.pack_images builds both)"
            )
        if not isinstance(self.loss, losses.L2):
            name = getattr(self.loss, "name", type(self.loss).__name__)
            raise ValueError(
                f"objective.loss={name!r} spans a whole example; token batches train with the "
                "per-token objective.loss='l2'"
            )


def token_noise(key: Array, shape: tuple[int, int, int], dtype: Any) -> Array:
    """Standard normal noise ``[B, N, F]`` whose token ``n`` is drawn with ``fold_in(key, n)``:
    a token's noise is the same whatever the number ``N`` of (padded) tokens."""
    b, n, f = shape
    per_token = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (b, f), dtype))
    return jnp.swapaxes(per_token(jnp.arange(n)), 0, 1)
