"""Throughput accounting: model FLOPs per step, tokens/s, MFU, and memory per device.

**Model FLOPs** count the matrix multiplies of the network's forward pass (2 FLOPs per
multiply-add) times 3 for forward + backward, per example (``training_flops = 3 x forward``),
the convention of the PaLM paper's MFU. They are a property of the model, not of the
implementation: rematerialisation's extra forward pass is *not* counted, and objectives that
call the network more than once per example (guided targets, JVPs) do more work than counted.
Each network declares its count through the :class:`flowjax.types.Model` contract
(``forward_flops``, ``num_tokens``); accounting reads nothing else. For DiT the count is
analytic (:func:`flowjax.models.dit_forward_flops`) and is cross-checked against XLA's cost
analysis in the tests.

**MFU** = achieved model FLOP/s / (number of devices x peak FLOP/s per device), with the peak
dense bfloat16 throughput of the device from :data:`PEAK_BF16_FLOPS` (vendor figures per chip /
GPU), or ``config.train.peak_flops_per_device`` when set. On an unknown device (the CPU) MFU is
not reported; tokens/s and model TFLOP/s per device are.

**Token batches** (images of mixed sizes as padded patch tokens, ``{"x1", "mask",
"positions"}``): a step's model FLOPs count each image's own valid tokens only,
``3 sum_i forward_flops((h_i p, w_i p, C))`` with the grid ``(h_i, w_i)`` read from the
image's valid positions (:class:`TokenCost`). What the padding wastes is logged beside it:
``padding_fraction = 1 - sum_i n_i / (B N)`` (token slots) and ``padding_flops_fraction =
1 - sum_i F(n_i) / (B F(N))``, with ``F(N)`` the forward FLOPs of ``N`` tokens (a ``1 x N``
grid: what the padded batch computes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from flowjax.parallel.rules import bytes_per_device
from flowjax.types import Model

# Peak dense bf16 FLOP/s per device, keyed by a lower-case substring of ``device.device_kind``.
# Ordered: the first matching key wins (so "v5 lite" is tested before "v5").
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("tpu v4", 275e12),
    ("tpu v5 lite", 197e12),  # v5e
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),  # v5p reports "TPU v5"
    ("tpu v6 lite", 918e12),  # v6e (Trillium)
    ("a100", 312e12),
    ("h100 pcie", 756e12),
    ("h100", 989e12),  # SXM / HBM3
    ("h200", 989e12),
)


def peak_flops_per_device(device_kind: str) -> float | None:
    """Peak dense bf16 FLOP/s of one device of this kind, or ``None`` if unknown."""
    kind = device_kind.lower()
    for key, peak in PEAK_BF16_FLOPS:
        if key in kind:
            return peak
    return None


@dataclasses.dataclass(frozen=True)
class StepCost:
    """Per-training-step accounting of a model at a global batch size.

    ``model_flops``: model FLOPs of one step (3 x forward x batch), or ``None`` when the model
    has no analytic count; ``tokens``: tokens (DiT patches; one per example otherwise) per step.
    """

    model_flops: float | None
    tokens: int
    examples: int
    slots: int | None = None  # token batches: valid + padding tokens of the step
    padded_flops: float | None = None  # token batches: 3 x forward FLOPs of the padded batch

    @staticmethod
    def mean(costs: Sequence[StepCost]) -> StepCost:
        """The mean step of ``costs`` (steps of one logging window)."""
        if not costs:
            raise ValueError("StepCost.mean needs at least one step")
        n = len(costs)

        def avg(name):
            values = [getattr(c, name) for c in costs]
            return None if any(v is None for v in values) else sum(values) / n

        return StepCost(**{f.name: avg(f.name) for f in dataclasses.fields(StepCost)})

    def padding(self) -> dict[str, float]:
        """``padding_fraction`` and ``padding_flops_fraction`` of a token batch (else {})."""
        out = {}
        if self.slots:
            out["padding_fraction"] = 1.0 - self.tokens / self.slots
        if self.padded_flops and self.model_flops is not None:
            out["padding_flops_fraction"] = 1.0 - self.model_flops / self.padded_flops
        return out

    def rates(
        self, seconds_per_step: float, num_devices: int, peak_per_device: float | None
    ) -> dict[str, float]:
        """``tokens_per_s``, ``examples_per_s``, ``model_tflops_per_device`` and ``mfu``."""
        out = {
            "examples_per_s": self.examples / seconds_per_step,
            "tokens_per_s": self.tokens / seconds_per_step,
        }
        if self.model_flops is not None:
            achieved = self.model_flops / seconds_per_step / num_devices
            out["model_tflops_per_device"] = achieved / 1e12
            if peak_per_device:
                out["mfu"] = achieved / peak_per_device
        return out | self.padding()


def forward_flops_per_example(model: Model, element_shape: tuple[int, ...]) -> float | None:
    """Analytic forward FLOPs of ``model`` for one example of ``element_shape``: the model's
    ``forward_flops(element_shape)`` (:class:`flowjax.types.Model`; one network evaluation: for
    the blockwise network, the feature network and ONE segment block), ``None`` when the
    model declares none."""
    return _flops(model, element_shape, "full")


def _flops(model: Model, element_shape: tuple[int, ...], part: str) -> float | None:
    flops = model.forward_flops(tuple(element_shape), part=part)
    return None if flops is None else float(flops)


def inference_flops(
    model: Model,
    element_shape: tuple[int, ...],
    network_calls: dict[str, int],
    *,
    guided: bool = False,
) -> float | None:
    """Forward FLOPs of drawing ONE sample: ``sum_kind calls[kind] x flops(kind)``, times 2
    under classifier-free guidance (both halves are evaluated).

    ``network_calls`` maps a kind of evaluation to its count per sample (a sampler's
    ``network_calls``; ``{"full": nfe}`` for a standard sampler); each kind is priced by the
    model's ``forward_flops(element_shape, part=kind)``. ``None`` when the model has no
    analytic count.
    """
    total = 0.0
    for kind, count in network_calls.items():
        flops = _flops(model, element_shape, kind)
        if flops is None:
            return None
        total += int(count) * flops
    return total * (2.0 if guided else 1.0)


def step_cost(model: Model, element_shape: tuple[int, ...], global_batch: int) -> StepCost:
    """One training step's model FLOPs (3 x forward x batch) and tokens (the model's
    ``num_tokens`` per example, or one token per example when it declares none)."""
    forward = forward_flops_per_example(model, element_shape)
    per_example = model.num_tokens(tuple(element_shape))
    tokens = (1 if per_example is None else int(per_example)) * global_batch
    flops = None if forward is None else 3.0 * forward * global_batch
    return StepCost(model_flops=flops, tokens=tokens, examples=global_batch)


def token_grids(mask: Any, positions: Any) -> np.ndarray:
    """Each image's grid ``(h_i, w_i)`` ``[B, 2]`` from a token batch's ``mask [B, N]`` and
    ``positions [B, N, 2]``: one more than the largest valid row and column (``(0, 0)`` for
    a row of padding only)."""
    mask, positions = np.asarray(mask, bool), np.asarray(positions)
    if positions.shape != mask.shape + (2,):
        raise ValueError(
            f"positions must be [B, N, 2] for mask {mask.shape}; got {positions.shape}"
        )
    largest = np.where(mask[..., None], positions, -1).max(axis=1, initial=-1)
    return (largest + 1).astype(np.int64)


class TokenCost:
    """Model FLOPs of token batches (module docstring): ``cost(batch) -> StepCost`` of the
    rows ``batch`` holds, ``batch`` a dict with ``"x1" [B, N, p^2 C]``, ``"mask"`` and
    ``"positions"`` (numpy), for a model on images of ``channels`` channels. Each grid's count
    is asked of the model once."""

    def __init__(self, model: Model, channels: int):
        self.model, self.channels = model, int(channels)
        self._flops: dict[tuple[int, int, int], float | None] = {}

    def forward(self, h: int, w: int, patch: int) -> float | None:
        """Forward FLOPs of one ``(h p) x (w p)`` image (``h x w`` tokens)."""
        key = (h, w, patch)
        if key not in self._flops:
            shape = (h * patch, w * patch, self.channels)
            self._flops[key] = _flops(self.model, shape, "full")
        return self._flops[key]

    def __call__(self, batch: Mapping[str, Any]) -> StepCost:
        features = int(np.shape(batch["x1"])[-1])
        patch = math.isqrt(features // self.channels)
        if patch * patch * self.channels != features:
            raise ValueError(
                f"{features} features per token is not p^2 C for C = {self.channels} channels"
            )
        grids = token_grids(batch["mask"], batch["positions"])
        b, n = np.shape(batch["mask"])
        valid = [(int(h), int(w)) for h, w in grids if h * w > 0]
        per_image = [self.forward(h, w, patch) for h, w in valid]
        padded = self.forward(1, n, patch)
        known = None not in per_image and padded is not None
        return StepCost(
            model_flops=3.0 * sum(per_image) if known else None,
            tokens=int(np.asarray(batch["mask"], bool).sum()),
            examples=b,
            slots=b * n,
            padded_flops=3.0 * b * padded if known else None,
        )


def memory_report(abstract_state: Any) -> dict[str, int]:
    """Bytes per device of the parameters, the optimizer state and the EMA parameters."""
    return {
        "params": bytes_per_device(abstract_state.params),
        "opt_state": bytes_per_device(abstract_state.opt_state),
        "ema_params": bytes_per_device(abstract_state.ema_params),
    }


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def describe_devices() -> str:
    kinds = sorted({d.device_kind for d in jax.devices()})
    return f"{jax.device_count()} x {'/'.join(kinds)} in {jax.process_count()} process(es)"
