"""The LPIPS network (VGG16 features, unit normalisation, lin weights) and its weight files.

The maths, the weight layout and how to make the file are in :mod:`flowjax.evaluation.lpips`;
:mod:`flowjax.evaluation.lpips.convert` maps the published torch checkpoints to that layout.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from flowjax.models.resize import resize_bilinear, size_pair
from flowjax.types import Array
from flowjax.weight_files import WeightSpec, he_normal

__all__ = [
    "LPIPS",
    "LPIPS_SCALE",
    "LPIPS_SHIFT",
    "NORM_EPS",
    "TORCHVISION_CONV_INDICES",
    "VGG16Features",
    "VGG16_WIDTHS",
    "load_weights",
    "random_weights",
    "save_weights",
    "weight_shapes",
]


# ---------------------------------------------------------------------------------------------
# Constants of the network and of the lpips package
# ---------------------------------------------------------------------------------------------

VGG16_WIDTHS = (64, 128, 256, 512, 512)
STAGE_DEPTHS = (2, 2, 3, 3, 3)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10  # added to the channel norm before dividing (lpips ``normalize_tensor``)
MIN_SIZE = 2 ** (len(STAGE_DEPTHS) - 1)  # four 2x2 poolings leave at least one pixel


def _conv_names() -> list[tuple[int, str]]:
    """``[(stage_index 0..4, "conv{s}_{l}"), ...]`` in network order (13 entries)."""
    return [
        (stage, f"conv{stage + 1}_{layer + 1}")
        for stage, depth in enumerate(STAGE_DEPTHS)
        for layer in range(depth)
    ]


def _torchvision_indices() -> dict[str, int]:
    """Position of each conv in torchvision's ``vgg16().features`` (conv, ReLU, ..., pool)."""
    indices, i = {}, 0
    for stage, depth in enumerate(STAGE_DEPTHS):
        for layer in range(depth):
            indices[f"conv{stage + 1}_{layer + 1}"] = i
            i += 2  # Conv2d, ReLU
        i += 1  # MaxPool2d
    return indices


# {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, ..., "conv5_3": 28}
TORCHVISION_CONV_INDICES = _torchvision_indices()


def weight_shapes(widths: Sequence[int] = VGG16_WIDTHS) -> dict[str, tuple[int, ...]]:
    """Every key of an LPIPS weight file and its shape, for stage widths ``widths`` (5 ints)."""
    widths = _check_widths(widths)
    shapes: dict[str, tuple[int, ...]] = {}
    c_in = 3
    for stage, name in _conv_names():
        c_out = widths[stage]
        shapes[f"vgg/{name}/kernel"] = (3, 3, c_in, c_out)
        shapes[f"vgg/{name}/bias"] = (c_out,)
        c_in = c_out
    for k, c in enumerate(widths):
        shapes[f"lin{k}"] = (c,)
    return shapes


def _check_widths(widths) -> tuple[int, ...]:
    widths = tuple(widths)
    if len(widths) != len(STAGE_DEPTHS) or not all(
        isinstance(w, (int, np.integer)) and w >= 1 for w in widths
    ):
        raise ValueError(f"widths must be 5 positive ints (one per VGG stage), got {widths!r}.")
    return tuple(int(w) for w in widths)


# ---------------------------------------------------------------------------------------------
# The feature network
# ---------------------------------------------------------------------------------------------


