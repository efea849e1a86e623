"""The Blockwise Flow Matching network (docs/maths/blockwise.md): a shared feature network and
``K`` small velocity blocks, one per time segment.

    v = BlockwiseFlowNet(x [B, H, W, C], t [B], cond [B] | None, segment=k) -> [B, H, W, C]

``t`` is flowjax time (noise 0, data 1). The parts (parameter groups, top level):

- ``cond_embed``: ``c = TEmb(time_scale * t) [+ YEmb(label)]`` (null class ``num_classes``
  for classifier-free guidance), shared by every part;
- ``feature_net`` = R_phi: a patch embedding ``E_R`` (+ fixed 2-D sin-cos positions) and
  ``feature_depth`` adaLN-Zero DiT blocks conditioned on ``c``; its output tokens are the
  semantic features ``r_t [B, T, D]``;
- ``segment_{k}`` = V_k (``k = 0 .. num_segments - 1``, 0 the noisiest): its own patch
  embedding of ``x_t`` and ``segment_depth`` DiT blocks whose adaLN modulation is computed PER
  TOKEN from ``c_tok = concat(c broadcast over tokens, r_t) [B, T, 2D]``, then a final layer
  modulated by ``c_tok`` and a linear map to patches. Modulation and output are zero-initialised,
  so every block starts as the identity and the velocity starts at exactly 0;
- ``projector`` = P: per-token MLP ``D -> projector_dim -> projector_dim -> align_dim`` (SiLU),
  read only by the alignment loss;
- ``frn`` = G_psi (Feature Residual Approximation): ``frn_depth`` DiT blocks (adaLN on ``c``)
  on ``E_R(x_t)`` and a zero-initialised linear map to ``D``: the correction
  ``r~_t = r_{t_s} + gamma(t) G_psi(E_R(x_t), c)`` of the features at the segment start.

Simplification: the official code modulates the velocity blocks with a low-rank ("LoRA")
adaLN plus a global term; here the per-token modulation is one full linear map of ``c_tok``.

Calls (``segment``, ``segment_sizes``, ``frn_span`` are static Python values):

- ``segment=k``: every row lies in segment ``k``; one evaluation = R_phi + V_k only.
- ``segment_sizes=(n_0, ..., n_{K-1})``: the rows are grouped by segment in that order (training
  batches); each block runs on exactly its rows, empty groups cost nothing.
- ``features=r``: use these features instead of running R_phi.
- ``anchor=r_s, frn_span=(t_s, t_e)``: FRN mode, ``r = r_s + (t - t_s)/(t_e - t_s) G_psi(...)``
  (no R_phi). ``anchor`` may be ``[B, 2, T, D]`` (features of the conditional and of the
  null-label branch): rows with the null label take the second.
- ``return_features=True``: ``(v, r)``.
- methods ``features`` (R_phi), ``project`` (P), ``residual`` (G_psi) for the objective.

Sharding: weights carry the DiT logical axis names and activations are constrained to
``("batch", "length", "act_embed")``, so the DiT rule table shards it.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from flowjax.models.attention import check_implementation
from flowjax.models.dit import (
    DiTBlock,
    _layer_norm,
    _modulate,
    check_flop_part,
    patchify,
    unpatchify,
)
from flowjax.models.layers import ConditioningEmbedding, logical
from flowjax.models.positions import SinCos2D
from flowjax.types import Array, Model

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros
FLOP_PARTS = ("full", "features", "frn")


class PatchEmbed(nn.Module):
    """``[B, H, W, C] -> [B, T, D]``: linear patch embedding plus fixed 2-D positions."""

    patch_size: int
    hidden_size: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _, h, w, _ = x.shape
        p, d = self.patch_size, self.hidden_size
        tokens = nn.Dense(
            d,
            kernel_init=logical(_xavier, ("patch", "embed")),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="proj",
        )(patchify(x, p).astype(self.dtype))
        tokens = tokens.astype(jnp.float32) + jnp.asarray(SinCos2D().table(d, h // p, w // p))
        return nn.with_logical_constraint(tokens, ("batch", "length", "act_embed"))


def _block_kwargs(m) -> dict:
    return dict(
        hidden_size=m.hidden_size,
        num_heads=m.num_heads,
        mlp_ratio=m.mlp_ratio,
        dtype=m.dtype,
        param_dtype=m.param_dtype,
        attention=m.attention,
    )


class FeatureNet(nn.Module):
    """R_phi: ``(x [B, H, W, C], c [B, D]) -> r [B, T, D]``; :meth:`embed` is ``E_R``."""

    patch_size: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention: str | None = "xla"

    def setup(self):
        self.x_embed = PatchEmbed(self.patch_size, self.hidden_size, self.dtype, self.param_dtype)
        self.blocks = [DiTBlock(**_block_kwargs(self)) for _ in range(self.depth)]

    def embed(self, x: Array) -> Array:
        return self.x_embed(x)

    def __call__(self, x: Array, c: Array) -> Array:
        tokens = self.x_embed(x)
        for block in self.blocks:
            tokens = block(tokens, c)
        return tokens


class SegmentNet(nn.Module):
    """V_k: ``(x [B, H, W, C], c [B, D], r [B, T, D]) -> v [B, H, W, C]`` with per-token adaLN
    on ``c_tok = concat(c, r)``; zero output at initialisation."""

    patch_size: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention: str | None = "xla"

    @nn.compact
    def __call__(self, x: Array, c: Array, r: Array) -> Array:
        _, h, w, ch = x.shape
        p, d = self.patch_size, self.hidden_size
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        tokens = PatchEmbed(p, d, name="x_embed", **kw)(x)
        c_tok = jnp.concatenate(
            [jnp.broadcast_to(c[:, None, :], r.shape[:2] + c.shape[-1:]), r.astype(jnp.float32)],
            axis=-1,
        )
        c_tok = nn.with_logical_constraint(c_tok, ("batch", "length", "act_embed"))
        for i in range(self.depth):
            tokens = DiTBlock(name=f"block_{i}", **_block_kwargs(self))(tokens, c_tok)
        mod = nn.Dense(
            2 * d, kernel_init=logical(_zeros, ("embed", "modulation")), name="final_mod", **kw
        )(nn.silu(c_tok))
        shift, scale = jnp.split(mod.astype(jnp.float32), 2, -1)
        out = _modulate(_layer_norm(tokens), shift, scale).astype(self.dtype)
        out = nn.Dense(
            p * p * ch, kernel_init=logical(_zeros, ("embed", "patch")), name="final", **kw
        )(out)
        return unpatchify(out.astype(jnp.float32), p, h, w).astype(x.dtype)


class Projector(nn.Module):
    """P: per-token MLP ``D -> hidden -> hidden -> out`` with SiLU."""

    hidden: int
    out: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, r: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.silu(nn.Dense(self.hidden, kernel_init=logical(_xavier, ("embed", "mlp")), **kw)(r))
        h = nn.silu(nn.Dense(self.hidden, kernel_init=logical(_xavier, ("mlp", None)), **kw)(h))
        return nn.Dense(self.out, kernel_init=logical(_xavier, ("mlp", None)), **kw)(h).astype(
            jnp.float32
        )


class ResidualNet(nn.Module):
    """G_psi: ``(E_R(x) [B, T, D], c [B, D]) -> [B, T, D]``, zero at initialisation."""

    hidden_size: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention: str | None = "xla"

    @nn.compact
    def __call__(self, tokens: Array, c: Array) -> Array:
        d = self.hidden_size
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for i in range(self.depth):
            tokens = DiTBlock(name=f"block_{i}", **_block_kwargs(self))(tokens, c)
        mod = nn.Dense(
            2 * d, kernel_init=logical(_zeros, ("embed", "modulation")), name="final_mod", **kw
        )(nn.silu(c))
        shift, scale = jnp.split(mod.astype(jnp.float32), 2, -1)
        out = _modulate(_layer_norm(tokens), shift, scale).astype(self.dtype)
        out = nn.Dense(d, kernel_init=logical(_zeros, ("mlp", "embed")), name="final", **kw)(out)
        return nn.with_logical_constraint(out.astype(jnp.float32), ("batch", "length", "act_embed"))


class BlockwiseFlowNet(nn.Module, Model):
    """The BFM network (see the module docstring).

    Attributes:
      patch_size, hidden_size, num_heads, mlp_ratio: shared by every part.
      feature_depth, segment_depth, frn_depth: blocks of R_phi, of each V_k and of G_psi.
      num_segments: ``K`` (the blockwise objective sets it from its segment boundaries).
      projector_dim, align_dim: widths of P (``align_dim`` = the encoder's feature width).
      time_scale: the network sees ``time_scale * t``.
      num_classes: class-conditional with null class ``num_classes``, or ``None``.
      use_end_time: must stay False (an instantaneous-velocity network).
      dtype, param_dtype, attention: as :class:`flowjax.models.DiT`.
    """

    patch_size: int = 2
    hidden_size: int = 1152
    num_heads: int = 16
    mlp_ratio: float = 4.0
    feature_depth: int = 20
    segment_depth: int = 5
    frn_depth: int = 4
    num_segments: int = 2
    projector_dim: int = 2048
    align_dim: int = 768
    time_scale: float = 1.0
    num_classes: int | None = None
    use_end_time: bool = False
    dtype: Any = "float32"
    param_dtype: Any = "float32"
    attention: str | None = "xla"

    def check_input(self, shape: tuple[int, ...]) -> None:
        """A clear ``ValueError`` for images this network cannot take (or a bad setting)."""
        if self.use_end_time:
            raise ValueError(
                "the blockwise network models an instantaneous velocity; it has no end time "
                "(use it with objective.name='blockwise')"
            )
        if len(shape) != 4:
            raise ValueError(f"the blockwise network takes images [B, H, W, C]; got {shape}")
        p = self.patch_size
        if shape[1] % p or shape[2] % p:
            raise ValueError(
                f"image size {tuple(shape[1:3])} is not divisible by patch_size={p}; "
                "pick a patch size that divides it"
            )
        if self.hidden_size % self.num_heads or self.hidden_size % 4:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_heads="
                f"{self.num_heads} and by 4 (the 2-D position embedding)"
            )
        if self.num_segments < 1 or self.feature_depth < 0 or self.segment_depth < 1:
            raise ValueError(
                f"need num_segments >= 1, feature_depth >= 0, segment_depth >= 1; got "
                f"{self.num_segments}, {self.feature_depth}, {self.segment_depth}"
            )
        check_implementation(self.attention)

    def setup(self):
        dtype, param_dtype = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        common = dict(
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            attention=self.attention,
            **kw,
        )
        self.cond_embed = ConditioningEmbedding(
            self.hidden_size,
            time_scale=self.time_scale,
            num_classes=self.num_classes,
            partitioned=True,
            **kw,
        )
        self.feature_net = FeatureNet(
            patch_size=self.patch_size, depth=self.feature_depth, **common
        )
        self.segment = [
            SegmentNet(patch_size=self.patch_size, depth=self.segment_depth, **common)
            for _ in range(self.num_segments)
        ]
        self.projector = Projector(self.projector_dim, self.align_dim, **kw)
        self.frn = ResidualNet(depth=self.frn_depth, **common)

    def _cond(self, t: Array, cond: Array | None) -> Array:
        c = self.cond_embed(t, cond).astype(jnp.float32)
        return nn.with_logical_constraint(c, ("batch", "act_embed"))

    def features(self, x: Array, t: Array, cond: Array | None = None, *, train: bool = False):
        """R_phi: the semantic feature tokens ``r_t [B, T, D]`` of ``x_t``."""
        del train
        self.check_input(x.shape)
        return self.feature_net(x, self._cond(t, cond))

    def project(self, r: Array, t=None, cond=None, *, train: bool = False) -> Array:
        """P: the projected tokens ``[B, T, align_dim]`` of features ``r [B, T, D]`` (``t``,
        ``cond`` are ignored: the ``apply_fn`` calling convention)."""
        del t, cond, train
        return self.projector(r)

    def residual(self, x: Array, t: Array, cond: Array | None = None, *, train: bool = False):
        """G_psi(E_R(x_t), c(t, y)) ``[B, T, D]``."""
        del train
        self.check_input(x.shape)
        return self.frn(self.feature_net.embed(x), self._cond(t, cond))

    def _frn_features(self, x, t, cond, c, anchor, frn_span) -> Array:
        if frn_span is None:
            raise ValueError("FRN mode needs frn_span=(t_s, t_e), the segment's boundaries")
        t_s, t_e = (float(v) for v in frn_span)
        if anchor.ndim == 4:  # [B, 2, T, D]: (conditional, null-label) branch features
            if anchor.shape[1] != 2 or self.num_classes is None:
                raise ValueError("a [B, 2, T, D] anchor needs a class-conditional network")
            null = (cond == self.num_classes)[:, None, None]
            anchor = jnp.where(null, anchor[:, 1], anchor[:, 0])
        gamma = ((t.astype(jnp.float32) - t_s) / (t_e - t_s))[:, None, None]
        return anchor + gamma * self.frn(self.feature_net.embed(x), c)

    def __call__(
        self,
        x: Array,
        t: Array,
        cond: Array | None = None,
        *,
        segment: int | None = None,
        segment_sizes: Sequence[int] | None = None,
        features: Array | None = None,
        anchor: Array | None = None,
        frn_span: tuple[float, float] | None = None,
        return_features: bool = False,
        t_end: Array | None = None,
        train: bool = False,
    ):
        del train
        if t_end is not None:
            raise ValueError("the blockwise network takes no t_end (instantaneous velocity)")
        self.check_input(x.shape)
        c = self._cond(t, cond)
        if self.is_initializing():  # create the parameters of every part
            r = self.feature_net(x, c)
            self.projector(r)
            self.frn(self.feature_net.embed(x), c)
            outs = [block(x, c, r) for block in self.segment]
            return outs[0]
        if features is not None:
            r = features
        elif anchor is not None:
            r = self._frn_features(x, t, cond, c, anchor, frn_span)
        else:
            r = self.feature_net(x, c)
        v = self._route(x, c, r, segment, segment_sizes)
        return (v, r) if return_features else v

    def _route(self, x, c, r, segment, segment_sizes) -> Array:
        k_count = self.num_segments
        if (segment is None) == (segment_sizes is None):
            raise ValueError(
                "call the blockwise network with exactly one of segment=k (all rows in segment "
                "k) or segment_sizes=(n_0, ...) (rows grouped by segment)"
            )
        if segment is not None:
            if not 0 <= int(segment) < k_count:
                raise ValueError(f"segment={segment} is not in [0, {k_count})")
            return self.segment[int(segment)](x, c, r)
        sizes = tuple(int(n) for n in segment_sizes)
        if len(sizes) != k_count or sum(sizes) != x.shape[0] or min(sizes) < 0:
            raise ValueError(
                f"segment_sizes={sizes} must give {k_count} non-negative counts summing to the "
                f"batch size {x.shape[0]}"
            )
        outs, start = [], 0
        for k, n in enumerate(sizes):
            if n:
                sl = slice(start, start + n)
                outs.append(self.segment[k](x[sl], c[sl], r[sl]))
            start += n
        return jnp.concatenate(outs, axis=0)

    # -- cost -------------------------------------------------------------------------------
    def forward_flops(self, element_shape: tuple[int, ...], part: str = "full") -> float:
        """Matrix-multiply FLOPs (2 per multiply-add) of ONE evaluation for ONE example.

        ``part``: ``"full"`` (R_phi + one velocity block: what a sampler step and a training
        row cost, the projector left out), ``"features"`` (R_phi alone: an FRN anchor) or
        ``"frn"`` (E_R + G_psi + one velocity block: an FRN step). Counted as
        :func:`flowjax.models.dit_forward_flops` counts DiT (T tokens, width D, MLP width mD):
        a block ``2T(4D^2 + 2mD^2) + 4T^2 D`` plus its modulation ``2 D_c 6D`` per example
        (``D_c = D``) or per token (velocity blocks: ``D_c = 2D``, times ``T``).
        """
        check_flop_part(part, FLOP_PARTS)
        h, w, ch = element_shape
        p, d = self.patch_size, self.hidden_size
        tokens = (h // p) * (w // p)
        mlp = int(d * self.mlp_ratio)
        body = 2 * tokens * (4 * d * d + 2 * d * mlp) + 4 * tokens * tokens * d
        embed = 2 * tokens * p * p * ch * d
        time_mlp = 2 * (256 * d + d * d)
        feature = embed + self.feature_depth * (body + 2 * d * 6 * d)
        segment = (
            embed
            + self.segment_depth * (body + 2 * tokens * 2 * d * 6 * d)
            + 2 * tokens * 2 * d * 2 * d
            + 2 * tokens * d * p * p * ch
        )
        frn = embed + self.frn_depth * (body + 2 * d * 6 * d) + 2 * d * 2 * d + 2 * tokens * d * d
        cost = {
            "full": time_mlp + feature + segment,
            "features": time_mlp + feature,
            "frn": time_mlp + frn + segment,
        }[part]
        return float(cost)

    def num_tokens(self, element_shape: tuple[int, ...]) -> int:
        return (element_shape[0] // self.patch_size) * (element_shape[1] // self.patch_size)
