"""The InceptionV3 of FID (pool3, 2048-d) and Inception Score, in flax, weights from a file.

This is the network of the standard FID tools (Heusel et al. 2017's TensorFlow graph
``2015-12-05``, as ported by ``pytorch-fid`` in ``FIDInceptionA/C/E``; also what
``torch-fidelity`` and the ADM evaluation suite load): torchvision's Inception3 layout with the
FID graph's differences (average pools that do not count the padding, a max pool in the last
block's pool branch, 1008 output classes). Images are NHWC floats in ``[-1, 1]``:

.. code-block:: text

    x' = resize_bilinear(x, 299 x 299)      torch F.interpolate(align_corners=False), no antialias
    conv (no bias) + BatchNorm(eps = 1e-3) + ReLU blocks:
      Conv2d_1a_3x3 (s2) -> 2a_3x3 -> 2b_3x3 (pad 1) -> maxpool 3/2 -> 3b_1x1 -> 4a_3x3
      -> maxpool 3/2 -> Mixed_5b, 5c, 5d (A) -> 6a (B) -> 6b, 6c, 6d, 6e (C) -> 7a (D)
      -> 7b (E, avg-pool branch) -> 7c (E, max-pool branch) -> global mean over H, W
    pool3   [B, 2048]                       the FID features
    logits  [B, 1008] = pool3 W^T           ``fc`` without its bias: the logits of the
                                            original Inception Score code (torch-fidelity's
                                            ``logits_unbiased``); p(y|x) = softmax(logits)

Channel widths are those of InceptionV3 divided by ``width_div`` (1 for the real network;
tests use 16 to keep random-weight fixtures small); every width is ``max(1, w // width_div)``.

Weights: a flowjax ``.npz`` with flat keys ``Mixed_5b_branch1x1/conv/kernel`` (HWIO),
``Mixed_5b_branch1x1/{scale,bias,mean,var}`` (the BatchNorm) and ``fc/kernel``
``[2048, 1008]``, ``fc/bias``; made once
from pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (torch needed for this step only)::

    flowjax convert-inception --weights=pt_inception-2015-12-05-6726825d.pth \
        --out=inception_fid.npz

Example::

    net = InceptionV3.from_file("inception_fid.npz")
    pool3, logits = net(x_bhwc)          # [B, 2048], [B, 1008]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from flowjax.models.resize import resize_bilinear
from flowjax.types import Array
from flowjax.weight_files import (
    WeightSpec,
    he_normal,
    to_numpy,
    tree_shapes,
    unflatten,
)

__all__ = [
    "InceptionNet",
    "InceptionV3",
    "NUM_CLASSES",
    "convert_torch_state_dict",
    "load_weights",
    "random_weights",
    "save_weights",
    "weight_shapes",
]

BN_EPS = 1e-3
NUM_CLASSES = 1008
INPUT_SIZE = 299
SPEC = WeightSpec(
    what="Inception",
    prefix="inception",
    convert="flowjax convert-inception --weights=pt_inception-2015-12-05-6726825d.pth --out={out}",
    example_out="inception_fid.npz",
    make_file=(
        "convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth once (needs torch) with\n"
        "    {command}"
    ),
    wrong_keys=(
        "these are not FID InceptionV3 weights: {keys}. Expected keys like "
        "Conv2d_1a_3x3/conv/kernel, Mixed_7c_branch_pool/var, fc/kernel (torch: "
        "Conv2d_1a_3x3.conv.weight, ...); convert pytorch-fid's file with `{command}`."
    ),
    # He-normal kernels, BatchNorm statistics near (0, 1), small biases.
    noise=(
        ("/kernel", he_normal),
        ("/var", lambda rng, shape: rng.uniform(0.5, 1.5, shape)),
        ("/scale", lambda rng, shape: 1.0 + 0.1 * rng.standard_normal(shape)),
        ("", lambda rng, shape: 0.1 * rng.standard_normal(shape)),
    ),
)


class BasicConv(nn.Module):
    """conv (no bias) -> BatchNorm (inference statistics, eps 1e-3) -> ReLU."""

    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            self.kernel,
            strides=(self.stride, self.stride),
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            name="conv",
        )(x)
        c = self.features
        bn = {
            "scale": nn.initializers.ones,
            "bias": nn.initializers.zeros,
            "mean": nn.initializers.zeros,
            "var": nn.initializers.ones,
        }
        p = {k: self.param(k, init, (c,)) for k, init in bn.items()}
        return nn.relu((x - p["mean"]) * jax.lax.rsqrt(p["var"] + BN_EPS) * p["scale"] + p["bias"])


def _avg_pool3(x):
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool3(x, stride=2, pad=0):
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class InceptionNet(nn.Module):
    """The FID InceptionV3 trunk + ``fc``; ``__call__(x in [-1, 1] at any size) -> (pool3,
    logits without bias)``. ``resize_to=None`` feeds the images as they are (>= 75 x 75)."""

    width_div: int = 1
    num_classes: int = NUM_CLASSES
    resize_to: int | None = INPUT_SIZE

    def w(self, c: int) -> int:
        return max(1, c // self.width_div)

    @nn.compact
    def __call__(self, x):
        w = self.w
        if self.resize_to is not None:
            x = resize_bilinear(x, self.resize_to)
        x = BasicConv(w(32), (3, 3), 2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(w(32), (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(w(64), (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool3(x)
        x = BasicConv(w(80), (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv(w(192), (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool3(x)
        for name, pool in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = self._block_a(x, pool, name)
        x = self._block_b(x, "Mixed_6a")
        for name, c7 in (
            ("Mixed_6b", 128),
            ("Mixed_6c", 160),
            ("Mixed_6d", 160),
            ("Mixed_6e", 192),
        ):
            x = self._block_c(x, c7, name)
        x = self._block_d(x, "Mixed_7a")
        x = self._block_e(x, "Mixed_7b", max_pool=False)
        x = self._block_e(x, "Mixed_7c", max_pool=True)
        pool3 = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, name="fc")(pool3)
        bias = self.variables["params"]["fc"]["bias"]
        return pool3, logits - bias

    def _conv(self, prefix, name, c, k, stride=1, pad=(0, 0)):
        return BasicConv(self.w(c), k, stride, pad, name=f"{prefix}_{name}")

    def _block_a(self, x, pool_features, p):
        b1 = self._conv(p, "branch1x1", 64, (1, 1))(x)
        b5 = self._conv(p, "branch5x5_1", 48, (1, 1))(x)
        b5 = self._conv(p, "branch5x5_2", 64, (5, 5), pad=(2, 2))(b5)
        b3 = self._conv(p, "branch3x3dbl_1", 64, (1, 1))(x)
        b3 = self._conv(p, "branch3x3dbl_2", 96, (3, 3), pad=(1, 1))(b3)
        b3 = self._conv(p, "branch3x3dbl_3", 96, (3, 3), pad=(1, 1))(b3)
        bp = self._conv(p, "branch_pool", pool_features, (1, 1))(_avg_pool3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)

    def _block_b(self, x, p):
        b3 = self._conv(p, "branch3x3", 384, (3, 3), stride=2)(x)
        bd = self._conv(p, "branch3x3dbl_1", 64, (1, 1))(x)
        bd = self._conv(p, "branch3x3dbl_2", 96, (3, 3), pad=(1, 1))(bd)
        bd = self._conv(p, "branch3x3dbl_3", 96, (3, 3), stride=2)(bd)
        return jnp.concatenate([b3, bd, _max_pool3(x)], axis=-1)

    def _block_c(self, x, c7, p):
        b1 = self._conv(p, "branch1x1", 192, (1, 1))(x)
        b7 = self._conv(p, "branch7x7_1", c7, (1, 1))(x)
        b7 = self._conv(p, "branch7x7_2", c7, (1, 7), pad=(0, 3))(b7)
        b7 = self._conv(p, "branch7x7_3", 192, (7, 1), pad=(3, 0))(b7)
        bd = self._conv(p, "branch7x7dbl_1", c7, (1, 1))(x)
        bd = self._conv(p, "branch7x7dbl_2", c7, (7, 1), pad=(3, 0))(bd)
        bd = self._conv(p, "branch7x7dbl_3", c7, (1, 7), pad=(0, 3))(bd)
        bd = self._conv(p, "branch7x7dbl_4", c7, (7, 1), pad=(3, 0))(bd)
        bd = self._conv(p, "branch7x7dbl_5", 192, (1, 7), pad=(0, 3))(bd)
        bp = self._conv(p, "branch_pool", 192, (1, 1))(_avg_pool3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)

    def _block_d(self, x, p):
        b3 = self._conv(p, "branch3x3_1", 192, (1, 1))(x)
        b3 = self._conv(p, "branch3x3_2", 320, (3, 3), stride=2)(b3)
        b7 = self._conv(p, "branch7x7x3_1", 192, (1, 1))(x)
        b7 = self._conv(p, "branch7x7x3_2", 192, (1, 7), pad=(0, 3))(b7)
        b7 = self._conv(p, "branch7x7x3_3", 192, (7, 1), pad=(3, 0))(b7)
        b7 = self._conv(p, "branch7x7x3_4", 192, (3, 3), stride=2)(b7)
        return jnp.concatenate([b3, b7, _max_pool3(x)], axis=-1)

    def _block_e(self, x, p, max_pool):
        b1 = self._conv(p, "branch1x1", 320, (1, 1))(x)
        b3 = self._conv(p, "branch3x3_1", 384, (1, 1))(x)
        b3 = jnp.concatenate(
            [
                self._conv(p, "branch3x3_2a", 384, (1, 3), pad=(0, 1))(b3),
                self._conv(p, "branch3x3_2b", 384, (3, 1), pad=(1, 0))(b3),
            ],
            axis=-1,
        )
        bd = self._conv(p, "branch3x3dbl_1", 448, (1, 1))(x)
        bd = self._conv(p, "branch3x3dbl_2", 384, (3, 3), pad=(1, 1))(bd)
        bd = jnp.concatenate(
            [
                self._conv(p, "branch3x3dbl_3a", 384, (1, 3), pad=(0, 1))(bd),
                self._conv(p, "branch3x3dbl_3b", 384, (3, 1), pad=(1, 0))(bd),
            ],
            axis=-1,
        )
        pooled = _max_pool3(x, stride=1, pad=1) if max_pool else _avg_pool3(x)
        bp = self._conv(p, "branch_pool", 192, (1, 1))(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------


def weight_shapes(width_div: int = 1, num_classes: int = NUM_CLASSES) -> dict[str, tuple]:
    """Every key of the flat weight layout and its shape."""
    net = InceptionNet(width_div=width_div, num_classes=num_classes)
    x = jax.ShapeDtypeStruct((1, 80, 80, 3), jnp.float32)
    init = lambda x_: net.init(jax.random.PRNGKey(0), x_)["params"]
    return tree_shapes(jax.eval_shape(init, x))


def check_weights(weights: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int, int]:
    """Validate a flat weight dict: ``(float32 copy, width_div, num_classes)`` or a
    ``ValueError`` naming the missing / unexpected keys."""
    weights = SPEC.check_mapping(weights)
    first = np.shape(weights.get("Conv2d_1a_3x3/conv/kernel", ()))
    width_div = 32 // int(first[-1]) if len(first) == 4 and first[-1] else 1
    fc = np.shape(weights.get("fc/kernel", ()))
    num_classes = int(fc[-1]) if len(fc) == 2 else NUM_CLASSES
    clean = SPEC.check(weights, weight_shapes(max(width_div, 1), num_classes))
    return clean, width_div, num_classes


def convert_torch_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """pytorch-fid's ``FIDInceptionV3`` state dict (torchvision Inception3 names) -> flat flax.

    ``X.conv.weight [O, I, kh, kw]`` -> ``X/conv/kernel`` HWIO; ``X.bn.{weight, bias,
    running_mean, running_var}`` -> ``X/{scale, bias, mean, var}`` (``Mixed_5b.branch1x1`` ->
    ``Mixed_5b_branch1x1``); ``fc.weight [1008,
    2048]`` -> ``fc/kernel [2048, 1008]``. ``num_batches_tracked`` and torchvision's auxiliary
    classifier (``AuxLogits.*``) are dropped. Values may be torch tensors."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a mapping, got {type(state_dict)}.")
    leaf = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked") or key.startswith("AuxLogits."):
            continue
        a = to_numpy(value)
        parts = key.split(".")
        if parts[0] == "fc":
            out[f"fc/{'kernel' if parts[1] == 'weight' else 'bias'}"] = a.T if a.ndim == 2 else a
        elif len(parts) >= 3 and parts[-2] == "conv" and parts[-1] == "weight" and a.ndim == 4:
            out["/".join(parts[:-1]).replace("/branch", "_branch") + "/kernel"] = np.transpose(
                a, (2, 3, 1, 0)
            )
        elif len(parts) >= 3 and parts[-2] == "bn" and parts[-1] in leaf:
            out["/".join(parts[:-2]).replace("/branch", "_branch") + "/" + leaf[parts[-1]]] = a
        else:
            out[key] = a  # reported as unexpected
    return check_weights(out)[0]


