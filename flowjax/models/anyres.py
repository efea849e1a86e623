"""What the any-resolution transformers share: one input contract, SwiGLU, the rotary spec.

Input contract (:func:`token_input`)
------------------------------------
An any-resolution network (``fitv2``, ``nextdit``) is called as

    out = net(x, t, cond=None, *, mask=None, positions=None, ..., train=False)

with ``x`` either

- **images** ``[B, H, W, C]`` (every image of one size, ``H`` and ``W`` multiples of the
  patch): patched in the DiT's order (:func:`flowjax.models.dit.patchify`), every token
  valid, positions the ``(row, col)`` of the ``(H/p) x (W/p)`` grid; the output is an image
  batch of the same shape. This is how a sampler calls it, at any size;
- **tokens** ``[B, N, p^2 C]`` in the layout of :class:`flowjax.data.tokens.TokenBatch` with
  ``mask [B, N]`` (bool, True at valid tokens, the valid ones first) and ``positions
  [B, N, 2]`` (int, ``(row, col)``): a mixed-size training batch. The output has the same
  layout, exactly zero at padding.

A rotary encoding is chosen by a spec (``rope="visionyarn"``, ``"ntk,theta=1e4"``,
:func:`flowjax.models.positions.position_from_spec`); the network supplies its own layout and
the tokens per side it was trained at (``train_size``) unless the spec names the latter, so
the same trained weights sample with any rule by changing one config field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from flowjax.models.dit import patchify, unpatchify
from flowjax.models.layers import logical
from flowjax.models.positions import POSITIONS, RoPE, grid_positions, make_position
from flowjax.spec import parse_spec
from flowjax.types import Array

__all__ = ["SwiGLU", "TokenInput", "rotary_from_spec", "swiglu_hidden", "token_input"]


@dataclasses.dataclass(frozen=True)
class TokenInput:
    """A network's input as tokens: ``tokens [B, N, p^2 C]``, ``mask [B, N]`` (bool),
    ``positions [B, N, 2]`` (int32); ``image_shape`` ``(H, W, C)`` when the input was an image
    batch (the grid ``(H/p, W/p)`` is then static: :attr:`grid`), None for a token batch."""

    tokens: Array
    mask: Array
    positions: Array
    patch: int
    image_shape: tuple[int, int, int] | None = None

    @property
    def grid(self) -> tuple[int, int] | None:
        """The static token grid of an image batch (None for a mixed-size token batch)."""
        if self.image_shape is None:
            return None
        return (self.image_shape[0] // self.patch, self.image_shape[1] // self.patch)

    @property
    def channels(self) -> int:
        return self.tokens.shape[-1] // (self.patch * self.patch)

    def output(self, tokens: Array) -> Array:
        """Per-token outputs ``[B, N, p^2 C']`` back in the input's layout: an image batch
        ``[B, H, W, C']``, or tokens with the padding set to exactly zero."""
        if self.image_shape is None:
            return jnp.where(self.mask[..., None], tokens, jnp.zeros((), tokens.dtype))
        h, w, _ = self.image_shape
        return unpatchify(tokens, self.patch, h, w)


def token_input(
    x: Array,
    patch: int,
    *,
    mask: Array | None = None,
    positions: Array | None = None,
    max_tokens: int | None = None,
    name: str = "network",
) -> TokenInput:
    """Check ``x`` (images or tokens, see the module docstring) and return its tokens.

    Every check is on shapes and dtypes, so a bad input is refused when the network is traced,
    before any work: a side that is not a multiple of the patch, more tokens than
    ``max_tokens``, a mask or positions of the wrong shape or dtype, tokens without a mask.
    """
    if x.ndim == 4:
        if mask is not None or positions is not None:
            raise ValueError(
                f"{name}: an image batch [B, H, W, C] has every token valid; pass mask= and "
                "positions= only with tokens [B, N, p^2 C]"
            )
        b, h, w, c = x.shape
        if h % patch or w % patch:
            raise ValueError(
                f"{name}: image size {h}x{w} is not a multiple of the patch {patch} per side; "
                f"sample at a multiple of {patch} (or resize / crop the data)"
            )
        n = (h // patch) * (w // patch)
        _check_max_tokens(n, max_tokens, name, f"a {h}x{w} image")
        pos = jnp.broadcast_to(jnp.asarray(grid_positions(h // patch, w // patch)), (b, n, 2))
        return TokenInput(patchify(x, patch), jnp.ones((b, n), bool), pos, patch, (h, w, c))
    if x.ndim != 3:
        raise ValueError(
            f"{name}: x must be images [B, H, W, C] or tokens [B, N, p^2 C]; got shape "
            f"{tuple(x.shape)}"
        )
    b, n, f = x.shape
    if f % (patch * patch):
        raise ValueError(
            f"{name}: {f} features per token is not p^2 C for the patch {patch}; pack the "
            "images with flowjax.data.tokens.pack_images(images, patch)"
        )
    if mask is None or positions is None:
        raise ValueError(
            f"{name}: tokens [B, N, p^2 C] need mask=[B, N] (bool) and positions=[B, N, 2] "
            "(row, col); flowjax.data.tokens.pack_images builds all three"
        )
    if tuple(mask.shape) != (b, n) or mask.dtype != jnp.bool_:
        raise ValueError(
            f"{name}: mask must be bool [B, N] = {(b, n)} (True at valid tokens); got "
            f"{mask.dtype} {tuple(mask.shape)}"
        )
    if tuple(positions.shape) != (b, n, 2) or not jnp.issubdtype(positions.dtype, jnp.integer):
        raise ValueError(
            f"{name}: positions must be integer [B, N, 2] = {(b, n, 2)} (row, col); got "
            f"{positions.dtype} {tuple(positions.shape)}"
        )
    _check_max_tokens(n, max_tokens, name, "the token batch")
    return TokenInput(x, mask, positions.astype(jnp.int32), patch)


def _check_max_tokens(n: int, max_tokens: int | None, name: str, what: str) -> None:
    if max_tokens is not None and n > max_tokens:
        raise ValueError(
            f"{name}: {what} has {n} tokens, more than max_tokens={max_tokens}; sample a "
            "smaller size or raise the model's max_tokens"
        )


def rotary_from_spec(spec: str, layout: str, train_size: int) -> RoPE:
    """The rotary encoding of ``spec`` in the network's ``layout`` (``"fit"``, ``"nextdit"``
    or ``"1d"``), trained at ``train_size`` tokens per side unless the spec says otherwise."""
    name, kwargs = parse_spec(spec, kind="rotary position encoding", example="visionyarn")
    if "layout" in kwargs:
        raise ValueError(
            f"rope spec {spec!r}: the layout is the network's ({layout!r}); drop 'layout='"
        )
    rotary = [n for n, cls in POSITIONS.items() if issubclass(cls, RoPE)]
    if name in POSITIONS and name not in rotary:
        raise ValueError(f"rope spec {spec!r} is not a rotary encoding; use one of {rotary}")
    kwargs.setdefault("train_size", train_size)
    return make_position(name, layout=layout, **kwargs)


def swiglu_hidden(width: int, ratio: float = 4.0, multiple_of: int = 1) -> int:
    """SwiGLU hidden size ``floor(2 ratio width / 3)`` rounded up to ``multiple_of``
    (FiTv2: ``ratio=4, multiple_of=1`` -> 3072 at width 1152; Next-DiT: ``multiple_of=256``)."""
    hidden = int(2 * ratio * width / 3)
    return multiple_of * int(np.ceil(hidden / multiple_of))


class SwiGLU(nn.Module):
    """``W_2 (SiLU(W_g x) * W_x x)``: a gated MLP of width ``hidden`` (``[..., D] -> [..., D]``).

    ``use_bias`` as FiTv2 (on) or Next-DiT (off); kernels xavier-uniform with the logical
    names ``("embed", "mlp")`` / ``("mlp", "embed")``, like the DiT's MLP.
    """

    hidden: int
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        xavier = nn.initializers.xavier_uniform()
        kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        out_width = x.shape[-1]
        gate = nn.Dense(
            self.hidden, kernel_init=logical(xavier, ("embed", "mlp")), name="w_gate", **kw
        )(x)
        value = nn.Dense(
            self.hidden, kernel_init=logical(xavier, ("embed", "mlp")), name="w_value", **kw
        )(x)
        return nn.Dense(
            out_width, kernel_init=logical(xavier, ("mlp", "embed")), name="w_out", **kw
        )(nn.silu(gate) * value)