class VGG16Features(nn.Module):
    """VGG16 convolutional trunk returning the five LPIPS taps.

    Input ``[B, H, W, C]`` with ``C`` in ``{1, 3}``, values in ``[-1, 1]``; a grey channel is
    repeated to RGB and the LPIPS scaling layer ``(x - shift) / scale`` is applied first.
    Returns the post-ReLU activations after conv1_2, conv2_2, conv3_3, conv4_3 and conv5_3,
    ``[B, H / 2^k, W / 2^k, widths[k]]`` for ``k = 0..4`` (floor division at each pooling).
    Parameters: ``{"conv{s}_{l}": {"kernel": [3, 3, C_in, C_out], "bias": [C_out]}}``.
    """

    widths: Sequence[int] = VGG16_WIDTHS
    replace_pooling: bool = False

    @nn.compact
    def __call__(self, x_bhwc: Array) -> tuple[Array, ...]:
        if x_bhwc.shape[-1] == 1:
            x_bhwc = jnp.repeat(x_bhwc, 3, axis=-1)
        if x_bhwc.shape[-1] != 3:
            raise ValueError(f"expected 1 or 3 channels (NHWC), got shape {x_bhwc.shape}.")
        shift = jnp.asarray(LPIPS_SHIFT, x_bhwc.dtype)
        scale = jnp.asarray(LPIPS_SCALE, x_bhwc.dtype)
        h = (x_bhwc - shift) / scale
        pool = nn.avg_pool if self.replace_pooling else nn.max_pool
        taps = []
        names = _conv_names()
        for stage, width in enumerate(self.widths):
            if stage > 0:
                h = pool(h, (2, 2), strides=(2, 2), padding="VALID")
            for s, name in names:
                if s == stage:
                    conv = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), name=name)
                    h = nn.relu(conv(h))
            taps.append(h)
        return tuple(taps)


# ---------------------------------------------------------------------------------------------
# The distance
# ---------------------------------------------------------------------------------------------


