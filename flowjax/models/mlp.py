"""A residual MLP velocity network for low-dimensional data (2-D toys, flattened vectors)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax

from flowjax.models.layers import ConditioningEmbedding
from flowjax.types import Model


class MLPVelocity(nn.Module, Model):
    """``v(x, t, cond)`` for ``x [B, ...]`` (flattened internally; output has x's shape).

    ``depth`` residual blocks ``h += Dense(SiLU(Dense(LN(h) + emb)))`` of width ``hidden``.
    The output layer starts at zero, so the untrained network predicts ``v = 0``. The residual
    stream after block ``i`` is sown as the feature ``feature_{i}`` (see
    :func:`flowjax.models.make_apply_fn`'s ``capture``).
    """

    hidden: int = 256
    depth: int = 3
    time_scale: float = 1000.0
    num_classes: int | None = None
    use_end_time: bool = False
    end_time_scale: float | None = None  # scale of t_end - t (None: time_scale)

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Any ``[B, ...]`` with at least one feature works (examples are flattened)."""
        if len(shape) < 2 or min(shape[1:]) < 1:
            raise ValueError(f"MLPVelocity takes x [B, ...] with features; got shape {shape}")

    @nn.compact
    def __call__(self, x, t, cond=None, *, t_end=None, train: bool = False):
        del train
        flat = x.reshape(x.shape[0], -1)
        emb = ConditioningEmbedding(
            self.hidden,
            self.time_scale,
            self.use_end_time,
            self.num_classes,
            end_time_scale=self.end_time_scale,
        )(t, cond, t_end)
        h = nn.Dense(self.hidden)(flat)
        for i in range(self.depth):
            z = nn.LayerNorm()(h) + emb
            z = nn.Dense(self.hidden)(nn.silu(z))
            h = h + nn.Dense(self.hidden)(nn.silu(z))
            self.sow("intermediates", f"feature_{i}", h)
        out = nn.Dense(flat.shape[1], kernel_init=nn.initializers.zeros)(nn.silu(nn.LayerNorm()(h)))
        return out.reshape(x.shape).astype(x.dtype)


def num_params(params) -> int:
    """Number of parameters (works on arrays and on ``jax.eval_shape`` results)."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))
