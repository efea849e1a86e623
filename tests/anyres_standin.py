"""A tiny any-resolution network for the token-batch plumbing tests (not a published model).

It satisfies the any-resolution contract of ``fitv2`` / ``nextdit`` with as little as
possible: images or tokens through :func:`flowjax.models.anyres.token_input`, a per-token
``Dense`` embedding plus a time (and label) embedding, ONE masked attention layer whose queries
and keys are rotated by the ``rope`` spec (so changing that field changes the output, and the
key mask matters: without it padding would leak into valid tokens), a per-token ``Dense``
out. ``forward_flops`` counts its matrix multiplies for one image, so accounting tests have a
closed form.

:func:`registered` registers it as model ``"tiny_anyres"`` for one test and removes it after,
so the registry tests never see it.
"""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from flowjax.data import tokens
from flowjax.models.anyres import rotary_from_spec, token_input
from flowjax.models.attention import attention
from flowjax.models.registry import _MODELS, register_model
from flowjax.types import Model

NAME = "tiny_anyres"


class TinyAnyRes(nn.Module, Model):
    patch_size: int = 2
    hidden_size: int = 8
    num_classes: int | None = None
    use_end_time: bool = False
    rope: str = "rope"
    train_grid: int = 4
    max_tokens: int | None = None

    def check_input(self, shape):
        if len(shape) != 4:
            raise ValueError(f"{NAME} takes images [B, H, W, C] for its element shape")

    def num_tokens(self, element_shape):
        h, w, _ = element_shape
        return (h // self.patch_size) * (w // self.patch_size)

    def forward_flops(self, element_shape, part="full"):
        """``2 n F D + 2 n D 3D + 4 n^2 D + 2 n D F`` (embed, qkv, scores and values, out)."""
        del part
        n, d = self.num_tokens(element_shape), self.hidden_size
        f = self.patch_size**2 * element_shape[-1]
        return 2 * n * f * d + 6 * n * d * d + 4 * n * n * d + 2 * n * d * f

    @nn.compact
    def __call__(self, x, t, cond=None, *, mask=None, positions=None, t_end=None, train=False):
        del train
        if self.use_end_time or t_end is not None:
            raise ValueError(f"{NAME} has no end time")
        inp = token_input(
            x, self.patch_size, mask=mask, positions=positions, max_tokens=self.max_tokens
        )
        d = self.hidden_size
        freqs = jnp.arange(1, 5, dtype=jnp.float32)
        temb = jnp.concatenate([jnp.cos(t[:, None] * freqs), jnp.sin(t[:, None] * freqs)], -1)
        h = nn.Dense(d, name="embed")(inp.tokens) + nn.Dense(d, name="time")(temb)[:, None]
        if self.num_classes is not None and cond is not None:
            h = h + nn.Embed(self.num_classes + 1, d, name="label")(cond)[:, None]
        b, n = h.shape[:2]
        q, k, v = jnp.split(nn.Dense(3 * d, name="qkv")(h).reshape(b, n, 1, 3 * d), 3, axis=-1)
        rotary = rotary_from_spec(self.rope, "fit", self.train_grid)
        q = rotary.rotate(q, inp.positions, grid=inp.grid, t=t)
        k = rotary.rotate(k, inp.positions, grid=inp.grid, t=t)
        a = attention(q, k, v, key_mask=inp.mask).reshape(b, n, d)
        out = nn.Dense(inp.tokens.shape[-1], name="out")(h + a)
        return inp.output(out)


@contextlib.contextmanager
def registered():
    """``model.name="tiny_anyres"`` builds :class:`TinyAnyRes` inside the block."""
    register_model(NAME, TinyAnyRes)
    try:
        yield TinyAnyRes
    finally:
        del _MODELS[NAME]


# Sides (rows, cols) of the stand-in source's images, in pixels: square, wide and tall.
SIZES = ((8, 8), (4, 8), (8, 4), (4, 4), (6, 8), (8, 6))


def image(index: int, size: tuple[int, int]) -> np.ndarray:
    """A smooth ``[H, W, 1]`` image in ``[-1, 1]`` that depends on ``index`` (a stripe pattern
    whose angle and phase vary), deterministic."""
    rows, cols = np.meshgrid(*(np.linspace(0.0, 1.0, s) for s in size), indexing="ij")
    angle, phase = 0.7 * index, 0.3 * index
    wave = np.sin(2 * np.pi * (rows * np.cos(angle) + cols * np.sin(angle)) + phase)
    return wave[..., None].astype(np.float32)


class TokenSource:
    """A mixed-size image source as token batches (a test stand-in for a real one): global
    batch ``k`` holds images ``k B .. k B + B - 1``, image ``i`` of size ``SIZES[i % 6]``,
    packed with :func:`flowjax.data.tokens.pack_images` padded to ``max_tokens``. Evaluated
    at ``element_shape = (8, 8, 1)``. Labels ``i % 3`` when ``num_classes=3``."""

    kind = "images"
    name = "stripes_mixed"
    element_shape = (8, 8, 1)
    batch_keys = ("x1", "mask", "positions")

    def __init__(self, batch_size: int, patch: int = 2, num_classes: int | None = None):
        self.batch_size, self.patch, self.num_classes = batch_size, patch, num_classes
        self.max_tokens = (8 // patch) ** 2

    def batch(self, step: int) -> dict:
        first = step * self.batch_size
        indices = range(first, first + self.batch_size)
        packed = tokens.pack_images(
            [image(i, SIZES[i % len(SIZES)]) for i in indices],
            self.patch,
            max_tokens=self.max_tokens,
            pad_to_max=True,
        )
        out = {"x1": packed.tokens, "mask": packed.mask, "positions": packed.positions}
        if self.num_classes is not None:
            out["label"] = np.asarray([i % self.num_classes for i in indices], np.int32)
        return out

    def iterator(self, start_step: int = 0):
        step = start_step
        while True:
            yield self.batch(step)
            step += 1

    def eval_array(self, n: int):
        x = np.stack([image(10_000 + i, (8, 8)) for i in range(n)])
        labels = None if self.num_classes is None else np.arange(n) % self.num_classes
        return x, labels