def _unit_normalise(f_bhwc: Array) -> Array:
    """``f / (||f||_c + eps)`` over the channel axis.

    Where ``f = 0`` (all channels of a pixel dead after the ReLU) the gradient of ``sqrt`` is
    infinite and would turn a zero cotangent into ``0 * inf = NaN``; the norm's gradient is
    taken as 0 there instead, which gives the exact Jacobian ``I / eps`` of the map at 0.
    (JAX's ReLU gradient is a select and would mask that NaN anyway; this keeps the function
    safe on its own.) Values are unchanged.
    """
    sq = jnp.sum(jnp.square(f_bhwc), axis=-1, keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    return f_bhwc / (norm + NORM_EPS)


@functools.partial(jax.jit, static_argnames=("replace_pooling", "resize_to"))
def _layer_distances(vgg_params, lin, x, y, *, replace_pooling, resize_to):
    if resize_to is not None:
        x, y = resize_bilinear(x, resize_to), resize_bilinear(y, resize_to)
    net = VGG16Features(widths=tuple(w.shape[0] for w in lin), replace_pooling=replace_pooling)
    # Two passes rather than one on concatenate([x, y]): when only x carries a tangent (y a
    # fixed target, as in a training loss), the backward pass then skips y's network.
    taps_x = net.apply({"params": vgg_params}, x)
    taps_y = net.apply({"params": vgg_params}, y)
    per_layer = []
    for fx, fy, w in zip(taps_x, taps_y, lin, strict=True):
        diff = jnp.square(_unit_normalise(fx) - _unit_normalise(fy))
        per_layer.append(jnp.mean(jnp.sum(diff * w, axis=-1), axis=(1, 2)))
    return jnp.stack(per_layer, axis=1)


@flax.struct.dataclass
class LPIPS:
    """The LPIPS distance with its weights: a frozen dataclass and a JAX pytree.

    Build it with :meth:`from_file` (or :meth:`from_weights`). The arrays are pytree leaves and
    ``replace_pooling`` / ``resize_to`` static fields, so an ``LPIPS`` can be passed as an
    argument to a jitted loss (better than closing over it, which embeds the 59 MB of VGG16
    weights in the compiled program as constants). Calling it is pure and differentiable
    w.r.t. both images (and the weights); float32 throughout.

    Attributes:
      vgg_params: the :class:`VGG16Features` parameter tree.
      lin: five ``[C_k]`` non-negative channel weights.
      replace_pooling: average instead of max pooling (the ``piq`` / 2-RF++ variant).
      resize_to: ``(h, w)`` both images are resized to first, or ``None``.
    """

    vgg_params: Any
    lin: tuple[Array, ...]
    replace_pooling: bool = flax.struct.field(pytree_node=False, default=False)
    resize_to: tuple[int, int] | None = flax.struct.field(pytree_node=False, default=(224, 224))

    @classmethod
    def from_weights(
        cls,
        weights: Mapping[str, Any],
        *,
        replace_pooling: bool = False,
        resize_to: int | tuple[int, int] | None = 224,
    ) -> LPIPS:
        """From a weight dict in the file layout (module docstring), e.g. from
        :func:`convert_torch_weights`, :func:`load_weights` or :func:`random_weights`."""
        clean, widths = _check_weights(weights)
        if not isinstance(replace_pooling, (bool, np.bool_)):
            raise ValueError(f"replace_pooling must be a bool, got {replace_pooling!r}.")
        size = None
        if resize_to is not None:
            size = size_pair(resize_to)
            if min(size) < MIN_SIZE:
                raise ValueError(
                    f"resize_to must be at least {MIN_SIZE}x{MIN_SIZE} (four 2x2 poolings), "
                    f"got {resize_to!r}."
                )
        vgg_params = {
            name: {
                "kernel": jnp.asarray(clean[f"vgg/{name}/kernel"]),
                "bias": jnp.asarray(clean[f"vgg/{name}/bias"]),
            }
            for _, name in _conv_names()
        }
        lin = tuple(jnp.asarray(clean[f"lin{k}"]) for k in range(len(widths)))
        return cls(vgg_params, lin, replace_pooling=bool(replace_pooling), resize_to=size)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        replace_pooling: bool = False,
        resize_to: int | tuple[int, int] | None = 224,
    ) -> LPIPS:
        """Read a weight ``.npz`` (see the module docstring for its keys and how to make it).

        Args:
          path: the file written by :func:`save_weights` or the converter command.
          replace_pooling: ``False``: max pooling (``lpips`` package); ``True``: average
            pooling (``piq.LPIPS(replace_pooling=True)``, the 2-rectified-flow++ setting).
          resize_to: bilinear resize of both images before the network, an int (square) or
            ``(h, w)``; ``None`` for none. Default 224, the size VGG16 was trained at.

        Raises:
          FileNotFoundError: no file at ``path`` (the message says how to make one).
          ValueError: not an ``.npz``, or keys missing, unexpected, or of the wrong shape.
        """
        return cls.from_weights(
            load_weights(path), replace_pooling=replace_pooling, resize_to=resize_to
        )

    @property
    def widths(self) -> tuple[int, ...]:
        """The five stage widths ``C_k``."""
        return tuple(int(w.shape[0]) for w in self.lin)

    def weights(self) -> dict[str, np.ndarray]:
        """The weights as a dict in the file layout (inverse of :meth:`from_weights`)."""
        out = {}
        for _, name in _conv_names():
            for leaf in ("kernel", "bias"):
                out[f"vgg/{name}/{leaf}"] = np.asarray(self.vgg_params[name][leaf])
        out.update({f"lin{k}": np.asarray(w) for k, w in enumerate(self.lin)})
        return out

    def layer_distances(self, x_bhwc, y_bhwc) -> Array:
        """The five per-tap terms ``mean_hw sum_c w_kc (n_k(x) - n_k(y))^2``, ``[B, 5]``."""
        x, y = self._check_inputs(x_bhwc, y_bhwc)
        return _layer_distances(
            self.vgg_params,
            self.lin,
            x,
            y,
            replace_pooling=self.replace_pooling,
            resize_to=self.resize_to,
        )

    def __call__(self, x_bhwc, y_bhwc) -> Array:
        """LPIPS ``d(x, y)``, float32 ``[B]``, for images ``[B, H, W, C]`` in ``[-1, 1]``.

        ``x`` and ``y`` must have the same shape, ``C`` in ``{1, 3}``, floating dtype; without
        ``resize_to``, ``H, W >= 16``.
        """
        return jnp.sum(self.layer_distances(x_bhwc, y_bhwc), axis=1)

    def _check_inputs(self, x, y) -> tuple[Array, Array]:
        x, y = jnp.asarray(x), jnp.asarray(y)
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}.")
        if x.ndim != 4:
            raise ValueError(f"expected images [B, H, W, C] (NHWC), got shape {x.shape}.")
        if x.shape[-1] not in (1, 3):
            raise ValueError(
                f"expected 1 (grey) or 3 (RGB) channels in the last axis (NHWC), got shape "
                f"{x.shape}."
            )
        for name, a in (("x", x), ("y", y)):
            if not jnp.issubdtype(a.dtype, jnp.floating):
                raise ValueError(
                    f"{name} must be floats in [-1, 1], got dtype {a.dtype} (scale uint8 images "
                    "by x / 127.5 - 1)."
                )
        if self.resize_to is None and min(x.shape[1:3]) < MIN_SIZE:
            raise ValueError(
                f"images of {x.shape[1]}x{x.shape[2]} pixels are too small for four 2x2 "
                f"poolings; need at least {MIN_SIZE}x{MIN_SIZE} or set resize_to."
            )
        return x.astype(jnp.float32), y.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Weight files
