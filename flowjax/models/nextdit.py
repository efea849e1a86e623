"""Next-DiT (Lumina-Next): an any-resolution transformer with a condition sequence
(docs/maths/nextdit.md).

    v = NextDiT(x, t, cond=None, *, context=None, context_mask=None, mask=None, positions=None)

``x`` is an image batch ``[B, H, W, C]`` (any size that is a multiple of the patch) or a
mixed-size token batch ``[B, N, p^2 C]`` with ``mask`` and ``positions``
(:func:`flowjax.models.anyres.token_input`); the output has the layout of ``x`` (tokens: exactly
zero at padding). ``t`` is flowjax time (noise 0, data 1), seen as ``time_scale * t``.

Condition sequence ``y [B, L, Dc]`` with its mask: a user's ``context`` arrays (text-encoder
states or any embeddings, ``context_dim`` wide) and/or a class label as one token, a row of a
table of ``num_classes + 1`` rows (row ``num_classes`` is the null class of CFG); with both, the
label token comes first. Every row of ``context_mask`` must keep one valid token.

The network, with ``D`` the width, ``Dc = min(D, 1024)`` the conditioning width, ``H`` query
heads and ``G`` key/value heads of ``Dh = D / H`` channels:

- tokens: ``Linear(p^2 C -> D)`` of each patch; padded tokens of a token batch are replaced by a
  learned ``pad_token`` and hidden from every attention by the key mask;
- ``c = TimeMLP(t) + Linear(LN(masked_mean(y)))`` (width ``Dc``);
- ``depth`` blocks, each with sandwich RMSNorms and tanh-gated, scale-only modulation
  ``(a1, g1, a2, g2) = Linear(SiLU(c))``::

      h  = RMSNorm(x) (1 + a1)
      q  = RoPE(LN_q(W_q h)), k = RoPE(LN_k(W_k h)), v = W_v h      (LN across the heads)
      SA = attention(q, k, v; image key mask, logit scale s_attn)
      CA = attention(q, LN_ky(W_ky RMSNorm(y)), W_vy RMSNorm(y); condition mask)   (same q)
      x += tanh(g1) RMSNorm(W_o(SA + tanh(gate_head) CA))
      x += tanh(g2) RMSNorm(SwiGLU(RMSNorm(x) (1 + a2)))

- final layer ``Linear(LN(x) (1 + Linear(SiLU(c))))`` to ``p^2 C_out`` (the first ``C`` kept).

RoPE is 2-D in the interleaved ``"nextdit"`` layout (pair ``j`` turns by the row if ``j`` is
even, by the column if odd), chosen by the ``rope`` spec (any rule of
:mod:`flowjax.models.positions`; the time-dependent ones get ``t`` per sample) and changed at
sampling without retraining. With ``proportional_attention`` the self-attention logits are
scaled by ``sqrt(log N / log N_train)`` (``N`` the image's own valid tokens, ``N_train =
train_grid^2``) on top of ``1/sqrt(Dh)``.

At initialisation the modulation, the gates and the final layer are zero, so every block is the
identity and the output is exactly zero. Weights carry logical axis names like the DiT's
(:mod:`flowjax.models.dit`); activations are constrained to ``("batch", "length",
"act_embed")`` between blocks. Published size (:data:`NEXTDIT_PRESETS`): ``"2B"``
(Lumina-Next-T2I: width 2304, 24 layers, 32 heads, 8 key/value heads, Gemma-2B's 2048-wide
states).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flowjax.models.anyres import SwiGLU, rotary_from_spec, token_input
from flowjax.models.attention import attention as fused_attention
from flowjax.models.attention import check_implementation, use_jvp_rule
from flowjax.models.dit import REMAT_POLICIES, check_flop_part, run_blocks
from flowjax.models.layers import TimeEmbedding, logical
from flowjax.types import Array, Model

NEXTDIT_PRESETS: dict[str, dict[str, Any]] = {
    "2B": dict(
        patch_size=2,
        hidden_size=2304,
        depth=24,
        num_heads=32,
        num_kv_heads=8,
        multiple_of=256,
        context_dim=2048,
    ),
}

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros
_normal = nn.initializers.normal(0.02)


def nextdit_variant(variant: str) -> dict[str, Any]:
    """``"2B"`` -> the fields of Lumina-Next-T2I's Next-DiT (:data:`NEXTDIT_PRESETS`)."""
    if variant not in NEXTDIT_PRESETS:
        raise ValueError(
            f"unknown Next-DiT variant {variant!r}; use one of {list(NEXTDIT_PRESETS)}"
        )
    return dict(NEXTDIT_PRESETS[variant])