def save_weights(path: str | os.PathLike, weights: Mapping[str, Any]) -> str:
    """Validate ``weights`` and write them as an ``.npz`` atomically; returns the path."""
    clean, _, _ = check_weights(weights)
    return SPEC.save(path, clean)


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and validate a weight ``.npz`` (float32 arrays), or a ``FileNotFoundError`` saying
    how to make it, a ``ValueError`` naming what is wrong with it."""
    return check_weights(SPEC.read(path))[0]


def random_weights(
    seed: int = 0, width_div: int = 1, num_classes: int = NUM_CLASSES
) -> dict[str, np.ndarray]:
    """Random weights (He-normal kernels, BatchNorm statistics near (0, 1)); tests only."""
    return SPEC.random(weight_shapes(width_div, num_classes), seed)


@flax.struct.dataclass
class InceptionV3:
    """The FID InceptionV3 with its weights (a pytree). ``self(x) -> (pool3, logits)``."""

    params: Any
    width_div: int = flax.struct.field(pytree_node=False, default=1)
    num_classes: int = flax.struct.field(pytree_node=False, default=NUM_CLASSES)
    resize_to: int | None = flax.struct.field(pytree_node=False, default=INPUT_SIZE)

    @classmethod
    def from_weights(cls, weights, resize_to: int | None = INPUT_SIZE) -> InceptionV3:
        clean, width_div, num_classes = check_weights(weights)
        params = jax.tree.map(jnp.asarray, unflatten(clean))
        return cls(params, width_div, num_classes, resize_to)

    @classmethod
    def from_file(cls, path, resize_to: int | None = INPUT_SIZE) -> InceptionV3:
        return cls.from_weights(load_weights(path), resize_to)

    @property
    def feature_dim(self) -> int:
        return int(self.params["fc"]["kernel"].shape[0])

    def __call__(self, x_bhwc) -> tuple[Array, Array]:
        """``(pool3 [B, F], logits [B, K])`` for images ``[B, H, W, 1 or 3]`` in ``[-1, 1]``."""
        x = jnp.asarray(x_bhwc)
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"expected images [B, H, W, 1 or 3] (NHWC), got {x.shape}.")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"images must be floats in [-1, 1], got dtype {x.dtype}.")
        if self.resize_to is None and min(x.shape[1:3]) < 75:
            raise ValueError(f"InceptionV3 needs at least 75x75 pixels, got {x.shape[1:3]}.")
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        return _apply(
            self.params, x.astype(jnp.float32), self.width_div, self.num_classes, self.resize_to
        )


@jax.jit(static_argnums=(2, 3, 4))
def _apply(params, x, width_div, num_classes, resize_to):
    net = InceptionNet(width_div=width_div, num_classes=num_classes, resize_to=resize_to)
    return net.apply({"params": params}, x)
