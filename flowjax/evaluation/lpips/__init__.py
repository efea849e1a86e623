"""LPIPS perceptual distance, VGG16 variant (Zhang et al. 2018), with weights read from a file.

For images ``x, y`` (NHWC, values in ``[-1, 1]``) LPIPS compares unit-normalised deep features
of a VGG16 network, channel-weighted by non-negative learned "lin" weights:

.. code-block:: text

    x' = resize(x)                                 bilinear, to resize_to (optional)
    z  = (x' - shift) / scale                      LPIPS scaling layer, per RGB channel
    f_k(x)  in R^{H_k x W_k x C_k}                 VGG16 after relu1_2, relu2_2, relu3_3,
                                                   relu4_3, relu5_3   (k = 0..4)
    n_k(x)_hw = f_k(x)_hw / (||f_k(x)_hw||_2 + eps)            norm over channels, eps = 1e-10
    d(x, y) = sum_k mean_{h,w} sum_c w_{k,c} (n_k(x)_hwc - n_k(y)_hwc)^2     w_{k,c} >= 0

``shift = (-0.030, -0.088, -0.188)``, ``scale = (0.458, 0.448, 0.450)`` (the ``lpips``
package's ``ScalingLayer``). On ``u = (x + 1) / 2`` in ``[0, 1]`` this is exactly the ImageNet
standardisation ``(u - mean) / std`` with ``mean = (0.485, 0.456, 0.406)``, ``std = (0.229,
0.224, 0.225)`` that ``piq.LPIPS`` applies, so both packages see the same network input.
Single-channel images are repeated to three channels. ``d >= 0``, and ``d(x, x) = 0`` and
``d(x, y) = d(y, x)`` up to float32 rounding; it is not a metric (no triangle inequality).

Network: VGG16's 13 convolutions (3x3, stride 1, zero padding 1, bias, ReLU) in five stages of
2, 2, 3, 3, 3 layers, with 2x2 stride-2 pooling (floor: an odd last row/column is dropped)
before stages 2..5. ``replace_pooling=False`` uses max pooling, as in torchvision's VGG16 and
the original ``lpips`` package; ``replace_pooling=True`` uses average pooling, the
``piq.LPIPS(replace_pooling=True)`` option used by the 2-rectified-flow++ code (Lee et al.
2024, LPIPS-Huber loss), which also resizes both images to 224x224 first.

Resizing (``resize_to``, default 224): bilinear with half-pixel centres and no antialiasing,
i.e. torch's ``F.interpolate(x, size, mode="bilinear", align_corners=False)``, also when
shrinking. ``resize_to=None`` feeds the images as they are; the network needs at least 16x16
pixels (four poolings).

Nothing is downloaded: :meth:`LPIPS.from_file` reads a ``.npz`` of float32
arrays with these keys (``s`` = stage 1..5, ``l`` = layer 1..2 for stages 1-2, 1..3 after)::

    vgg/conv{s}_{l}/kernel   [3, 3, C_in, C_out]   HWIO; C_in = 3 for conv1_1
    vgg/conv{s}_{l}/bias     [C_out]
    lin{k}                   [C_k]                 k = 0..4, the 1x1 weights of tap k, >= 0

with ``C = (C_0, ..., C_4)`` the stage widths, ``(64, 128, 256, 512, 512)`` for real VGG16
(14.7M parameters, 59 MB). Make the file once from the two published torch files:

- torchvision's ImageNet VGG16 weights, ``vgg16-397923af.pth``
  (``torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict()``);
- the ``lpips`` package's ``lpips/weights/v0.1/vgg.pth`` (in the installed ``pip install
  lpips`` package directory),

with (torch is needed for this step only; flowjax never imports it otherwise)::

    flowjax convert-lpips --vgg=vgg16.pth --lin=vgg.pth --out=lpips_vgg16.npz

Mapping from torch: torchvision ``features.{i}.weight`` ``[C_out, C_in, 3, 3]`` is transposed to
HWIO, with ``i`` = 0, 2 (stage 1), 5, 7 (stage 2), 10, 12, 14 (stage 3), 17, 19, 21 (stage 4),
24, 26, 28 (stage 5); lpips ``lin{k}.model.1.weight`` ``[1, C_k, 1, 1]`` is flattened to
``[C_k]`` (see :func:`convert_torch_weights`). ``piq`` ships the lin weights in a file of its own
(used as a list of five ``[1, C_k, 1, 1]`` tensors; not checked here to hold exactly the lpips
v0.1 values); such a list is accepted too.

The package is the network and its files (:mod:`~flowjax.evaluation.lpips.network`) and the
torch-checkpoint converter (:mod:`~flowjax.evaluation.lpips.convert`, which the command above
runs; ``python -m flowjax.evaluation.lpips`` is the same command).

Example::

    lpips = LPIPS.from_file("lpips_vgg16.npz", replace_pooling=True)   # 2-RF++ setting
    d_b = lpips(x_bhwc, y_bhwc)          # [B]; jit / grad w.r.t. x work

References: R. Zhang, P. Isola, A. Efros, E. Shechtman, O. Wang, "The Unreasonable
Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018; K. Simonyan, A. Zisserman,
"Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015; S. Lee,
Z. Lin, G. Fanti, "Improving the Training of Rectified Flows", NeurIPS 2024.
"""

from flowjax.evaluation.lpips.convert import convert_torch_weights
from flowjax.evaluation.lpips.network import (
    LPIPS,
    LPIPS_SCALE,
    LPIPS_SHIFT,
    MIN_SIZE,
    NORM_EPS,
    STAGE_DEPTHS,
    TORCHVISION_CONV_INDICES,
    VGG16_WIDTHS,
    VGG16Features,
    load_weights,
    random_weights,
    save_weights,
    weight_shapes,
)

__all__ = [
    "LPIPS",
    "LPIPS_SCALE",
    "LPIPS_SHIFT",
    "MIN_SIZE",
    "NORM_EPS",
    "STAGE_DEPTHS",
    "TORCHVISION_CONV_INDICES",
    "VGG16Features",
    "VGG16_WIDTHS",
    "convert_torch_weights",
    "load_weights",
    "random_weights",
    "save_weights",
    "weight_shapes",
]
