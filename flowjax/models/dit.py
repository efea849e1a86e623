"""DiT: the Diffusion Transformer of Peebles & Xie (docs/maths/dit.md), as a velocity net.

    v = DiT(x [B, H, W, C], t [B], cond [B] | None, t_end=[B] | None) -> [B, H, W, C]

``t`` is flowjax time (noise 0, data 1); the network sees ``time_scale * t`` (1.0 = SiT's raw
time, the default; 1000 = DiT's integer-step scale). The architecture:

- **patchify**: non-overlapping ``p x p`` patches, flattened in ``(row, col, channel)`` order and
  mapped by one linear layer to width ``D`` (the same map as DiT's stride-``p`` convolution);
  ``T = (H/p)(W/p)`` tokens in row-major order;
- **fixed 2-D sin-cos position embedding** (MAE layout): channels ``[0, D/2)`` encode the column,
  ``[D/2, D)`` the row, each as ``[sin(pos w_k), cos(pos w_k)]``, ``w_k = 10000^(-k/(D/4))``;
- **conditioning** ``c = TEmb(t) [+ TEmb'(t_end - t)] [+ YEmb(label)]`` with a null class
  ``num_classes`` for classifier-free guidance (:class:`~flowjax.models.ConditioningEmbedding`);
- ``depth`` **adaLN-Zero blocks**: ``(b1, g1, a1, b2, g2, a2) = Linear(SiLU(c))`` initialised to
  zero, ``x += a1 * Attn(LN(x)(1 + g1) + b1)``, ``x += a2 * MLP(LN(x)(1 + g2) + b2)``;
- **final layer**: ``LN``, modulation by ``(b, g)``, a zero-initialised linear map to
  ``p^2 C_out`` per token, unpatchify. So at initialisation the output is exactly zero and
  every block is the identity.

Sharding: every weight dimension carries a *logical* axis name (``embed``, ``mlp``, ``heads``,
``kv``, ``modulation``, ``patch``, ``freq``, ``vocab``) and activations are constrained to
``("batch", "length", "act_embed")`` between blocks; the config's rule table maps these names
to mesh axes (:mod:`flowjax.parallel.rules`). The model itself never names a mesh axis.

Mixed precision: ``dtype`` is the compute dtype (``"bfloat16"`` on accelerators) and
``param_dtype`` the storage dtype of the master weights (``"float32"``); the residual stream,
layer norms, modulation and the output stay in float32, the matrix multiplies run in
``dtype``. ``remat=True`` rematerialises each block in the backward pass (activation memory of
one block instead of ``depth`` blocks), ``remat_policy`` choosing what it may keep.

Compile time: ``scan_blocks=True`` compiles one block and scans it over depth (parameters
stacked on a ``"layers"`` axis, replicated by the default rules), so compile time does not grow
with depth; the unrolled loop compiles ``depth`` copies.

Presets (:data:`DIT_PRESETS`, ``variant="XL/2"``): S (12, 384, 6), B (12, 768, 12),
L (24, 1024, 16), XL (28, 1152, 16) as (depth, width, heads), with patch 2, 4 or 8.
"""

from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from flowjax.models.attention import attention as fused_attention
from flowjax.models.attention import check_implementation, use_jvp_rule
from flowjax.models.layers import ConditioningEmbedding, logical
from flowjax.models.positions import SinCos2D
from flowjax.types import Array, Model

DIT_PRESETS: dict[str, dict[str, int]] = {
    "S": dict(depth=12, hidden_size=384, num_heads=6),
    "B": dict(depth=12, hidden_size=768, num_heads=12),
    "L": dict(depth=24, hidden_size=1024, num_heads=16),
    "XL": dict(depth=28, hidden_size=1152, num_heads=16),
}
PATCH_SIZES = (2, 4, 8)

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros


def _xavier_from(in_axis, out_axis):
    return nn.initializers.xavier_uniform(in_axis=in_axis, out_axis=out_axis)


