"""FiTv2: the Flexible Vision Transformer for diffusion, as a velocity net (docs/maths/fitv2.md).

    v = FiTv2(x, t [B], cond [B] | None, *, mask=None, positions=None, t_end=None)

``x`` is an image batch ``[B, H, W, C]`` (any size that is a multiple of the patch: how a
sampler calls it) or a packed token batch ``[B, N, p^2 C]`` with ``mask [B, N]`` and
``positions [B, N, 2]`` (images of mixed sizes, :mod:`flowjax.data.tokens`); the output has the
layout of ``x``, exactly zero at padding (:func:`flowjax.models.anyres.token_input`). ``t`` is
flowjax time (noise 0, data 1), fed to the cos-first sinusoid unscaled (``time_scale=1``).

The architecture (Lu et al., FiTv2, arXiv 2410.13925; the official code's FiT with
``adaln_type="lora"``, SwiGLU, QK LayerNorm and RoPE):

- **tokens**: a linear map ``p^2 C -> D`` with bias; no absolute position embedding;
- **conditioning** ``c = TEmb(t) [+ YEmb(label)]`` (null class ``num_classes``);
- **AdaLN-LoRA**: one global ``g = Linear_{D->6D}(SiLU(c))`` shared by every block, and per
  block ``m_b = Linear_{r->6D}(Linear_{D->r}(SiLU(c))) + g`` (rank ``r = lora_rank``, no
  activation between), split into ``(shift1, scale1, gate1, shift2, scale2, gate2)``;
- **block**: ``x += gate1 Attn(LN(x)(1 + scale1) + shift1)``, ``x += gate2 SwiGLU(LN(x)(1 +
  scale2) + shift2)``, LN without affine parameters (eps 1e-6);
- **attention**: ``qkv`` with bias; each head's q and k layer-normalised over the head dim (no
  affine, eps 1e-6) and then rotated by 2-D RoPE in the FiT layout (the height half, then the
  width half of the head); padded keys hidden (``key_mask``); the attention output multiplied
  by the mask, then projected (with bias);
- **SwiGLU** of hidden width ``floor(8 D / 3)`` with biases;
- **final layer**: ``LN(x)(1 + scale) + shift`` with ``(shift, scale) = Linear_{D->2D}(SiLU(c))``,
  then ``Linear_{D -> p^2 C}``; the output multiplied by the mask.

Initialisation: xavier-uniform kernels, zero biases; the time MLP and the label table
``N(0, 0.02)``; zero for the last linear map of every AdaLN branch, the global AdaLN, the
final AdaLN and the final linear map: at initialisation the output is exactly 0.

Resolution extrapolation: ``rope`` is a spec (``"rope"``, ``"visionntk"``, ``"visionyarn"``,
...; :mod:`flowjax.models.positions`) read at call time with the sampled grid ``(H/p, W/p)``
against ``train_grid``, so the same weights sample at any size with any rule by changing that
one field. A token batch (training) has no single grid and is always encoded with plain
frequencies.

Sharding, mixed precision, ``remat`` and ``scan_blocks`` as in :class:`flowjax.models.DiT`:
every weight carries logical axis names (``embed``, ``mlp``, ``heads``, ``kv``,
``modulation``, ``patch``, ``freq``, ``vocab``; the LoRA rank is unnamed, so replicated),
activations are constrained to ``("batch", "length", "act_embed")`` between blocks.

Presets (:data:`FITV2_PRESETS`, ``variant="XL/2"``): XL (36, 1152, 16, r 288) and 3B (40,
2304, 24, r 576) as (depth, width, heads, LoRA rank) are the released configs; S, B and L take
the DiT's depth, width and heads with ``r = D / 4`` (the released ratio): inferred.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowjax.models.anyres import SwiGLU, TokenInput, rotary_from_spec, swiglu_hidden, token_input
from flowjax.models.attention import attention as fused_attention
from flowjax.models.attention import check_implementation, use_jvp_rule
from flowjax.models.dit import (
    DIT_PRESETS,
    PATCH_SIZES,
    REMAT_POLICIES,
    _layer_norm,
    _modulate,
    check_flop_part,
    final_layer,
    run_blocks,
)
from flowjax.models.layers import ConditioningEmbedding, logical
from flowjax.models.positions import RoPE
from flowjax.types import Model

#: Published sizes: (depth, width, heads, AdaLN-LoRA rank). XL and 3B are the released
#: configs (configs/fitv2/config_fitv2_{xl,3B}.yaml); S, B and L are the DiT's sizes with the
#: released rank ratio r = D / 4 (inferred: the paper names B and L, their configs are not out).
FITV2_PRESETS: dict[str, dict[str, int]] = {
    **{
        size: dict(DIT_PRESETS[size], lora_rank=DIT_PRESETS[size]["hidden_size"] // 4)
        for size in ("S", "B", "L")
    },
    "XL": dict(depth=36, hidden_size=1152, num_heads=16, lora_rank=288),
    "3B": dict(depth=40, hidden_size=2304, num_heads=24, lora_rank=576),
}

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros


def _xavier_from(in_axis, out_axis):
    return nn.initializers.xavier_uniform(in_axis=in_axis, out_axis=out_axis)


def fitv2_variant(variant: str) -> dict[str, int]:
    """``"XL/2"`` -> ``{"depth": 36, "hidden_size": 1152, "num_heads": 16, "lora_rank": 288,
    "patch_size": 2}``."""
    size, sep, patch = str(variant).partition("/")
    if size not in FITV2_PRESETS or not sep or not patch.isdigit() or int(patch) not in PATCH_SIZES:
        raise ValueError(
            f"unknown FiTv2 variant {variant!r}; use '<size>/<patch>' with size in "
            f"{list(FITV2_PRESETS)} and patch in {list(PATCH_SIZES)}, e.g. 'XL/2'"
        )
    return dict(FITV2_PRESETS[size], patch_size=int(patch))


class FiTv2Block(nn.Module):
    """One FiTv2 block: ``x [B, N, D] -> [B, N, D]`` (module docstring).

    ``c [B, D]`` is the conditioning, ``g [B, 6D]`` the global AdaLN projection, ``mask
    [B, N]`` (None: every token valid) hides padded keys and zeroes the attention output at
    padding, ``positions [B, N, 2]`` feed ``rope`` on the static ``grid`` (None: plain
    frequencies) at time ``t``.
    """

    hidden_size: int
    num_heads: int
    mlp_hidden: int
    lora_rank: int
    rope: RoPE
    grid: tuple[int, int] | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention: str | None = "xla"
    attention_jvp_rule: bool = False

    @nn.compact
    def __call__(self, x, c, g, mask, positions, t):
        d, heads = self.hidden_size, self.num_heads
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        low = nn.Dense(
            self.lora_rank, kernel_init=logical(_xavier, ("embed", None)), name="lora_down", **kw
        )(nn.silu(c))
        mod = nn.Dense(
            6 * d, kernel_init=logical(_zeros, (None, "modulation")), name="lora_up", **kw
        )(low)
        mod = mod.astype(jnp.float32) + g
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, -1)

        h = _modulate(_layer_norm(x), shift1, scale1).astype(self.dtype)
        qkv = nn.Einsum(
            (d, 3, heads, d // heads),
            "btd,dshk->btshk",
            kernel_init=logical(_xavier_from(0, (1, 2, 3)), ("embed", None, "heads", "kv")),
            bias_init=logical(_zeros, (None, "heads", "kv")),
            use_bias=True,
            name="qkv",
            **kw,
        )(h)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, N, heads, head_dim]
        # QK-norm over each head's channels, then the rotation (FiTv2's order).
        q = self.rope.rotate(_layer_norm(q), positions, grid=self.grid, t=t).astype(self.dtype)
        k = self.rope.rotate(_layer_norm(k), positions, grid=self.grid, t=t).astype(self.dtype)
        attn = fused_attention(
            q,
            k,
            v,
            key_mask=mask,
            implementation=self.attention,
            jvp_rule=self.attention_jvp_rule,
        )
        if mask is not None:
            attn = attn * mask[:, :, None, None].astype(attn.dtype)
        attn = nn.Einsum(
            (heads, d // heads, d),
            "bthk,hkd->btd",
            kernel_init=logical(_xavier_from((0, 1), 2), ("heads", "kv", "embed")),
            use_bias=True,
            name="proj",
            **kw,
        )(attn)
        x = x + gate1[:, None, :] * attn.astype(jnp.float32)

        h = _modulate(_layer_norm(x), shift2, scale2).astype(self.dtype)
        h = SwiGLU(self.mlp_hidden, use_bias=True, name="mlp", **kw)(h)
        x = x + gate2[:, None, :] * h.astype(jnp.float32)
        return nn.with_logical_constraint(x, ("batch", "length", "act_embed"))


class FiTv2(nn.Module, Model):
    """FiTv2 velocity network (see the module docstring).

    Attributes:
      patch_size, hidden_size, depth, num_heads, lora_rank: the architecture
        (``variant="XL/2"`` in a config fills them); ``lora_rank=None`` is ``hidden_size // 4``,
        the released ratio (288 at XL, 576 at 3B).
      mlp_ratio: SwiGLU hidden width ``floor(2 mlp_ratio D / 3)`` (3072 at D = 1152).
      rope: the rotary encoding as a ``name,k=v`` spec (:func:`flowjax.models.anyres.
        rotary_from_spec`, FiT layout): ``"rope"`` in training; ``"visionntk"``,
        ``"visionyarn"``, ... at sampling to extrapolate beyond ``train_grid`` (no retraining).
      train_grid: tokens per side seen in training (RoPE's ``train_size``; 16 for 256^2 images
        as 32^2 latents with patch 2).
      max_tokens: refuse inputs longer than this (None: any length).
      time_scale, num_classes, use_end_time, end_time_scale: as :class:`flowjax.models.DiT`.
      dtype, param_dtype, remat, remat_policy, scan_blocks, attention, attention_jvp_rule: as
        :class:`flowjax.models.DiT` (``scan_blocks``: ``params["blocks"]["block"]`` stacked on
        a ``"layers"`` axis; off: ``params["block_{i}"]``).
    """

    patch_size: int = 2
    hidden_size: int = 1152
    depth: int = 36
    num_heads: int = 16
    lora_rank: int | None = None
    mlp_ratio: float = 4.0
    rope: str = "rope"
    train_grid: int = 16
    max_tokens: int | None = None
    time_scale: float = 1.0
    num_classes: int | None = None
    use_end_time: bool = False
    end_time_scale: float | None = None
    dtype: Any = "float32"
    param_dtype: Any = "float32"
    remat: bool = False
    remat_policy: str = "nothing_saveable"
    scan_blocks: bool = False
    attention: str | None = "xla"
    attention_jvp_rule: bool | None = None

    variant_fields = staticmethod(fitv2_variant)  # config ``model.variant="XL/2"``

    @property
    def rank(self) -> int:
        """The AdaLN-LoRA rank: :attr:`lora_rank`, or ``hidden_size // 4`` when None."""
        return self.hidden_size // 4 if self.lora_rank is None else self.lora_rank

    @property
    def mlp_hidden(self) -> int:
        return swiglu_hidden(self.hidden_size, self.mlp_ratio)

    def rotary(self) -> RoPE:
        """The rotary encoding of :attr:`rope` in the FiT layout at :attr:`train_grid`."""
        return rotary_from_spec(self.rope, "fit", self.train_grid)

    def forward_flops(self, element_shape: tuple[int, ...], part: str = "full") -> float:
        """:func:`fitv2_forward_flops` for one image of ``element_shape`` ``(H, W, C)``: its
        own ``(H/p)(W/p)`` tokens only (padding is not counted)."""
        check_flop_part(part, ("full",))
        return fitv2_forward_flops(
            image_shape=tuple(element_shape),
            patch_size=self.patch_size,
            hidden_size=self.hidden_size,
            depth=self.depth,
            lora_rank=self.rank,
            mlp_hidden=self.mlp_hidden,
            use_end_time=self.use_end_time,
        )

    def num_tokens(self, element_shape: tuple[int, ...]) -> int:
        """Patches of one image ``(H, W, C)``."""
        return (element_shape[0] // self.patch_size) * (element_shape[1] // self.patch_size)

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Clear errors for a configuration or an input ``shape`` (images ``[B, H, W, C]`` or
        tokens ``[B, N, p^2 C]``) this network cannot take; nothing is computed."""
        check_implementation(self.attention)
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"unknown remat_policy {self.remat_policy!r}; use one of {list(REMAT_POLICIES)}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"fitv2: hidden_size={self.hidden_size} must be divisible by num_heads="
                f"{self.num_heads}"
            )
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"fitv2: lora_rank must be a positive integer; got {self.lora_rank!r}")
        self.rotary().check_head_dim(self.hidden_size // self.num_heads)
        if len(shape) == 4:  # the input contract's checks, on shapes only
            jax.eval_shape(
                lambda x: (
                    token_input(x, self.patch_size, max_tokens=self.max_tokens, name="fitv2").tokens
                ),
                jax.ShapeDtypeStruct(tuple(shape), jnp.float32),
            )

    @nn.compact
    def __call__(
        self, x, t, cond=None, *, mask=None, positions=None, t_end=None, train: bool = False
    ):
        del train  # no dropout (FiTv2 trains without it)
        self.check_input(x.shape)
        rope = self.rotary()
        inp: TokenInput = token_input(
            x,
            self.patch_size,
            mask=mask,
            positions=positions,
            max_tokens=self.max_tokens,
            name="fitv2",
        )
        dtype, param_dtype = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        d = self.hidden_size
        # An image batch has every token valid: no key mask (faster fused kernels).
        key_mask = None if inp.grid is not None else inp.mask

        tokens = nn.Dense(
            d, kernel_init=logical(_xavier, ("patch", "embed")), name="x_embed", **kw
        )(inp.tokens.astype(dtype))
        tokens = nn.with_logical_constraint(
            tokens.astype(jnp.float32), ("batch", "length", "act_embed")
        )
        cond_emb = ConditioningEmbedding(
            d,
            time_scale=self.time_scale,
            use_end_time=self.use_end_time,
            end_time_scale=self.end_time_scale,
            num_classes=self.num_classes,
            partitioned=True,
            name="cond_embed",
            **kw,
        )(t, cond, t_end)
        cond_emb = nn.with_logical_constraint(cond_emb.astype(jnp.float32), ("batch", "act_embed"))
        global_mod = nn.Dense(
            6 * d,
            kernel_init=logical(_zeros, ("embed", "modulation")),
            name="global_modulation",
            **kw,
        )(nn.silu(cond_emb)).astype(jnp.float32)

        jvp_rule = use_jvp_rule(self.attention_jvp_rule, self.attention, self.use_end_time)
        block_kw = dict(
            hidden_size=d,
            num_heads=self.num_heads,
            mlp_hidden=self.mlp_hidden,
            lora_rank=self.rank,
            rope=rope,
            grid=inp.grid,
            attention=self.attention,
            attention_jvp_rule=jvp_rule,
            **kw,
        )
        tokens = run_blocks(
            self,
            FiTv2Block,
            block_kw,
            tokens,
            cond_emb,
            global_mod,
            key_mask,
            inp.positions,
            t,
            depth=self.depth,
            remat=self.remat,
            remat_policy=self.remat_policy,
            scan_blocks=self.scan_blocks,
        )

        out = final_layer(tokens, cond_emb, inp.tokens.shape[-1], **kw)
        return inp.output(out).astype(x.dtype)


def fitv2_forward_flops(
    *,
    image_shape: tuple[int, int, int],
    patch_size: int,
    hidden_size: int,
    depth: int,
    lora_rank: int,
    mlp_hidden: int,
    use_end_time: bool = False,
    frequency_dim: int = 256,
) -> float:
    """Matrix-multiply FLOPs (2 per multiply-add) of one forward pass for ONE image.

    With ``T = (H/p)(W/p)`` tokens of the image (its valid tokens: padding is not counted),
    width ``D``, SwiGLU width ``m`` and LoRA rank ``r``, each block costs

        2 T (3 D^2 + D^2 + 3 D m)     (qkv, output projection, SwiGLU's three maps)
      + 4 T^2 D                       (scores and the weighted sum of values)
      + 2 (D r + r 6D)                (AdaLN-LoRA, once per image)

    plus the patch embedding ``2 T p^2 C D``, the time MLP ``2 (f D + D^2)`` (twice with an
    end time), the global AdaLN ``2 D 6D``, and the final layer ``2 D 2D + 2 T D p^2 C``.
    A mixed-size batch costs the sum of its images' counts.
    """
    h, w, c = image_shape
    p, d, r = patch_size, hidden_size, lora_rank
    tokens = (h // p) * (w // p)
    block = 2 * tokens * (4 * d * d + 3 * d * mlp_hidden) + 4 * tokens * tokens * d
    block += 2 * (d * r + r * 6 * d)
    embed = 2 * tokens * p * p * c * d
    time_mlp = 2 * (frequency_dim * d + d * d) * (2 if use_end_time else 1)
    final = 2 * d * 2 * d + 2 * tokens * d * p * p * c
    return float(depth * block + embed + time_mlp + 2 * d * 6 * d + final)