def nextdit_ffn_hidden(width: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """SwiGLU width: ``int(8 D / 3)``, times ``ffn_dim_multiplier`` (then floored), rounded up
    to ``multiple_of`` (6144 at ``D = 2304``, ``multiple_of = 256``)."""
    hidden = int(8 * width / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * -(-hidden // multiple_of)


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * w`` over the last axis, in float32 (``w`` starts at 1)."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        w = self.param("scale", logical(nn.initializers.ones, ("embed",)), (x.shape[-1],))
        x = x.astype(jnp.float32)
        return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + self.eps) * w


class HeadsLayerNorm(nn.Module):
    """Affine LayerNorm over all heads at once (``[..., heads, Dh]`` normalised as one vector of
    ``heads * Dh``; eps 1e-5): Lumina's QK-norm "across heads", in float32."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape, names = x.shape[-2:], ("heads", "kv")
        scale = self.param("scale", logical(nn.initializers.ones, names), shape)
        bias = self.param("bias", logical(_zeros, names), shape)
        x = x.astype(jnp.float32)
        mean = jnp.mean(x, (-2, -1), keepdims=True)
        var = jnp.mean(jnp.square(x - mean), (-2, -1), keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


def _project(x: Array, heads: int, head_dim: int, name: str, kw) -> Array:
    """``[B, T, Din] -> [B, T, heads, head_dim]``, no bias (an einsum with full kernel shape)."""
    return nn.Einsum(
        (x.shape[-1], heads, head_dim),
        "btd,dhk->bthk",
        use_bias=False,
        kernel_init=logical(
            nn.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2)), ("embed", "heads", "kv")
        ),
        name=name,
        **kw,
    )(x)


class NextDiTBlock(nn.Module):
    """One Next-DiT block (module docstring): ``x [B, N, D] -> [B, N, D]``.

    ``rope`` rotates queries and keys (``grid`` static, or None for a token batch);
    ``q_factor [B]`` (or None) multiplies the self-attention logits (proportional attention);
    ``mask [B, N]`` / ``y_mask [B, L]`` (or None) hide padded image / condition keys.
    """

    hidden_size: int
    num_heads: int
    num_kv_heads: int
    ffn_hidden: int
    rope: Any
    grid: tuple[int, int] | None = None
    norm_eps: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention: str | None = "xla"
    attention_jvp_rule: bool = False

    @nn.compact
    def __call__(self, x, c, y, y_mask, mask, positions, t, q_factor):
        d, heads, groups = self.hidden_size, self.num_heads, self.num_kv_heads
        dh = d // heads
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        mod = nn.Dense(
            4 * d,
            kernel_init=logical(_zeros, ("embed", "modulation")),
            name="adaLN_modulation",
            **kw,
        )(nn.silu(c))
        scale1, gate1, scale2, gate2 = jnp.split(mod.astype(jnp.float32), 4, -1)

        h = (RMSNorm(self.norm_eps, name="norm1")(x) * (1 + scale1[:, None])).astype(self.dtype)
        q = HeadsLayerNorm(name="q_norm")(_project(h, heads, dh, "q", kw))
        k = HeadsLayerNorm(name="k_norm")(_project(h, groups, dh, "k", kw))
        v = _project(h, groups, dh, "v", kw)
        q = self.rope.rotate(q, positions, grid=self.grid, t=t).astype(self.dtype)
        k = self.rope.rotate(k, positions, grid=self.grid, t=t).astype(self.dtype)
        attend = dict(implementation=self.attention, jvp_rule=self.attention_jvp_rule)
        q_self = q if q_factor is None else (q * q_factor[:, None, None, None]).astype(q.dtype)
        out = fused_attention(q_self, k, v, key_mask=mask, **attend).astype(jnp.float32)

        y = RMSNorm(self.norm_eps, name="norm_context")(y).astype(self.dtype)
        ky = HeadsLayerNorm(name="ky_norm")(_project(y, groups, dh, "ky", kw)).astype(self.dtype)
        vy = _project(y, groups, dh, "vy", kw)
        cross = fused_attention(q, ky, vy, key_mask=y_mask, **attend).astype(jnp.float32)
        gate = self.param("gate", logical(_zeros, ("heads",)), (heads,), self.param_dtype)
        out = out + jnp.tanh(gate)[:, None] * cross
        out = nn.Einsum(
            (heads, dh, d),
            "bthk,hkd->btd",
            use_bias=False,
            kernel_init=logical(
                nn.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2), ("heads", "kv", "embed")
            ),
            name="proj",
            **kw,
        )(out.astype(self.dtype))
        x = x + jnp.tanh(gate1)[:, None] * RMSNorm(self.norm_eps, name="norm2")(out)

        h = RMSNorm(self.norm_eps, name="ffn_norm1")(x) * (1 + scale2[:, None])
        h = SwiGLU(self.ffn_hidden, use_bias=False, name="ffn", **kw)(h.astype(self.dtype))
        x = x + jnp.tanh(gate2)[:, None] * RMSNorm(self.norm_eps, name="ffn_norm2")(h)
        return nn.with_logical_constraint(x, ("batch", "length", "act_embed"))


class NextDiT(nn.Module, Model):
    """Lumina-Next's Next-DiT velocity network (see the module docstring).

    Attributes:
      patch_size, hidden_size, depth, num_heads: the architecture; ``num_kv_heads`` key/value
        heads (grouped-query attention; None: ``num_heads``); ``multiple_of`` and
        ``ffn_dim_multiplier`` size the SwiGLU (:func:`nextdit_ffn_hidden`); ``norm_eps`` of
        the RMSNorms. ``variant="2B"`` fills the published size.
      context_dim: width of the condition sequence (diffusers' ``cross_attention_dim``): the
        user's ``context`` arrays and the class-label table share it.
      num_classes: labels ``[B]`` become a one-token condition (null class ``num_classes``).
      learn_sigma: ``2C`` outputs of which the first ``C`` are the velocity (as released).
      rope: the rotary spec (``"rope"``, ``"time_switch"``, ``"time_aware"``, ``"ntk"``, ...),
        in the ``"nextdit"`` layout at ``train_size = train_grid``; set at sampling.
      train_grid: tokens per side seen in training (RoPE's ``train_size``; ``N_train =
        train_grid^2`` for proportional attention).
      proportional_attention: scale the self-attention logits by ``sqrt(log_{N_train} N)``.
      max_tokens: refuse inputs of more tokens.
      time_scale: the network sees ``time_scale * t`` (1: Lumina's raw time).
      dtype, param_dtype, attention, attention_jvp_rule, remat, remat_policy, scan_blocks: as
        for :class:`flowjax.models.dit.DiT`.
    """

    patch_size: int = 2
    hidden_size: int = 2304
    depth: int = 24
    num_heads: int = 32
    num_kv_heads: int | None = None
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    context_dim: int | None = None
    num_classes: int | None = None
    use_end_time: bool = False
    learn_sigma: bool = False
    rope: str = "rope"
    train_grid: int = 16
    proportional_attention: bool = False
    max_tokens: int | None = None
    time_scale: float = 1.0
    dtype: Any = "float32"
    param_dtype: Any = "float32"
    remat: bool = False
    remat_policy: str = "nothing_saveable"
    scan_blocks: bool = False
    attention: str | None = "xla"
    attention_jvp_rule: bool | None = None

    variant_fields = staticmethod(nextdit_variant)  # config ``model.variant="2B"``

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def cond_width(self) -> int:
        """``min(D, 1024)``: the width of ``c``."""
        return min(self.hidden_size, 1024)

    @property
    def sequence_width(self) -> int:
        """Width of the condition sequence: ``context_dim``, else the label table's ``D``."""
        return self.hidden_size if self.context_dim is None else self.context_dim

    def rotary(self):
        """The rotary encoding of the ``rope`` spec in this network's layout."""
        return rotary_from_spec(self.rope, "nextdit", self.train_grid)

    # -- the Model contract -------------------------------------------------------------------

    def check_input(self, shape: tuple[int, ...]) -> None:
        """A clear ``ValueError`` for a configuration or an ``x`` shape this network refuses."""
        if self.use_end_time:
            raise ValueError(
                "nextdit models instantaneous velocities only; use an objective without an end "
                "time (or the DiT for average velocities)"
            )
        d, heads, groups = self.hidden_size, self.num_heads, self.kv_heads
        if d % heads or (d // heads) % 4:
            raise ValueError(
                f"hidden_size={d} must split into num_heads={heads} heads of a head dim "
                "divisible by 4 (2-D RoPE)"
            )
        if heads % groups:
            raise ValueError(
                f"num_kv_heads={groups} must divide num_heads={heads} (grouped-query attention)"
            )
        if self.proportional_attention and self.train_grid < 2:
            raise ValueError("proportional_attention needs train_grid >= 2 (log base N_train)")
        check_implementation(self.attention)
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"unknown remat_policy {self.remat_policy!r}; use one of {list(REMAT_POLICIES)}"
            )
        self.rotary().check_head_dim(d // heads)
        p = self.patch_size
        if len(shape) == 4:
            images = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
            jax.eval_shape(lambda a: token_input(a, p, max_tokens=self.max_tokens).tokens, images)
        elif len(shape) != 3 or shape[-1] % (p * p):
            raise ValueError(
                f"nextdit takes images [B, H, W, C] or tokens [B, N, p^2 C] (p={p}); got shape "
                f"{tuple(shape)}"
            )
        elif self.max_tokens is not None and shape[1] > self.max_tokens:
            raise ValueError(
                f"nextdit: the token batch has {shape[1]} tokens, more than max_tokens="
                f"{self.max_tokens}; pack shorter sequences or raise max_tokens"
            )

    def num_tokens(self, element_shape: tuple[int, ...]) -> int:
        """Image tokens of one ``(H, W, C)`` image."""
        return (element_shape[0] // self.patch_size) * (element_shape[1] // self.patch_size)

    def forward_flops(
        self, element_shape: tuple[int, ...], part: str = "full", context_length: int = 1
    ) -> float:
        """Matrix-multiply FLOPs (2 per multiply-add) of one forward pass on ONE image of
        ``(H, W, C)``: its own ``N`` tokens only (padding of a batch is not counted), with a
        condition of ``context_length`` tokens (1: a class label). Per block, with ``G Dh`` the
        key/value width and ``F`` the SwiGLU width::

            2 N D (2 D + 2 G Dh) + 4 N^2 D          (q, output, k, v; self-attention)
          + 4 L Dc' G Dh + 4 N L D                   (condition keys / values; cross-attention)
          + 6 N D F + 2 Dc (4 D)                     (SwiGLU; modulation, once per image)

        plus the patch embedding ``2 N p^2 C D``, the time MLP ``2 (256 Dc + Dc^2)``, the
        pooled condition ``2 Dc' Dc`` and the final layer ``2 Dc D + 2 N D p^2 C_out``
        (``Dc = min(D, 1024)``, ``Dc'`` the condition width).
        """
        check_flop_part(part, ("full",))
        h, w, c = element_shape
        p, d, dc, dy = self.patch_size, self.hidden_size, self.cond_width, self.sequence_width
        n, length = self.num_tokens(element_shape), int(context_length)
        kv = self.kv_heads * (d // self.num_heads)
        c_out = 2 * c if self.learn_sigma else c
        ffn = nextdit_ffn_hidden(d, self.multiple_of, self.ffn_dim_multiplier)
        block = (
            2 * n * d * (2 * d + 2 * kv)
            + 4 * n * n * d
            + 4 * length * dy * kv
            + 4 * n * length * d
            + 6 * n * d * ffn
            + 2 * dc * 4 * d
        )
        head = 2 * n * p * p * c * d + 2 * (256 * dc + dc * dc) + 2 * dy * dc
        final = 2 * dc * d + 2 * n * d * p * p * c_out
        return float(self.depth * block + head + final)

    # -- the network ----------------------------------------------------------------------------

    def _condition(self, cond, context, context_mask, batch: int, kw):
        """The condition sequence ``y [B, L, Dc']`` and its mask (None: every token valid)."""
        parts, masks = [], []
        if self.num_classes is not None:
            if cond is None:
                raise ValueError(
                    f"nextdit is class-conditional: pass labels [B] in [0, {self.num_classes}] "
                    f"({self.num_classes} = the null class)"
                )
            if cond.shape != (batch,) or not jnp.issubdtype(cond.dtype, jnp.integer):
                raise ValueError(f"labels must be integers [B] = [{batch}]; got {cond.shape}")
            table = nn.Embed(
                self.num_classes + 1,
                self.sequence_width,
                embedding_init=logical(_normal, ("vocab", "embed")),
                param_dtype=kw["param_dtype"],
                name="y_embed",
            )
            parts.append(table(cond)[:, None].astype(jnp.float32))
            masks.append(jnp.ones((batch, 1), bool))
        elif cond is not None:
            raise ValueError("nextdit has num_classes=None (no label table) but got labels")
        if context is None and self.context_dim is not None and self.is_initializing():
            context = jnp.zeros((batch, 1, self.context_dim), jnp.float32)
        if context is not None:
            if self.context_dim is None:
                raise ValueError(
                    "nextdit was built with context_dim=None and takes no context; set "
                    "model.context_dim to the width of the condition arrays"
                )
            if (
                context.ndim != 3
                or context.shape[0] != batch
                or context.shape[2] != (self.context_dim)
            ):
                raise ValueError(
                    f"context must be [B, L, context_dim] = [{batch}, L, {self.context_dim}]; "
                    f"got {tuple(context.shape)}"
                )
            if context_mask is None:
                context_mask = jnp.ones(context.shape[:2], bool)
            elif context_mask.shape != context.shape[:2] or context_mask.dtype != jnp.bool_:
                raise ValueError(
                    f"context_mask must be bool [B, L] = {tuple(context.shape[:2])} (True at "
                    f"valid condition tokens); got {context_mask.dtype} "
                    f"{tuple(context_mask.shape)}"
                )
            parts.append(context.astype(jnp.float32))
            masks.append(context_mask)
        elif context_mask is not None:
            raise ValueError("context_mask was given without context")
        if not parts:
            raise ValueError(
                "nextdit needs a condition sequence: labels (model with num_classes) or "
                "context=[B, L, context_dim] (model with context_dim); got neither"
            )
        y, y_mask = jnp.concatenate(parts, 1), jnp.concatenate(masks, 1)
        return y, (None if len(masks) == 1 and self.context_dim is None else y_mask)

    @nn.compact
    def __call__(
        self,
        x,
        t,
        cond=None,
        *,
        context=None,
        context_mask=None,
        mask=None,
        positions=None,
        t_end=None,
        train: bool = False,
    ):
        del train  # no dropout
        self.check_input(x.shape)
        if t_end is not None:
            raise ValueError("nextdit takes no t_end (it models instantaneous velocities)")
        inp = token_input(
            x,
            self.patch_size,
            mask=mask,
            positions=positions,
            max_tokens=self.max_tokens,
            name="nextdit",
        )
        b, n = inp.mask.shape
        if t.shape != (b,):
            raise ValueError(f"t must have shape [B] = [{b}]; got {tuple(t.shape)}")
        dtype, param_dtype = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        y, y_mask = self._condition(cond, context, context_mask, b, kw)
        d, dc = self.hidden_size, self.cond_width

        tokens = nn.Dense(
            d, kernel_init=logical(_xavier, ("patch", "embed")), name="x_embed", **kw
        )(inp.tokens.astype(dtype)).astype(jnp.float32)
        pad = self.param("pad_token", logical(_normal, ("embed",)), (d,), param_dtype)
        key_mask = None
        if inp.grid is None:  # a token batch: padding becomes the learned pad token, hidden
            tokens = jnp.where(inp.mask[..., None], tokens, pad.astype(jnp.float32))
            key_mask = inp.mask
        tokens = nn.with_logical_constraint(tokens, ("batch", "length", "act_embed"))

        c = TimeEmbedding(dc, time_scale=self.time_scale, partitioned=True, name="t_embed", **kw)(
            t
        ).astype(jnp.float32)
        weights = jnp.ones(y.shape[:2], jnp.float32) if y_mask is None else y_mask
        weights = weights.astype(jnp.float32)[..., None]
        pooled = jnp.sum(weights * y, 1) / jnp.sum(weights, 1)
        pooled = nn.LayerNorm(
            epsilon=1e-5,
            dtype=jnp.float32,
            param_dtype=param_dtype,
            scale_init=logical(nn.initializers.ones, ("embed",)),
            bias_init=logical(_zeros, ("embed",)),
            name="context_norm",
        )(pooled)
        c = c + nn.Dense(
            dc, kernel_init=logical(_zeros, ("embed", "mlp")), name="context_pool", **kw
        )(pooled.astype(dtype)).astype(jnp.float32)
        c = nn.with_logical_constraint(c, ("batch", "act_embed"))

        q_factor = None
        if self.proportional_attention:
            count = jnp.sum(inp.mask, -1).astype(jnp.float32)
            n_train = jnp.asarray(self.train_grid**2, jnp.float32)
            q_factor = jnp.sqrt(jnp.log(count) / jnp.log(n_train))  # 1 exactly at N = N_train

        block_kw = dict(
            hidden_size=d,
            num_heads=self.num_heads,
            num_kv_heads=self.kv_heads,
            ffn_hidden=nextdit_ffn_hidden(d, self.multiple_of, self.ffn_dim_multiplier),
            rope=self.rotary(),
            grid=inp.grid,
            norm_eps=self.norm_eps,
            attention=self.attention,
            attention_jvp_rule=use_jvp_rule(
                self.attention_jvp_rule, self.attention, self.use_end_time
            ),
            **kw,
        )
        tokens = run_blocks(
            self,
            NextDiTBlock,
            block_kw,
            tokens,
            *(c, y, y_mask, key_mask, inp.positions, t, q_factor),
            depth=self.depth,
            remat=self.remat,
            remat_policy=self.remat_policy,
            scan_blocks=self.scan_blocks,
        )

        channels = inp.channels
        c_out = 2 * channels if self.learn_sigma else channels
        scale = nn.Dense(
            d, kernel_init=logical(_zeros, ("embed", "modulation")), name="final_mod", **kw
        )(nn.silu(c))
        out = nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False, dtype=jnp.float32)(
            tokens
        ) * (1 + scale.astype(jnp.float32)[:, None])
        p = self.patch_size
        out = nn.Dense(
            p * p * c_out, kernel_init=logical(_zeros, ("embed", "patch")), name="final", **kw
        )(out.astype(dtype)).astype(jnp.float32)
        out = out.reshape(b, n, p * p, c_out)[..., :channels].reshape(b, n, p * p * channels)
        return inp.output(out).astype(x.dtype)


def params_from_diffusers(state: dict[str, Any], patch_size: int, num_heads: int) -> dict:
    """The parameters of :class:`NextDiT` (``scan_blocks=False``) from a diffusers
    ``LuminaNextDiT2DModel`` state dict (name -> numpy array).

    The map (``W.T``: a torch ``Linear`` weight transposed to a flax kernel; ``i`` the layer)::

        patch_embedder.proj            -> x_embed (inputs reordered from (C, p, p) to (p, p, C))
        pad_token                      -> pad_token
        time_caption_embed.timestep_embedder.linear_1 / linear_2 -> t_embed.Dense_0 / Dense_1
        time_caption_embed.caption_embedder.0 / .1               -> context_norm / context_pool
        layers.i.norm1.linear / .norm  -> block_i.adaLN_modulation / norm1
        layers.i.attn1.to_q/k/v        -> block_i.q / k / v          ([D, heads, Dh])
        layers.i.attn1.norm_q / norm_k -> block_i.q_norm / k_norm    ([heads, Dh])
        layers.i.attn2.to_k / to_v     -> block_i.ky / vy
        layers.i.attn2.norm_k          -> block_i.ky_norm
        layers.i.attn2.to_out.0        -> block_i.proj               ([heads, Dh, D])
        layers.i.gate, norm2, ffn_norm1, ffn_norm2, norm1_context -> the same names
                                          (norm1_context -> norm_context)
        layers.i.feed_forward.linear_1 / linear_3 / linear_2 -> block_i.ffn.w_gate / w_value / w_out
        norm_out.linear_1 / linear_2   -> final_mod / final

    diffusers' cross-attention ``attn2.to_q`` / ``attn2.norm_q`` are not read: Lumina's
    network has one query for both attentions (the self-attention's); a converted checkpoint
    holds copies.
    """
    state = {k: np.asarray(v, np.float32) for k, v in state.items()}
    p = patch_size

    def dense(prefix):
        out = {"kernel": state[f"{prefix}.weight"].T}
        if f"{prefix}.bias" in state:
            out["bias"] = state[f"{prefix}.bias"]
        return out

    def heads(prefix, width):
        w = state[f"{prefix}.weight"]  # [heads * Dh, Din]
        return {"kernel": w.T.reshape(w.shape[1], -1, width)}

    def heads_norm(prefix, width):
        return {
            "scale": state[f"{prefix}.weight"].reshape(-1, width),
            "bias": state[f"{prefix}.bias"].reshape(-1, width),
        }

    def scale(prefix):
        return {"scale": state[f"{prefix}.weight"]}

    w = state["patch_embedder.proj.weight"]  # [D, C p p]
    d = w.shape[0]
    dh = d // num_heads
    params = {
        "x_embed": {
            "kernel": w.reshape(d, -1, p, p).transpose(2, 3, 1, 0).reshape(-1, d),
            "bias": state["patch_embedder.proj.bias"],
        },
        "pad_token": state["pad_token"],
        "t_embed": {
            "Dense_0": dense("time_caption_embed.timestep_embedder.linear_1"),
            "Dense_1": dense("time_caption_embed.timestep_embedder.linear_2"),
        },
        "context_norm": {
            "scale": state["time_caption_embed.caption_embedder.0.weight"],
            "bias": state["time_caption_embed.caption_embedder.0.bias"],
        },
        "context_pool": dense("time_caption_embed.caption_embedder.1"),
        "final_mod": dense("norm_out.linear_1"),
        "final": dense("norm_out.linear_2"),
    }
    depth = len({k.split(".")[1] for k in state if k.startswith("layers.")})
    for i in range(depth):
        a = f"layers.{i}"
        out_w = state[f"{a}.attn2.to_out.0.weight"]  # [D, heads * Dh]
        params[f"block_{i}"] = {
            "adaLN_modulation": dense(f"{a}.norm1.linear"),
            "norm1": scale(f"{a}.norm1.norm"),
            "q": heads(f"{a}.attn1.to_q", dh),
            "k": heads(f"{a}.attn1.to_k", dh),
            "v": heads(f"{a}.attn1.to_v", dh),
            "q_norm": heads_norm(f"{a}.attn1.norm_q", dh),
            "k_norm": heads_norm(f"{a}.attn1.norm_k", dh),
            "ky": heads(f"{a}.attn2.to_k", dh),
            "vy": heads(f"{a}.attn2.to_v", dh),
            "ky_norm": heads_norm(f"{a}.attn2.norm_k", dh),
            "proj": {"kernel": out_w.T.reshape(num_heads, dh, d)},
            "gate": state[f"{a}.gate"],
            "norm2": scale(f"{a}.norm2"),
            "ffn_norm1": scale(f"{a}.ffn_norm1"),
            "ffn_norm2": scale(f"{a}.ffn_norm2"),
            "norm_context": scale(f"{a}.norm1_context"),
            "ffn": {
                "w_gate": dense(f"{a}.feed_forward.linear_1"),
                "w_value": dense(f"{a}.feed_forward.linear_3"),
                "w_out": dense(f"{a}.feed_forward.linear_2"),
            },
        }
    return params