def dit_variant(variant: str) -> dict[str, int]:
    """``"XL/2"`` -> ``{"depth": 28, "hidden_size": 1152, "num_heads": 16, "patch_size": 2}``."""
    size, sep, patch = str(variant).partition("/")
    if size not in DIT_PRESETS or not sep or not patch.isdigit() or int(patch) not in PATCH_SIZES:
        raise ValueError(
            f"unknown DiT variant {variant!r}; use '<size>/<patch>' with size in "
            f"{list(DIT_PRESETS)} and patch in {list(PATCH_SIZES)}, e.g. 'XL/2'"
        )
    return dict(DIT_PRESETS[size], patch_size=int(patch))


def patchify(x_bhwc: Array, p: int) -> Array:
    """``[B, H, W, C] -> [B, (H/p)(W/p), p*p*C]``; tokens row-major, features (row, col, chan)."""
    return einops.rearrange(x_bhwc, "b (gh ph) (gw pw) c -> b (gh gw) (ph pw c)", ph=p, pw=p)


def unpatchify(tokens_btf: Array, p: int, h: int, w: int) -> Array:
    """Inverse of :func:`patchify`: ``[B, (h/p)(w/p), p*p*C] -> [B, h, w, C]``."""
    return einops.rearrange(
        tokens_btf, "b (gh gw) (ph pw c) -> b (gh ph) (gw pw) c", gh=h // p, ph=p, pw=p
    )


def _per_token(a: Array) -> Array:
    """A modulation ``[B, D]`` (one per example) as ``[B, 1, D]``; ``[B, T, D]`` (one per
    token, as in the blockwise velocity blocks) is returned as it is."""
    return a if a.ndim == 3 else a[:, None, :]


def _modulate(x: Array, shift: Array, scale: Array) -> Array:
    return x * (1.0 + _per_token(scale)) + _per_token(shift)


def _layer_norm(x: Array) -> Array:
    """LayerNorm without affine parameters, eps 1e-6, computed in float32."""
    return nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False, dtype=jnp.float32)(x)


