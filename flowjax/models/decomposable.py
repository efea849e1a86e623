"""The one network of Decomposable Flow Matching: a DiT that sees every pyramid stage at once
(docs/maths/decomposable.md).

    v = DecomposableDiT(x [B, S, H, W, C], t [B], cond [B] | None,
                        stage_times=[B, S], stage_mask=[B, S]) -> [B, S, H, W, C]

``x`` holds the noisy stages packed by :func:`flowjax.pyramid.pack` (stage 1 the coarsest,
``[H / 2^(S-1), W / 2^(S-1)]``, in the top-left corner of slot 0); the output holds one
velocity per stage in the same layout (zeros in the padding). Times are flowjax times (noise 0,
data 1) per stage; ``stage_mask[:, s] = 0`` marks a stage not yet started. Called without
``stage_times`` every stage is at time ``t`` and active; called on images ``[B, H, W, C]`` the
network sees their pyramid (how :func:`flowjax.models.init_params` initialises it).

The architecture (DFM paper, Sec. 3.3, on DiT's blocks):

- **per-stage patch embedders**: stage ``s`` is cut into ``p_s x p_s`` patches with
  ``p_s = patch_size * 2^(s-1)``, so every stage gives the same ``(H_1/p_1)(W_1/p_1)`` token
  grid; each stage has its own linear embedding and the token embeddings are SUMMED over
  stages, then the fixed 2-D sin-cos position embedding is added once. A masked stage's input
  is multiplied by zero before its embedder (its values cannot reach the output);
- **conditioning** ``c = sum_s TEmb_s(time_scale * t_s) + YEmb(label) + SEmb(q)`` with one
  timestep embedder per stage, the class table (null class ``num_classes`` for guidance) and
  an embedding of the stage being generated ``q`` (the number of active stages); a masked
  stage's time is read as 0;
- ``depth`` adaLN-Zero :class:`~flowjax.models.dit.DiTBlock` s (shared by all stages);
- **per-stage output heads**: LN, a zero-initialised modulation and a zero-initialised linear
  map to ``p_s^2 C`` per token, unpatchified to the stage's own resolution. At initialisation
  the output is exactly zero.

Sharding: weights carry DiT's logical axis names and activations are constrained to
``("batch", "length", "act_embed")``, so the DiT rule table shards this network too.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flowjax import pyramid
from flowjax.models.attention import check_implementation
from flowjax.models.dit import (
    DiTBlock,
    _layer_norm,
    _modulate,
    check_flop_part,
    dit_forward_flops,
    patchify,
    unpatchify,
)
from flowjax.models.layers import TimeEmbedding, check_conditioning, logical
from flowjax.models.positions import SinCos2D
from flowjax.types import Model

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros


class DecomposableDiT(nn.Module, Model):
    """One DiT over all the stages of a Laplacian pyramid (see the module docstring).

    Attributes:
      num_stages: ``S``, the number of pyramid stages (stage 1 the coarsest).
      patch_size: the patch of stage 1; stage ``s`` uses ``patch_size * 2^(s-1)``.
      hidden_size, depth, num_heads, mlp_ratio: the DiT trunk.
      time_scale: each timestep embedder sees ``time_scale * t_s``.
      num_classes: class-conditional with a null class ``num_classes``, or ``None``.
      use_end_time: must stay False (an instantaneous-velocity network); present so the model
        registry can build it like the other networks.
      dtype, param_dtype: compute and storage dtypes.
      remat: rematerialise each block in the backward pass.
      attention: the attention implementation (:mod:`flowjax.models.attention`).
    """

    num_stages: int = 2
    patch_size: int = 1
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    time_scale: float = 1.0
    num_classes: int | None = None
    use_end_time: bool = False
    dtype: Any = "float32"
    param_dtype: Any = "float32"
    remat: bool = False
    attention: str | None = "xla"

    def stage_patch_sizes(self) -> tuple[int, ...]:
        return tuple(self.patch_size * 2**s for s in range(self.num_stages))

    def check_input(self, shape: tuple[int, ...]) -> None:
        """A clear ``ValueError`` unless images ``[B, H, W, C]`` (or packed stages
        ``[B, S, H, W, C]``) fit this network."""
        if self.use_end_time:
            raise ValueError(
                "DecomposableDiT is an instantaneous-velocity network; it cannot be used by an "
                "average-velocity objective"
            )
        if len(shape) == 5:
            if shape[1] != self.num_stages:
                raise ValueError(
                    f"packed stages have {shape[1]} slots but the network has num_stages="
                    f"{self.num_stages}"
                )
            shape = (shape[0], *shape[2:])
        if len(shape) != 4:
            raise ValueError(
                f"DecomposableDiT takes images [B, H, W, C] or packed stages [B, S, H, W, C]; "
                f"got shape {tuple(shape)}"
            )
        coarse = pyramid.stage_shapes(shape[1:], self.num_stages)[0]
        if coarse[0] % self.patch_size or coarse[1] % self.patch_size:
            raise ValueError(
                f"the coarsest stage ({coarse[0]}x{coarse[1]}) is not divisible by "
                f"patch_size={self.patch_size}; pick a patch size that divides it"
            )
        check_implementation(self.attention)
        if self.hidden_size % self.num_heads or self.hidden_size % 4:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_heads="
                f"{self.num_heads} and by 4 (the 2-D position embedding)"
            )

    @nn.compact
    def __call__(
        self, x, t, cond=None, *, stage_times=None, stage_mask=None, t_end=None, train=False
    ):
        del train  # no dropout
        if t_end is not None:
            raise ValueError("DecomposableDiT is an instantaneous-velocity network; no t_end")
        self.check_input(x.shape)
        check_conditioning(t, cond, None, self.num_classes, False)
        if x.ndim == 4:  # images: their pyramid
            x = pyramid.pack(pyramid.decompose(x, self.num_stages))
        b, s_count = x.shape[0], self.num_stages
        if stage_times is None:
            stage_times = jnp.broadcast_to(t[:, None], (b, s_count))
        if stage_mask is None:
            stage_mask = jnp.ones((b, s_count), x.dtype)
        if stage_times.shape != (b, s_count) or stage_mask.shape != (b, s_count):
            raise ValueError(
                f"stage_times and stage_mask must have shape [B, S] = {(b, s_count)}; got "
                f"{stage_times.shape} and {stage_mask.shape}"
            )
        dtype, param_dtype = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        d = self.hidden_size
        stages = pyramid.unpack(x)
        mask = stage_mask.astype(jnp.float32)
        grid_h, grid_w = (
            stages[0].shape[1] // self.patch_size,
            stages[0].shape[2] // self.patch_size,
        )

        tokens = 0.0
        for s, (p_s, stage) in enumerate(zip(self.stage_patch_sizes(), stages)):
            masked = stage * mask[:, s, None, None, None].astype(stage.dtype)
            tokens = tokens + nn.Dense(
                d, kernel_init=logical(_xavier, ("patch", "embed")), name=f"x_embed_{s}", **kw
            )(patchify(masked, p_s).astype(dtype)).astype(jnp.float32)
        tokens = tokens + jnp.asarray(SinCos2D().table(d, grid_h, grid_w))[None]
        tokens = nn.with_logical_constraint(tokens, ("batch", "length", "act_embed"))

        times = jnp.where(mask > 0, stage_times.astype(jnp.float32), 0.0)
        c = 0.0
        for s in range(s_count):
            c = c + TimeEmbedding(
                d, time_scale=self.time_scale, partitioned=True, name=f"t_embed_{s}", **kw
            )(times[:, s]).astype(jnp.float32)
        table_init = logical(nn.initializers.normal(0.02), ("vocab", "embed"))
        if self.num_classes is not None:
            y_embed = nn.Embed(
                self.num_classes + 1, d, embedding_init=table_init, name="y_embed", **kw
            )
            c = c + y_embed(cond).astype(jnp.float32)
        current = jnp.clip(jnp.sum(mask > 0, axis=1) - 1, 0, s_count - 1)
        stage_embed = nn.Embed(s_count, d, embedding_init=table_init, name="stage_embed", **kw)
        c = c + stage_embed(current).astype(jnp.float32)
        c = nn.with_logical_constraint(c, ("batch", "act_embed"))

        block = nn.remat(DiTBlock) if self.remat else DiTBlock
        for i in range(self.depth):
            tokens = block(
                hidden_size=d,
                num_heads=self.num_heads,
                mlp_ratio=self.mlp_ratio,
                attention=self.attention,
                name=f"block_{i}",
                **kw,
            )(tokens, c)
            self.sow("intermediates", f"feature_{i}", tokens)

        normed = _layer_norm(tokens)
        outs = []
        for s, (p_s, stage) in enumerate(zip(self.stage_patch_sizes(), stages)):
            mod = nn.Dense(
                2 * d,
                kernel_init=logical(_zeros, ("embed", "modulation")),
                name=f"final_mod_{s}",
                **kw,
            )(nn.silu(c))
            shift, scale = jnp.split(mod.astype(jnp.float32), 2, -1)
            out = _modulate(normed, shift, scale).astype(dtype)
            out = nn.Dense(
                p_s * p_s * stage.shape[-1],
                kernel_init=logical(_zeros, ("embed", "patch")),
                name=f"final_{s}",
                **kw,
            )(out)
            outs.append(unpatchify(out.astype(jnp.float32), p_s, stage.shape[1], stage.shape[2]))
        return pyramid.pack(outs).astype(x.dtype)

    def forward_flops(self, element_shape: tuple[int, ...], part: str = "full") -> float:
        """Matrix-multiply FLOPs (2 per multiply-add) of one evaluation for ONE example of
        ``element_shape = (H, W, C)``, counted as :func:`flowjax.models.dit_forward_flops`:
        the DiT trunk on the shared token grid with stage 1's embedder and head, plus, for each
        further stage of ``H_s x W_s`` pixels, its patch embedding ``2 H_s W_s C D``, its
        timestep MLP ``2 (256 D + D^2)``, its head modulation ``4 D^2`` and output map
        ``2 H_s W_s C D``."""
        check_flop_part(part, ("full",))
        shapes = pyramid.stage_shapes(element_shape, self.num_stages)
        d = self.hidden_size
        flops = dit_forward_flops(
            image_shape=shapes[0],
            patch_size=self.patch_size,
            hidden_size=d,
            depth=self.depth,
            mlp_ratio=self.mlp_ratio,
        )
        for h, w, c in shapes[1:]:
            flops += 2 * h * w * c * d + 2 * (256 * d + d * d) + 4 * d * d + 2 * h * w * c * d
        return float(flops)
