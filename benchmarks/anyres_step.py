"""Any-resolution transformers (``fitv2``, ``nextdit``) against the DiT of equal FLOPs: step
time, MFU, and the FLOPs a mixed-size batch wastes on padding.

    python benchmarks/anyres_step.py                    # the CPU table and the padding overhead
    python benchmarks/anyres_step.py --padding-only     # the padding overhead alone (seconds)
    python benchmarks/anyres_step.py --device [--tiny]  # the GPU rows (benchmarks/gpu_check.sh)

**Step table.** Each model's real training step (``Experiment``: flow matching, AdamW, EMA,
1000 classes) on SD-VAE-latent-shaped inputs, 32x32x4 (256 tokens at patch 2), float32 on the
CPU, at a tiny width (:data:`CPU_ARCH`); Next-DiT's SwiGLU multiplier and the DiT's MLP ratio
are chosen so that each model's analytic forward FLOPs per image match FiTv2's (within a few
percent; each model's ``forward_flops`` is its own counter). Rows: the three on an image batch,
then FiTv2 and Next-DiT on a mixed-size token batch (the :func:`imagenet_like_grids` sizes,
padded to 256 tokens: the released FiT layout), whose model FLOPs count valid tokens only.
Per row: compile seconds, the median steady step, model FLOPs per step, MFU against this CPU's
measured dense float32 matmul rate (:func:`measured_matmul_flops`, as
``benchmarks/dit_step.py``), and the step time over the DiT's. Ratios only: the machine is
shared, no number is asserted anywhere.

**Padding overhead.** The fraction of a step's token FLOPs spent on padding, ``1 - sum_i
F(n_i) / sum_i F(N_batch)`` with ``F(n)`` the model's forward FLOPs for ``n`` tokens (attention
makes it more than the fraction of padded slots, which is also reported), for

- ImageNet-like latents: aspect ratios drawn from :data:`ASPECTS` (a stated mix, not measured
  on ImageNet), every image larger than 256^2 px, preprocessed with FiTv2's rule (resize to
  area 256^2 or the 256x256 centre crop, at random; :func:`flowjax.data.tokens.area_size`),
  latent stride 8, patch 2, global batch 256: padded to ``L_max = 256`` as released; trimmed
  to the batch's longest; and in the size buckets of
  :func:`flowjax.data.mixed_sizes.size_buckets` (no size wastes more than 10% of its bucket's
  length; a batch is drawn from one bucket). Two streams: large images (short side 256-500
  px: nearly all at the full 256 tokens) and mixed resolutions (short side 96-500 px: the
  smaller images keep their size);
- the ``digits_mixed`` sizes (every size equally likely) padded to the longest or in the
  source's default buckets.

Goal: under 10% of the token FLOPs wasted with bucketing. Results go to
``results/benchmarks/anyres_step.json`` (``--out``).

**GPU rows** (``--device``; ``--tiny`` runs the path on a CPU in a minute): FiTv2-XL/2, and
Next-DiT and a DiT at its patch, width, depth and heads with their FFN widths matched to its
FLOPs as above, batch 128 of 32x32x4 latents, bf16, scanned blocks, XLA and cuDNN attention,
then FiTv2 and Next-DiT on a mixed-size token batch; MFU against the device's bf16 peak.
Written to ``results/benchmarks/anyres_step_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from dit_step import compile_and_time, measured_matmul_flops  # noqa: E402  (sibling script)

PATCH, CHANNELS, STRIDE, SIDE, L_MAX = 2, 4, 8, 256, 256
#: Aspect ratios (width : height) of the ImageNet-like mix and their weights: a stated
#: assumption (most photographs are 4:3 landscape), not a measurement of ImageNet.
ASPECTS = ((4 / 3, 0.50), (3 / 4, 0.15), (1.0, 0.10), (3 / 2, 0.10), (2 / 3, 0.05), (16 / 9, 0.10))
CPU_ARCH = dict(patch_size=2, hidden_size=128, depth=4, num_heads=4)  # FiTv2's LoRA rank 32
GPU_ARCH = dict(variant="XL/2")  # FiTv2-XL/2; the others at its width, depth and heads


# ---------------------------------------------------------------------------------------------
# Sizes and padding
# ---------------------------------------------------------------------------------------------


def imagenet_like_grids(count: int, seed: int = 0, short: tuple[int, int] = (256, 500)):
    """Token grids ``[count, 2]`` of ImageNet-like images through FiTv2's preprocessing.

    Each image: an aspect ratio from :data:`ASPECTS`, a short side uniform in ``short`` px;
    then the area rule at side 256 (multiple 16 = latent stride x patch: an image above
    256^2 px is resized to that area, a smaller one keeps its size floored to the multiple) or,
    for an image above 256^2 px with probability 1/2, the 256x256 centre crop (FiTv2 stores
    both and picks one at random); tokens per side = pixels / 16.
    """
    from flowjax.data.tokens import area_size

    rng = np.random.RandomState(seed)
    ratios, weights = zip(*ASPECTS)
    grids = []
    for _ in range(count):
        ratio = ratios[rng.choice(len(ratios), p=np.asarray(weights) / sum(weights))]
        side = rng.randint(short[0], short[1] + 1)
        h, w = (side, round(side * ratio)) if ratio >= 1 else (round(side / ratio), side)
        if h * w > SIDE * SIDE and rng.rand() < 0.5:
            h, w = SIDE, SIDE
        else:
            h, w = area_size(h, w, SIDE, STRIDE * PATCH)
        grids.append((h // (STRIDE * PATCH), w // (STRIDE * PATCH)))
    return np.asarray(grids, np.int64)


def padding_overhead(tokens_per_batch, padded_lengths, flops_of_tokens) -> dict:
    """Wasted fraction of the token slots and of the forward FLOPs of some padded batches.

    ``tokens_per_batch``: per batch, the valid tokens of each image; ``padded_lengths``: the
    length each batch is padded to; ``flops_of_tokens(n)``: forward FLOPs of one sequence of
    ``n`` valid tokens.
    """
    valid_slots = padded_slots = valid_flops = padded_flops = 0.0
    for counts, length in zip(tokens_per_batch, padded_lengths):
        counts = np.asarray(counts)
        if counts.max() > length:
            raise ValueError(f"a batch holds {counts.max()} tokens but is padded to {length}")
        valid_slots += counts.sum()
        padded_slots += length * len(counts)
        valid_flops += sum(flops_of_tokens(int(n)) for n in counts)
        padded_flops += len(counts) * flops_of_tokens(int(length))
    return dict(
        wasted_slot_fraction=1.0 - valid_slots / padded_slots,
        wasted_flop_fraction=1.0 - valid_flops / padded_flops,
        batches=len(tokens_per_batch),
    )


def token_flops_fn(model):
    """``n -> forward FLOPs`` of ``model`` for one image of ``n`` tokens (a 1 x n grid: the
    any-resolution models' count depends on the number of tokens only), through the library's
    token-batch counter (:class:`flowjax.training.accounting.TokenCost`, which caches)."""
    from flowjax.training import accounting

    cost = accounting.TokenCost(model, CHANNELS)
    return lambda n: cost.forward(1, n, model.patch_size)


def bucket_lengths(grids: np.ndarray, bucket_padding: float) -> np.ndarray:
    """Each image's padded length when batches are drawn from the size buckets of
    :func:`flowjax.data.mixed_sizes.size_buckets` (the ``digits_mixed`` / ``photos_mixed``
    rule: no size wastes more than ``bucket_padding`` of its bucket's length)."""
    from flowjax.data.mixed_sizes import size_buckets

    sizes = [tuple(int(v) for v in g) for g in grids]
    length = {s: b.length for b in size_buckets(sizes, 1, bucket_padding) for s in b.sizes}
    return np.asarray([length[s] for s in sizes])


def imagenet_like_overhead(model, short, *, batch: int = 256, images: int = 256 * 64) -> dict:
    """:func:`padding_overhead` of an ImageNet-like stream (short sides in ``short`` px) padded
    to ``L_max`` as released, trimmed to each batch's longest, and bucketed by size (10%)."""
    grids = imagenet_like_grids(images, short=short)
    tokens = grids[:, 0] * grids[:, 1]
    flops = token_flops_fn(model)
    rows = np.arange(images).reshape(-1, batch)
    lengths = bucket_lengths(grids, 0.1)
    return dict(
        short_side_px=list(short),
        images=images,
        batch=batch,
        mean_tokens=float(tokens.mean()),
        min_tokens=int(tokens.min()),
        buckets=len(set(lengths.tolist())),
        pad_to_l_max=padding_overhead([tokens[r] for r in rows], [L_MAX] * len(rows), flops),
        trim_to_batch_max=padding_overhead(
            [tokens[r] for r in rows], [int(tokens[r].max()) for r in rows], flops
        ),
        # a batch drawn from one bucket is padded to the bucket's length: per image, the same
        bucketed=padding_overhead([[n] for n in tokens], lengths.tolist(), flops),
    )


def digits_mixed_overhead(model) -> dict:
    """The same for the default ``digits_mixed`` sizes (every size equally likely), padded to
    the longest (``bucket_padding=1``) or in its default buckets (0.1)."""
    from flowjax.data.mixed_sizes import DIGITS_MIXED_SIZES

    grids = np.asarray(DIGITS_MIXED_SIZES) // model.patch_size
    tokens = grids[:, 0] * grids[:, 1]
    flops = token_flops_fn(model)
    return dict(
        sizes=[list(s) for s in DIGITS_MIXED_SIZES],
        no_buckets=padding_overhead([tokens], [int(tokens.max())], flops),
        bucketed=padding_overhead([[n] for n in tokens], bucket_lengths(grids, 0.1), flops),
    )


# ---------------------------------------------------------------------------------------------
# Training steps
# ---------------------------------------------------------------------------------------------


class _Batches:
    """A fixed training batch per step: 32x32x4 images, or the mixed-size token batch of
    ``grids`` padded to ``L_MAX`` (``tokens=True``), with 1000-class labels."""

    kind, name, num_classes = "images", "latents", 1000

    def __init__(self, batch: int, grids: np.ndarray | None = None):
        self.batch, self.grids = batch, grids
        self.element_shape = (32, 32, CHANNELS)

    def iterator(self, start_step=0):
        from flowjax.data.tokens import pack_images

        rng = np.random.RandomState(start_step)
        labels = rng.randint(0, 1000, size=(self.batch,)).astype(np.int32)
        if self.grids is None:
            x1 = rng.normal(size=(self.batch, *self.element_shape)).astype(np.float32)
            batch = {"x1": x1, "label": labels}
        else:
            images = [
                rng.normal(size=(h * PATCH, w * PATCH, CHANNELS)).astype(np.float32)
                for h, w in self.grids
            ]
            packed = pack_images(images, PATCH, max_tokens=L_MAX, pad_to_max=True)
            batch = {
                "x1": packed.tokens,
                "mask": packed.mask,
                "positions": packed.positions,
                "label": labels,
            }
        while True:
            yield batch


def model_config(name: str, arch: dict, dtype: str, extra: dict | None = None):
    """The ImageNet DiT job with the model ``name`` at ``arch`` (conditional, ``dtype``)."""
    from flowjax.config_files import load_config

    config = load_config("imagenet256_dit")
    model = dict(name=name, conditional=True, dtype=dtype, param_dtype="float32", **arch)
    if name in ("fitv2", "nextdit"):
        model.update(rope="rope", train_grid=16, max_tokens=L_MAX)
    if name == "fitv2" and "hidden_size" in arch:  # the published LoRA rank: width / 4
        model.update(lora_rank=arch["hidden_size"] // 4)
    config.model = dict(model, **(extra or {}))
    return config


def build_model(config):
    from flowjax.models import make_model

    return make_model(config.model, num_classes=1000)


def matched_configs(arch: dict, dtype: str) -> dict:
    """FiTv2 at ``arch``; Next-DiT and the DiT at its patch, width, depth and heads, with the
    FFN width whose forward FLOPs per 32x32x4 image are closest to FiTv2's."""
    shape = (32, 32, CHANNELS)
    fit = model_config("fitv2", arch, dtype)
    net = build_model(fit)
    target = net.forward_flops(shape)
    same = {k: getattr(net, k) for k in ("patch_size", "hidden_size", "depth", "num_heads")}

    def closest(name, field, values, **fixed):
        configs = [model_config(name, same, dtype, {field: float(v), **fixed}) for v in values]
        return min(configs, key=lambda c: abs(build_model(c).forward_flops(shape) - target))

    return dict(
        dit=closest("dit", "mlp_ratio", np.arange(1.0, 8.01, 0.125)),
        fitv2=fit,
        nextdit=closest(
            "nextdit", "ffn_dim_multiplier", np.arange(0.25, 3.01, 0.0625), multiple_of=16
        ),
    )


def step_entry(config, data: _Batches, steps: int, peak: float | None) -> dict:
    """Compile and time the jitted, donated ``Experiment`` step; model FLOPs of valid tokens."""
    import jax

    from flowjax.training import Experiment, accounting

    config.train.batch_size = data.batch
    exp = Experiment(config, data=data)
    state = exp.init_state()
    step = exp.jit_train_step()
    b = exp.global_batch(next(data.iterator(0)))
    _, compile_s, step_s, state, metrics = compile_and_time(step, state, b, steps)
    if data.grids is None:
        flops, wasted = 3.0 * data.batch * exp.model.forward_flops(data.element_shape), 0.0
    else:  # the library's count of a token batch: each image's valid tokens
        cost = accounting.TokenCost(exp.model, CHANNELS)(next(data.iterator(0)))
        flops, wasted = cost.model_flops, cost.padding()["padding_flops_fraction"]
    return dict(
        compile_seconds=compile_s,
        step_seconds=step_s,
        model_flops_per_step=flops,
        wasted_flop_fraction=wasted,
        forward_flops_per_image=float(exp.model.forward_flops((32, 32, CHANNELS))),
        mfu=None if not peak else flops / (step_s * peak),
        params=int(sum(x.size for x in jax.tree.leaves(state.params))),
        loss=float(metrics["loss"]),
    )


def step_table(args, arch: dict, dtype: str, peak: float | None, out: dict, save) -> None:
    """Time every row of the plan (see the module docstring) and store it in ``out``."""
    import jax

    configs = matched_configs(arch, dtype)
    grids = imagenet_like_grids(args.batch, seed=1)
    plan = [(name, "image batch 32x32x4", None) for name in ("dit", "fitv2", "nextdit")]
    plan += [(name, "mixed-size tokens padded to 256", grids) for name in ("fitv2", "nextdit")]
    settings = [dict()]
    if args.device:
        settings = [dict(scan_blocks=True, attention="xla")]
        if jax.devices()[0].platform == "gpu":
            settings.append(dict(scan_blocks=True, attention="cudnn"))
    deadline = time.perf_counter() + args.budget
    for name, layout, g in plan:
        for setting in settings:
            label = f"{name}, {layout}" + (f", {setting['attention']}" if setting else "")
            if time.perf_counter() > deadline:
                print(f"skipped (time budget): {label}", flush=True)
                continue
            config = configs[name].copy_and_resolve_references()
            config.model.update(setting)
            t0 = time.perf_counter()
            try:
                row = step_entry(config, _Batches(args.batch, g), args.steps, peak)
            except Exception as err:  # a failure is a row of the table; keep the others
                row = dict(error=f"{type(err).__name__}: {str(err)[:300]}")
            row.update(row=label, model=name, wall_seconds=time.perf_counter() - t0)
            out["steps"].append(row)
            save()
            print_row(row, out["steps"])


def print_row(row: dict, rows: list) -> None:
    if "error" in row:
        print(f"{row['row']:48s} ERROR {row['error'][:200]}", flush=True)
        return
    base = next((r for r in rows if r.get("model") == "dit" and "error" not in r), None)
    ratio = f"{row['step_seconds'] / base['step_seconds']:.2f}x DiT" if base else ""
    mfu = f"MFU {row['mfu']:6.1%}" if row["mfu"] is not None else ""
    print(
        f"{row['row']:48s} {row['step_seconds'] * 1e3:8.1f} ms/step  {mfu}  "
        f"{row['forward_flops_per_image'] / 1e9:.3f} GFLOP/image  {ratio}  "
        f"compile {row['compile_seconds']:.1f} s",
        flush=True,
    )


def padding_section() -> dict:
    """The padding overhead of the ImageNet-like streams (FiTv2-XL/2's FLOPs counter) and of
    the ``digits_mixed`` sizes (the digits FiTv2 of the experiment, 128 wide)."""
    res = {}
    xl = build_model(model_config("fitv2", dict(variant="XL/2"), "bfloat16"))
    for name, short in (("large images", (256, 500)), ("mixed resolutions", (96, 500))):
        res[f"imagenet_like {name}"] = imagenet_like_overhead(xl, short)
    small = build_model(model_config("fitv2", CPU_ARCH, "float32"))
    res["digits_mixed"] = digits_mixed_overhead(small)
    for name, row in res.items():
        for key, cell in row.items():
            if isinstance(cell, dict):
                print(
                    f"{name:32s} {key:17s}: {cell['wasted_flop_fraction']:6.1%} of token FLOPs "
                    f"wasted ({cell['wasted_slot_fraction']:.1%} of slots)",
                    flush=True,
                )
    return res


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--device", action="store_true", help="the accelerator rows")
    parser.add_argument("--tiny", action="store_true", help="--device path at CPU size")
    parser.add_argument("--padding-only", action="store_true")
    parser.add_argument("--budget", type=float, default=1e9, help="seconds; later rows skip")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    name = "anyres_step_gpu.json" if args.device else "anyres_step.json"
    args.out = args.out or os.path.join(REPO, "results", "benchmarks", name)
    out = dict(command="python benchmarks/anyres_step.py " + " ".join(sys.argv[1:]), steps=[])

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)

    out["padding"] = padding_section()
    save()
    if args.padding_only:
        return
    import jax

    out.update(device=str(jax.devices()[0].device_kind), jax=jax.__version__)
    if args.device and not args.tiny:
        from flowjax.training import accounting

        arch, dtype = GPU_ARCH, "bfloat16"
        peak = accounting.peak_flops_per_device(jax.devices()[0].device_kind) or 989e12
        args.batch, args.steps = args.batch or 128, args.steps or 10
    else:
        arch, dtype = CPU_ARCH, "float32"
        peak = measured_matmul_flops()
        out["measured_matmul_flops"] = peak
        args.batch, args.steps = args.batch or (4 if args.tiny else 8), args.steps or 3
    out.update(batch=args.batch, arch=arch, dtype=dtype, peak_flops=peak)
    step_table(args, arch, dtype, peak, out, save)
    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