# ---------------------------------------------------------------------------------------------

_NOT_LPIPS = (
    "This does not look like a flowjax LPIPS weight file; torch checkpoints are converted with "
    "`{command}`."
)
SPEC = WeightSpec(
    what="LPIPS",
    prefix="lpips",
    convert="flowjax convert-lpips --vgg=vgg16.pth --lin=vgg.pth --out={out}",
    example_out="lpips_vgg16.npz",
    make_file=(
        "make the file once (needs torch, for this step only) with\n    {command}\n"
        "from torchvision's ImageNet VGG16 weights (vgg16-397923af.pth, the state dict of "
        'torchvision.models.vgg16(weights="IMAGENET1K_V1")) and the lpips package\'s '
        "weights/v0.1/vgg.pth (pip install lpips; it sits in the installed package directory)."
    ),
    wrong_keys="LPIPS weights have {keys}. " + _NOT_LPIPS,
    # He-normal kernels (``std = sqrt(2 / (9 C_in))``), biases ``N(0, 0.05^2)``, lin weights
    # uniform in ``[0, 1)``.
    noise=(
        ("/kernel", he_normal),
        ("/bias", lambda rng, shape: 0.05 * rng.standard_normal(shape)),
        ("", lambda rng, shape: rng.uniform(size=shape)),
    ),
)


def _check_weights(weights) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """Validate a weight dict; returns ``(float32 copy, widths)`` or raises ``ValueError``."""
    weights = SPEC.check_mapping(weights)
    lin_shapes = {}
    for k in range(len(STAGE_DEPTHS)):
        if f"lin{k}" in weights:
            lin_shapes[k] = np.shape(weights[f"lin{k}"])
    if len(lin_shapes) == len(STAGE_DEPTHS) and all(
        len(s) == 1 and s[0] >= 1 for s in lin_shapes.values()
    ):
        widths = tuple(int(s[0]) for s in lin_shapes.values())
    else:
        widths = None
    expected = weight_shapes(widths if widths is not None else VGG16_WIDTHS)
    if widths is None and set(weights) == set(expected):  # the keys are right, the lin not
        raise ValueError(
            "LPIPS weights lin0..lin4 must be vectors [C_k] of the five stage widths, got shapes "
            f"{[lin_shapes[k] for k in sorted(lin_shapes)]}. "
            + _NOT_LPIPS.format(command=SPEC.command())
        )
    clean = SPEC.check(weights, expected, f" for stage widths {widths}")
    for k in range(len(widths)):
        if np.any(clean[f"lin{k}"] < 0):
            raise ValueError(
                f"LPIPS weight lin{k} has negative entries; the lin weights are non-negative "
                "(lpips clamps them at 0 during training), so d(x, y) >= 0."
            )
    return clean, widths


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and validate a weight ``.npz``; float32 arrays keyed as in the module docstring.

    Raises ``FileNotFoundError`` (with how to make the file) or ``ValueError``.
    """
    return _check_weights(SPEC.read(path))[0]


def save_weights(path: str | os.PathLike, weights: Mapping[str, Any]) -> str:
    """Validate ``weights`` and write them as an uncompressed ``.npz``; returns the path written.

    ``.npz`` is appended to ``path`` if missing (as ``np.savez`` does). The file is written to
    a temporary name in the same directory and then renamed, so a reader never sees half a file.
    """
    clean, _ = _check_weights(weights)
    return SPEC.save(path, clean)


def random_weights(seed: int = 0, widths: Sequence[int] = VGG16_WIDTHS) -> dict[str, np.ndarray]:
    """Random weights in the file layout, for tests and smoke runs only (not perceptual).

    He-normal kernels (``std = sqrt(2 / (9 C_in))``, so activations keep their scale through
    the 13 layers), biases ``N(0, 0.05^2)``, lin weights uniform in ``[0, 1)``; NumPy
    ``default_rng(seed)``.
    """
    return SPEC.random(weight_shapes(widths), seed)