class DiTBlock(nn.Module):
    """One adaLN-Zero transformer block: ``x [B, T, D], c [B, D] -> [B, T, D]``.

    ``c`` may also be per token, ``[B, T, D_c]``: the modulation is then computed for every
    token (the blockwise velocity blocks condition on ``concat(cond, r_t)`` this way)."""

    hidden_size: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention: str | None = "xla"
    attention_jvp_rule: bool = False

    @nn.compact
    def __call__(self, x: Array, c: Array) -> Array:
        d, heads = self.hidden_size, self.num_heads
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        mod = nn.Dense(
            6 * d,
            kernel_init=logical(_zeros, ("embed", "modulation")),
            name="adaLN_modulation",
            **kw,
        )(nn.silu(c))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod.astype(jnp.float32), 6, -1)

        h = _modulate(_layer_norm(x), shift1, scale1).astype(self.dtype)
        # Einsum (not DenseGeneral) so the kernels are created with their full shapes, which
        # the logical names refer to; xavier fans are those of DiT's Linear(D, 3D) / (D, D).
        qkv = nn.Einsum(
            (d, 3, heads, d // heads),
            "btd,dshk->btshk",
            kernel_init=logical(_xavier_from(0, (1, 2, 3)), ("embed", None, "heads", "kv")),
            name="qkv",
            **kw,
        )(h)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, T, heads, head_dim]
        attn = fused_attention(
            q, k, v, implementation=self.attention, jvp_rule=self.attention_jvp_rule
        )
        attn = nn.Einsum(
            (heads, d // heads, d),
            "bthk,hkd->btd",
            kernel_init=logical(_xavier_from((0, 1), 2), ("heads", "kv", "embed")),
            name="proj",
            **kw,
        )(attn)
        x = x + _per_token(gate1) * attn.astype(jnp.float32)

        h = _modulate(_layer_norm(x), shift2, scale2).astype(self.dtype)
        h = nn.Dense(
            int(d * self.mlp_ratio),
            kernel_init=logical(_xavier, ("embed", "mlp")),
            name="fc1",
            **kw,
        )(h)
        h = nn.gelu(h, approximate=True)
        h = nn.Dense(d, kernel_init=logical(_xavier, ("mlp", "embed")), name="fc2", **kw)(h)
        x = x + _per_token(gate2) * h.astype(jnp.float32)
        return nn.with_logical_constraint(x, ("batch", "length", "act_embed"))


class _ScanBody(nn.Module):
    """A block as a scan body: ``(x, *broadcast) -> (x', x' or None)``."""

    block: Any  # the (possibly rematerialised) block class
    kwargs: Any
    collect: bool = False

    @nn.compact
    def __call__(self, x: Array, *args):
        x = self.block(**dict(self.kwargs), name="block")(x, *args)
        return x, (x if self.collect else None)


def run_blocks(
    module: nn.Module,
    block_cls: type,
    block_kw: dict,
    x: Array,
    *args,
    depth: int,
    remat: bool = False,
    remat_policy: str = "nothing_saveable",
    scan_blocks: bool = False,
) -> Array:
    """``depth`` blocks ``block_cls(**block_kw)(x, *args)`` in sequence, inside ``module``'s
    compact ``__call__`` (the transformers' shared trunk: DiT, FiTv2, Next-DiT).

    ``remat`` rematerialises each block under ``jax.checkpoint_policies.<remat_policy>``;
    ``scan_blocks`` compiles one block and scans it (parameters ``blocks/block/...`` stacked
    on a leading ``"layers"`` axis, ``args`` broadcast), else a Python loop (``block_{i}``).
    The tokens after block ``i`` are sown as ``feature_{i}``.
    """
    block = block_cls
    if remat:
        policy = getattr(jax.checkpoint_policies, remat_policy)
        block = nn.remat(block_cls, policy=policy, prevent_cse=not scan_blocks)
    if not scan_blocks:
        for i in range(depth):
            x = block(name=f"block_{i}", **block_kw)(x, *args)
            module.sow("intermediates", f"feature_{i}", x)
        return x
    # One block body, scanned over depth. Features are collected as the scan's outputs only
    # when intermediates are being captured.
    collect = module.is_mutable_collection("intermediates")
    blocks = nn.scan(
        _ScanBody,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(nn.broadcast,) * len(args),
        length=depth,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )(block, tuple(block_kw.items()), collect, name="blocks")
    x, features = blocks(x, *args)
    if collect:
        for i in range(depth):
            module.sow("intermediates", f"feature_{i}", features[i])
    return x


def final_layer(tokens: Array, c: Array, features: int, *, dtype, param_dtype) -> Array:
    """The adaLN final layer, inside a compact ``__call__``: ``Linear_{D->features}(LN(x)(1 +
    scale) + shift)`` with ``(shift, scale) = Linear_{D->2D}(SiLU(c))``, both maps
    zero-initialised (parameters ``final_mod`` and ``final``); float32 out."""
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    mod = nn.Dense(
        2 * tokens.shape[-1],
        kernel_init=logical(_zeros, ("embed", "modulation")),
        name="final_mod",
        **kw,
    )(nn.silu(c))
    shift, scale = jnp.split(mod.astype(jnp.float32), 2, -1)
    out = _modulate(_layer_norm(tokens), shift, scale).astype(dtype)
    out = nn.Dense(features, kernel_init=logical(_zeros, ("embed", "patch")), name="final", **kw)(
        out
    )
    return out.astype(jnp.float32)


REMAT_POLICIES = (
    "nothing_saveable",
    "dots_saveable",
    "dots_with_no_batch_dims_saveable",
    "everything_saveable",
)


class DiT(nn.Module, Model):
    """Diffusion Transformer velocity network (see the module docstring).

    Attributes:
      patch_size, hidden_size, depth, num_heads, mlp_ratio: the architecture
        (``variant="XL/2"`` in a config fills the first four).
      learn_sigma: DiT's learned-variance head (output ``2C`` channels, of which the
        velocity is the first ``C``); off for flow models, on only to compare parameter counts
        with the paper.
      time_scale: the network sees ``time_scale * t``.
      num_classes: class-conditional with a null class ``num_classes`` (CFG), or ``None``.
      use_end_time: average-velocity network ``u(x, s, e)`` (MeanFlow): embeds ``t_end - t``
        (scaled by ``end_time_scale``, default ``time_scale``).
      dtype, param_dtype: compute and storage dtypes (names or numpy dtypes).
      remat: rematerialise each block in the backward pass; ``remat_policy`` names what the
        backward pass may keep instead of recomputing (a ``jax.checkpoint_policies`` name:
        ``"nothing_saveable"``, the default, keeps only the block inputs;
        ``"dots_with_no_batch_dims_saveable"`` also keeps the weight matmul outputs, so only
        the element-wise work and attention are recomputed).
      scan_blocks: run the ``depth`` blocks under ``nn.scan`` (one compiled block, compile
        time independent of depth) with parameters stacked on a leading axis named
        ``"layers"`` (``params["blocks"]["block"][...]`` of shape ``[depth, ...]``); off: a
        Python loop, ``params["block_{i}"]``. Same function, same numbers
        (tests/test_dit_scan.py); checkpoints of one layout do not load into the other.
      attention: the attention implementation (:mod:`flowjax.models.attention`): ``"xla"``,
        ``"cudnn"`` (fused flash attention, NVIDIA GPUs, bf16/f16) or ``None`` (JAX's choice).
      attention_jvp_rule: use the closed-form forward-mode rule of
        :mod:`flowjax.models.attention` (needed for ``jax.jvp`` through ``"cudnn"``);
        ``None``: on exactly for average-velocity networks (``use_end_time``, which MeanFlow
        and FreeFlow differentiate in forward mode) with ``attention="cudnn"``; XLA attention
        keeps JAX's own JVP (on an H200 it was as fast as the rule's, and its gradient faster).

    The tokens after block ``i`` are sown as the feature ``feature_{i}`` (captured only when
    asked, see :func:`flowjax.models.make_apply_fn`).
    """

    patch_size: int = 2
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    learn_sigma: bool = False
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

    variant_fields = staticmethod(dit_variant)  # config ``model.variant="XL/2"``

    def forward_flops(self, element_shape: tuple[int, ...], part: str = "full") -> float:
        """:func:`dit_forward_flops` of this network for one image of ``element_shape``."""
        check_flop_part(part, ("full",))
        return dit_forward_flops(
            image_shape=tuple(element_shape),
            patch_size=self.patch_size,
            hidden_size=self.hidden_size,
            depth=self.depth,
            mlp_ratio=self.mlp_ratio,
            learn_sigma=self.learn_sigma,
            use_end_time=self.use_end_time,
        )

    def num_tokens(self, element_shape: tuple[int, ...]) -> int:
        """Patches of one image: :func:`dit_num_tokens`."""
        return dit_num_tokens(element_shape, self.patch_size)

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Raise a clear ``ValueError`` if images of ``shape [B, H, W, C]`` cannot be patched."""
        if len(shape) != 4:
            raise ValueError(f"DiT takes images [B, H, W, C]; got shape {tuple(shape)}")
        p = self.patch_size
        if shape[1] % p or shape[2] % p:
            raise ValueError(
                f"image size {tuple(shape[1:3])} is not divisible by patch_size={p}; "
                f"pick a patch size that divides it"
            )
        check_implementation(self.attention)
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"unknown remat_policy {self.remat_policy!r}; use one of {list(REMAT_POLICIES)}"
            )
        if self.hidden_size % self.num_heads or self.hidden_size % 4:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_heads="
                f"{self.num_heads} and by 4 (the 2-D position embedding)"
            )

    @nn.compact
    def __call__(self, x, t, cond=None, *, t_end=None, train: bool = False):
        del train  # no dropout: DiT/SiT train without it
        self.check_input(x.shape)
        dtype, param_dtype = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        b, h, w, c = x.shape
        p, d = self.patch_size, self.hidden_size

        tokens = nn.Dense(
            d, kernel_init=logical(_xavier, ("patch", "embed")), name="x_embed", **kw
        )(patchify(x, p).astype(dtype))
        pos = SinCos2D().table(d, h // p, w // p)
        tokens = tokens.astype(jnp.float32) + jnp.asarray(pos)[None]
        tokens = nn.with_logical_constraint(tokens, ("batch", "length", "act_embed"))

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

        jvp_rule = use_jvp_rule(self.attention_jvp_rule, self.attention, self.use_end_time)
        block_kw = dict(
            hidden_size=d,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            attention=self.attention,
            attention_jvp_rule=jvp_rule,
            **kw,
        )
        tokens = run_blocks(
            self,
            DiTBlock,
            block_kw,
            tokens,
            cond_emb,
            depth=self.depth,
            remat=self.remat,
            remat_policy=self.remat_policy,
            scan_blocks=self.scan_blocks,
        )

        c_out = 2 * c if self.learn_sigma else c
        out = final_layer(tokens, cond_emb, p * p * c_out, **kw)
        out = unpatchify(out, p, h, w)
        return out[..., :c].astype(x.dtype)


def dit_forward_flops(
    *,
    image_shape: tuple[int, int, int],
    patch_size: int,
    hidden_size: int,
    depth: int,
    mlp_ratio: float = 4.0,
    learn_sigma: bool = False,
    use_end_time: bool = False,
    frequency_dim: int = 256,
    **_: Any,
) -> float:
    """Matrix-multiply FLOPs (2 per multiply-add) of one forward pass for ONE example.

    With ``T = (H/p)(W/p)`` tokens of width ``D`` and MLP width ``m D``, each block costs

        2 T (3 D^2 + D^2 + 2 m D^2)    (qkv, output projection, MLP)
      + 4 T^2 D                         (scores Q K^T and the weighted sum of values)
      + 2 D (6 D)                       (adaLN modulation, once per example)

    plus the patch embedding ``2 T p^2 C D``, the timestep MLP(s) ``2 (f D + D^2)`` each and the
    final layer ``2 D (2 D) + 2 T D p^2 C_out``. Element-wise work (norms, GELU, softmax) is
    left out, as in the DiT paper's GFLOPs (which count multiply-adds: half of this number;
    DiT-XL/2 at 32x32x4 -> 118.6 G multiply-adds).
    """
    h, w, c = image_shape
    p, d = patch_size, hidden_size
    tokens = (h // p) * (w // p)
    c_out = 2 * c if learn_sigma else c
    mlp = int(d * mlp_ratio)
    block = 2 * tokens * (4 * d * d + 2 * d * mlp) + 4 * tokens * tokens * d + 2 * d * 6 * d
    embed = 2 * tokens * p * p * c * d
    time_mlp = 2 * (frequency_dim * d + d * d) * (2 if use_end_time else 1)
    final = 2 * d * 2 * d + 2 * tokens * d * p * p * c_out
    return float(depth * block + embed + time_mlp + final)


def dit_num_tokens(image_shape: tuple[int, ...], patch_size: int) -> int:
    h, w = image_shape[0], image_shape[1]
    return (h // patch_size) * (w // patch_size)


def check_flop_part(part: str, parts: tuple[str, ...]) -> None:
    """A clear error unless ``part`` (a :meth:`Model.forward_flops` part) is one of ``parts``."""
    if part not in parts:
        raise ValueError(f"unknown FLOPs part {part!r}; use one of {parts}")
