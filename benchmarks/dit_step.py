"""DiT-S/2 training-step throughput on this machine, and what the FLOPs counter predicts at scale.

    python benchmarks/dit_step.py                 # 1 device and 8 simulated devices
    python benchmarks/dit_step.py --steps 5 --batch 32

For each device count (each in its own subprocess, since the simulated device count must be
set before JAX starts) it builds the real job (``Experiment`` from
``configs/imagenet256_dit.py`` with ``variant=S/2``, 32x32x4 latent-sized inputs, float32 on the
CPU, FSDP over all devices), and measures: compile time (first call minus a steady step), the
median steady step time, tokens/s, model FLOP/s, and the MFU formula applied against this
CPU's *measured* dense float32 matmul throughput (best of 10 calls of a 2048^3 matmul in the
same process, all devices sharing the same cores), since a CPU has no vendor peak in the
table. Then it prints the estimate of DiT-XL/2 step time at global batch 256 on a TPU v5p-64
slice (32 chips) and on 8 x H100 at 40% and 60% MFU, from the analytic FLOPs counter.
Results go to ``results/benchmarks/dit_step.json``.

Compile time of the DiT-S/2 step on this CPU, unrolled blocks vs ``nn.scan`` (the step is
lowered and compiled, not run)::

    python benchmarks/dit_step.py --compile-only [--objective=meanflow|meanflow-all-rows]

Accelerator table (one GPU; ``--tiny`` runs the whole path on a CPU in under a minute)::

    python benchmarks/dit_step.py --device [--tiny] [--steps 10]

Rows: DiT-S/2 flow matching at batch 256, DiT-XL/2 at 128 and 256, MeanFlow S/2 (256) and
XL/2 (128), each for flowjax's ``Experiment`` step (bf16 compute, f32 master weights, AdamW,
EMA, 32x32x4 latents, 1000 classes) in several settings (unrolled / scanned blocks, XLA /
cuDNN attention), and, when ``torch`` is importable, the PyTorch DiT of
``benchmarks/torch_dit.py`` (eager and ``torch.compile``, bf16 autocast, fused AdamW). Each
entry: median of ``--steps`` steps after one warm-up, compile time (lower + compile for
flowjax; the first call minus a steady step for torch.compile), and
``MFU = model FLOPs per step / (step seconds * peak)`` with model FLOPs = 3 x the analytic
forward FLOPs x batch (:func:`flowjax.models.dit_forward_flops`; the same FM count for the
MeanFlow rows, whose extra JVP work is not credited) and peak 989 TFLOP/s (H100/H200 bf16
dense). Writes ``results/benchmarks/dit_step_gpu.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(devices: int, steps: int, batch: int) -> dict:
    import jax
    import numpy as np

    from flowjax.config_files import load_config
    from flowjax.training import Experiment

    assert jax.device_count() == devices, jax.devices()

    class Latents:
        kind, name, element_shape, num_classes = "images", "latents", (32, 32, 4), 1000

        def iterator(self, start_step=0):
            rng = np.random.RandomState(start_step)
            while True:
                yield {
                    "x1": rng.normal(size=(batch, 32, 32, 4)).astype(np.float32),
                    "label": rng.randint(0, 1000, size=(batch,)).astype(np.int32),
                }

    config = load_config("imagenet256_dit")
    config.model.variant = "S/2"
    config.model.dtype = "float32"  # XLA:CPU has no fast bf16 matmul
    config.train.batch_size = batch
    exp = Experiment(config, data=Latents())
    state = exp.init_state()
    step = exp.jit_train_step()
    batches = exp.data.iterator(0)
    times = []
    for _ in range(steps + 1):
        b = exp.global_batch(next(batches))
        t0 = time.perf_counter()
        state, metrics = step(state, b)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - t0)
    steady = float(np.median(times[1:]))

    # This CPU's dense float32 matmul throughput, measured the same way (jit, steady calls).
    matmul_flops = measured_matmul_flops()

    cost = exp.step_cost()
    rates = cost.rates(steady, jax.device_count(), matmul_flops / jax.device_count())
    return dict(
        devices=devices,
        mesh=dict(exp.mesh.shape),
        batch=batch,
        compile_seconds=times[0] - steady,
        step_seconds=steady,
        model_flops_per_step=cost.model_flops,
        tokens_per_step=cost.tokens,
        measured_matmul_flops=matmul_flops,
        **rates,
    )


def measured_matmul_flops(n: int = 2048, calls: int = 10) -> float:
    """This device's dense float32 matmul rate: the best of ``calls`` jitted ``n^3`` matmuls
    (the least disturbed call on a shared machine)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    jax.block_until_ready(mm(a))
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a))
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _estimates() -> dict:
    from flowjax.models import dit_forward_flops, dit_variant
    from flowjax.training import accounting

    flops = 3 * 256 * dit_forward_flops(image_shape=(32, 32, 4), **dit_variant("XL/2"))
    systems = {
        "TPU v5p-64 (32 chips)": 32 * accounting.peak_flops_per_device("TPU v5p"),
        "8 x H100 SXM": 8 * accounting.peak_flops_per_device("NVIDIA H100 80GB HBM3"),
    }
    out = {"xl2_model_flops_per_step_b256": flops}
    for name, peak in systems.items():
        for mfu in (0.4, 0.6):
            out[f"{name} @ {int(mfu * 100)}% MFU: step seconds"] = flops / (mfu * peak)
    return out


class _Latents:
    """32x32x4 latent-shaped batches with 1000-class labels (a fixed host batch per step)."""

    kind, name, num_classes = "images", "latents", 1000

    def __init__(self, batch: int, image: int = 32):
        self.batch, self.element_shape = batch, (image, image, 4)

    def iterator(self, start_step=0):
        import numpy as np

        rng = np.random.RandomState(start_step)
        while True:
            yield {
                "x1": rng.normal(size=(self.batch, *self.element_shape)).astype(np.float32),
                "label": rng.randint(0, 1000, size=(self.batch,)).astype(np.int32),
            }


def _config(variant, batch, objective, model_kw, tiny, all_rows=False):
    """The ImageNet DiT config at ``variant``/``batch``; ``objective`` "fm" or "meanflow"
    (ImageNet's adaptive weight and label dropout; ``all_rows``: the JVP over the whole batch,
    as the published code does, instead of the e > s rows only)."""
    from flowjax.config_files import load_config

    config = load_config("imagenet256_dit")
    config.model.variant = variant
    config.model.update(model_kw)
    if tiny:
        config.model.update(dict(depth=2, hidden_size=64, num_heads=2, dtype="float32"))
    config.train.batch_size = batch
    if objective == "meanflow":
        config.objective = load_config("toy2d_meanflow").objective
        config.objective.meanflow.adaptive_p = 1.0  # ImageNet's adaptive weight
        config.objective.label_dropout = 0.1
        config.objective.meanflow.jvp_all_rows = all_rows
    return config


def _peak(device) -> float:
    from flowjax.training import accounting

    return accounting.peak_flops_per_device(device.device_kind) or 989e12


def compile_and_time(step, state, batch, steps: int):
    """Lower and compile the jitted ``step`` for ``(state, batch)``, run it once, then time
    ``steps`` calls: ``(compiled, compile seconds, median step seconds, state, metrics)``."""
    import jax
    import numpy as np

    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics["loss"])
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - t0)
    return compiled, compile_s, float(np.median(times)), state, metrics


def flowjax_entry(variant, batch, objective, model_kw, steps, tiny=False, all_rows=False) -> dict:
    """Compile and time flowjax's jitted, donated ``Experiment`` train step."""
    import jax

    from flowjax.training import Experiment

    image = 8 if tiny else 32
    exp = Experiment(
        _config(variant, batch, objective, model_kw, tiny, all_rows), data=_Latents(batch, image)
    )
    state = exp.init_state()
    step = exp.jit_train_step()
    b = exp.global_batch(next(exp.data.iterator(0)))
    compiled, compile_s, step_s, state, metrics = compile_and_time(step, state, b, steps)
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
    flops = exp.step_cost().model_flops
    peak = _peak(jax.devices()[0])
    return dict(
        compile_seconds=compile_s,
        step_seconds=step_s,
        model_flops_per_step=flops,
        peak_flops=peak,
        mfu=flops / (step_s * peak),
        temp_bytes=temp,
        loss=float(metrics["loss"]),
        params=int(sum(x.size for x in jax.tree.leaves(state.params))),
    )


def torch_entry(variant, batch, objective, compile_, steps, tiny=False) -> dict:
    """Time the PyTorch DiT's step (eager or torch.compile); first call - steady = compile."""
    import numpy as np
    import torch
    from torch_dit import TorchDiT, make_step  # the sibling script (its folder is on the path)

    from flowjax.models import dit_forward_flops, dit_variant

    arch = dit_variant(variant)
    if tiny:
        arch.update(depth=2, hidden_size=64, num_heads=2)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    image = 8 if tiny else 32
    model = TorchDiT(**arch, image=image, use_end_time=objective == "meanflow").to(dev)
    step = make_step(model, "fm" if objective == "fm" else "meanflow", compile_)
    x1 = torch.randn(batch, image, image, 4, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)

    def run():
        t0 = time.perf_counter()
        loss = step(x1, y)
        float(loss)  # synchronises
        return time.perf_counter() - t0

    first = run()
    run()
    times = [run() for _ in range(steps)]
    step_s = float(np.median(times))
    flops = 3 * batch * dit_forward_flops(image_shape=(image, image, 4), **arch)
    peak = 989e12 if dev == "cuda" else float("nan")  # H100/H200 bf16 dense
    return dict(
        compile_seconds=(first - step_s) if compile_ else None,
        step_seconds=step_s,
        model_flops_per_step=flops,
        peak_flops=peak,
        mfu=flops / (step_s * peak),
        params=int(sum(p.numel() for p in model.parameters())),
    )


ALL_ROWS = ", JVP on all rows"  # a MeanFlow setting's suffix: the published whole-batch JVP


# The plan, in order of importance (a GPU lease is short): (row label, variant, batch,
# objective, flowjax settings). The torch rows follow the first four rows' flowjax entries.
DEVICE_PLAN = (
    (
        "DiT-S/2 flow matching, batch 256",
        "S/2",
        256,
        "fm",
        ("unrolled, xla", "scan, xla", "scan, cudnn"),
    ),
    ("DiT-XL/2 flow matching, batch 128", "XL/2", 128, "fm", ("unrolled, xla", "scan, cudnn")),
    ("MeanFlow DiT-S/2, batch 256", "S/2", 256, "meanflow", ("scan, xla", "scan, cudnn")),
    ("MeanFlow DiT-XL/2, batch 128", "XL/2", 128, "meanflow", ("scan, cudnn", "scan, xla")),
    ("DiT-XL/2 flow matching, batch 256", "XL/2", 256, "fm", ("scan, cudnn",)),
)
EXTRA_PLAN = (  # measured last, if time allows
    ("DiT-XL/2 flow matching, batch 128", "XL/2", 128, "fm", ("scan, xla", "unrolled, cudnn")),
    ("DiT-S/2 flow matching, batch 256", "S/2", 256, "fm", ("unrolled, cudnn",)),
    ("MeanFlow DiT-S/2, batch 256", "S/2", 256, "meanflow", ("unrolled, xla",)),
)
SECOND_PLAN = (  # --plan second: unrolled blocks with cuDNN attention, the XL/2 rows
    ("DiT-S/2 flow matching, batch 256", "S/2", 256, "fm", ("unrolled, cudnn",)),
    ("DiT-XL/2 flow matching, batch 128", "XL/2", 128, "fm", ("unrolled, cudnn",)),
    ("MeanFlow DiT-S/2, batch 256", "S/2", 256, "meanflow", ("unrolled, cudnn",)),
    ("MeanFlow DiT-XL/2, batch 128", "XL/2", 128, "meanflow", ("unrolled, cudnn",)),
    ("DiT-XL/2 flow matching, batch 256", "XL/2", 256, "fm", ("unrolled, cudnn",)),
    ("DiT-XL/2 flow matching, batch 128", "XL/2", 128, "fm", ("unrolled, xla",)),
    ("MeanFlow DiT-S/2, batch 256", "S/2", 256, "meanflow", ("unrolled, xla",)),
)
NEXT_PLAN = (  # --plan next: the open goals (MeanFlow with the JVP on the e > s rows only and
    # the bf16 JVP rule, against the published whole-batch JVP; XL/2 at batch 256)
    ("DiT-XL/2 flow matching, batch 128", "XL/2", 128, "fm", ("unrolled, cudnn",)),
    (
        "MeanFlow DiT-XL/2, batch 128",
        "XL/2",
        128,
        "meanflow",
        ("unrolled, cudnn", "unrolled, xla", "unrolled, cudnn" + ALL_ROWS),
    ),
    ("DiT-XL/2 flow matching, batch 256", "XL/2", 256, "fm", ("unrolled, cudnn",)),
    ("DiT-S/2 flow matching, batch 256", "S/2", 256, "fm", ("unrolled, cudnn", "unrolled, xla")),
    ("MeanFlow DiT-S/2, batch 256", "S/2", 256, "meanflow", ("unrolled, cudnn", "unrolled, xla")),
)
TORCH_PLAN = (
    ("DiT-S/2 flow matching, batch 256", "S/2", 256, "fm", (False, True)),
    ("DiT-XL/2 flow matching, batch 128", "XL/2", 128, "fm", (False, True)),
    ("MeanFlow DiT-S/2, batch 256", "S/2", 256, "meanflow", (False,)),
    ("MeanFlow DiT-XL/2, batch 128", "XL/2", 128, "meanflow", (False,)),
)
TINY_PLAN = (
    ("DiT-S/2 flow matching, batch 256", "S/2", 256, "fm", ("scan, xla",)),
    ("MeanFlow DiT-S/2, batch 256", "S/2", 256, "meanflow", ("scan, xla", "scan, xla" + ALL_ROWS)),
)
REMAT = dict(remat=True, remat_policy="dots_with_no_batch_dims_saveable")


def _setting(name: str) -> dict:
    blocks, attn = name.removesuffix(ALL_ROWS).split(", ")
    return dict(scan_blocks=blocks == "scan", attention=attn)


def device_table(args) -> None:
    import jax

    tiny = args.tiny
    try:
        import torch  # noqa: F401

        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
    on_gpu = jax.devices()[0].platform == "gpu"
    if args.out and os.path.exists(args.out) and args.append:
        with open(args.out, encoding="utf-8") as f:
            out = json.load(f)
    else:
        out = dict(entries=[])
    out.setdefault("device", str(jax.devices()[0].device_kind))
    out.update(
        jax=jax.__version__,
        steps=args.steps,
        tiny=tiny,
        command="python benchmarks/dit_step.py --device" + (" --tiny" if tiny else ""),
    )
    deadline = time.perf_counter() + args.budget

    def save():
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)

    def record(label, impl, fn):
        if time.perf_counter() > deadline:
            print(f"skipped (time budget): {label} / {impl}", flush=True)
            return None
        t0 = time.perf_counter()
        try:
            res = fn()
        except Exception as err:  # keep the other entries: a failure is a row of the table
            res = dict(error=f"{type(err).__name__}: {str(err)[:300]}")
        res.update(row=label, implementation=impl, wall_seconds=time.perf_counter() - t0)
        out["entries"].append(res)
        save()
        _print_entry(res)
        return res

    def run_flowjax(plan):
        for label, variant, batch, objective, settings in plan:
            for name in settings:
                if "cudnn" in name and not on_gpu:
                    continue
                kw = _setting(name)
                batch_ = 4 if tiny else batch
                res = record(
                    label,
                    f"flowjax ({name})",
                    functools.partial(
                        flowjax_entry,
                        variant,
                        batch_,
                        objective,
                        kw,
                        args.steps,
                        tiny,
                        name.endswith(ALL_ROWS),
                    ),
                )
                if res is not None and "error" in res and "memory" in res["error"].lower():
                    record(  # out of memory: per-block remat keeping the matmul outputs
                        label,
                        f"flowjax ({name}, remat dots)",
                        functools.partial(
                            flowjax_entry,
                            variant,
                            batch_,
                            objective,
                            dict(kw, **REMAT),
                            args.steps,
                            tiny,
                            name.endswith(ALL_ROWS),
                        ),
                    )

    def run_torch(plan):
        for label, variant, batch, objective, modes in plan:
            for comp in modes:
                impl = "PyTorch " + ("torch.compile" if comp else "eager (SDPA)")
                batch_ = 4 if tiny else batch
                record(
                    label,
                    impl,
                    functools.partial(
                        torch_entry, variant, batch_, objective, comp, args.steps, tiny
                    ),
                )

    plans = dict(main=DEVICE_PLAN, second=SECOND_PLAN, extra=EXTRA_PLAN, next=NEXT_PLAN, none=())
    plan = plans[args.plan]
    run_flowjax(TINY_PLAN if tiny else plan)
    if have_torch:
        run_torch(TORCH_PLAN[:1] if tiny else TORCH_PLAN)
    _print_table(out)
    print(f"wrote {args.out}")


def _print_entry(r):
    if "error" in r:
        print(f"{r['row']:36s} {r['implementation']:40s} ERROR {r['error'][:200]}", flush=True)
        return
    comp = f"{r['compile_seconds']:.1f} s" if r.get("compile_seconds") is not None else "-"
    print(
        f"{r['row']:36s} {r['implementation']:40s} {r['step_seconds'] * 1e3:9.1f} ms "
        f"MFU {r['mfu']:6.1%} compile {comp}",
        flush=True,
    )


def _print_table(out):
    print(f"\n{out['device']}, median of {out['steps']} steps")
    print("| step | implementation | ms/step | MFU | compile s | x FM (same impl.) |")
    print("|---|---|---|---|---|---|")
    fm = {}
    for r in out["entries"]:
        if "error" not in r and "flow matching" in r["row"]:
            fm[(r["row"].split()[0], r["implementation"], r["row"].split()[-1])] = r
    for r in out["entries"]:
        if "error" in r:
            print(f"| {r['row']} | {r['implementation']} | error: {r['error'][:80]} | | | |")
            continue
        ratio = ""
        if r["row"].startswith("MeanFlow"):
            size, b = r["row"].split()[1].rstrip(","), r["row"].split()[-1]
            base = fm.get((size, r["implementation"].replace(ALL_ROWS, ""), b))
            if base:
                ratio = f"{r['step_seconds'] / base['step_seconds']:.2f}"
        comp = f"{r['compile_seconds']:.1f}" if r.get("compile_seconds") is not None else ""
        print(
            f"| {r['row']} | {r['implementation']} | {r['step_seconds'] * 1e3:.1f} | "
            f"{r['mfu']:.1%} | {comp} | {ratio} |"
        )


def compile_only(args) -> None:
    """Lower + compile time of the DiT training step on this CPU: unrolled vs scanned blocks
    (``--objective``: the FM step, MeanFlow's, or MeanFlow's with the whole-batch JVP)."""
    import jax

    from flowjax.models import dit_variant
    from flowjax.training import Experiment

    res = {}
    for name, kw in (("unrolled", dict(scan_blocks=False)), ("scan", dict(scan_blocks=True))):
        kw = dict(kw, dtype=args.dtype, **({"depth": args.depth} if args.depth else {}))
        objective = args.objective.removesuffix("-all-rows")
        cfg = _config(args.variant, args.batch, objective, kw, False, args.objective != objective)
        exp = Experiment(cfg, data=_Latents(args.batch))
        state = exp.init_state()
        b = exp.global_batch(next(exp.data.iterator(0)))
        t0 = time.perf_counter()
        lowered = exp.jit_train_step().lower(state, b)
        t1 = time.perf_counter()
        lowered.compile()
        t2 = time.perf_counter()
        res[name] = dict(trace_lower_seconds=t1 - t0, compile_seconds=t2 - t1, total=t2 - t0)
        print(
            f"DiT-{args.variant} {args.objective} step, batch {args.batch}, {name}: "
            f"trace+lower {t1 - t0:.1f} s, "
            f"compile {t2 - t1:.1f} s, total {t2 - t0:.1f} s  (load average "
            f"{os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)",
            flush=True,
        )
    print(
        f"compile time ratio scan / unrolled: {res['scan']['total'] / res['unrolled']['total']:.2f}"
    )
    res.update(
        variant=args.variant,
        depth=args.depth or None,
        batch=args.batch,
        dtype=args.dtype,
        device=str(jax.devices()[0].device_kind),
        cpus=os.cpu_count(),
        load_average=os.getloadavg(),
        jax=jax.__version__,
        command=f"python benchmarks/dit_step.py --compile-only --dtype={args.dtype} "
        f"--batch={args.batch} --variant={args.variant}"
        + (f" --depth={args.depth}" if args.depth else "")
        + (f" --objective={args.objective}" if args.objective != "fm" else ""),
    )
    depth = args.depth or dit_variant(args.variant.split("/")[0] + "/2")["depth"]
    key = f"{args.variant} depth {depth} {args.dtype} batch {args.batch}"
    _store_run(
        "dit_compile_cpu.json", key + ("" if args.objective == "fm" else f" {args.objective}"), res
    )


def _store_run(filename: str, key: str, entry: dict) -> None:
    """Put ``entry`` under ``runs[key]`` of ``results/benchmarks/<filename>``, keeping the
    other runs."""
    path = os.path.join(REPO, "results", "benchmarks", filename)
    stored = json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}
    stored = stored if "runs" in stored else {"runs": {}}
    stored["runs"][key] = entry
    with open(path, "w", encoding="utf-8") as f:
        json.dump(stored, f, indent=1)


def flop_ratio(args) -> None:
    """XLA's FLOP count of the compiled MeanFlow step over the FM step (DiT, this CPU)."""
    import jax
    import numpy as np

    from flowjax.training import Experiment

    rows, seconds = {}, {}
    for objective, rule, all_rows in (
        ("fm", False, False),
        ("meanflow", False, False),
        ("meanflow", True, False),
        ("meanflow", False, True),
        ("meanflow", True, True),
    ):
        kw = dict(scan_blocks=False, dtype=args.dtype, attention="xla", attention_jvp_rule=rule)
        exp = Experiment(
            _config(args.variant, args.batch, objective, kw, False, all_rows),
            data=_Latents(args.batch),
        )
        state = exp.init_state() if args.steps else exp.abstract_state()
        batch = exp.global_batch(next(_Latents(args.batch).iterator(0)))
        compiled = exp.jit_train_step().lower(state, batch).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        name = objective + (", forward-mode rule" if rule else "")
        name += " (JVP on all rows, as published)" if all_rows else ""
        rows[name] = float(cost["flops"])
        if args.steps:  # also time the compiled step on this machine
            times = []
            for _ in range(args.steps + 1):
                t0 = time.perf_counter()
                state, metrics = compiled(state, batch)
                jax.block_until_ready(metrics["loss"])
                times.append(time.perf_counter() - t0)
            seconds[name] = float(np.median(times[1:]))
    fm = rows["fm"]
    out = dict(
        variant=args.variant,
        batch=args.batch,
        dtype=args.dtype,
        gflops_per_step={k: v / 1e9 for k, v in rows.items()},
        ratio_to_fm={k: v / fm for k, v in rows.items()},
        jax=jax.__version__,
        command=f"python benchmarks/dit_step.py --flop-ratio --variant={args.variant} "
        f"--batch={args.batch} --dtype={args.dtype}"
        + (f" --steps={args.steps}" if args.steps else ""),
    )
    for k, v in out["ratio_to_fm"].items():
        print(f"{k}: {rows[k] / 1e9:.1f} GFLOP per step, {v:.3f}x the FM step", flush=True)
    if seconds:
        out.update(
            device=str(jax.devices()[0].device_kind),
            step_seconds=seconds,
            time_ratio_to_fm={k: v / seconds["fm"] for k, v in seconds.items()},
        )
        for k, v in seconds.items():
            print(f"{k}: {v * 1e3:.0f} ms per step on this machine, {v / seconds['fm']:.3f}x FM")
    key = f"{args.variant} batch {args.batch} {args.dtype}" + (" timed" if seconds else "")
    _store_run("meanflow_flops.json", key, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--device", action="store_true", help="the accelerator table")
    parser.add_argument("--tiny", action="store_true", help="tiny models: test the path on CPU")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--plan", default="main", choices=("main", "second", "extra", "next", "none")
    )
    parser.add_argument("--budget", type=float, default=1e9, help="seconds; later rows skip")
    parser.add_argument(
        "--out", default=os.path.join(REPO, "results", "benchmarks", "dit_step_gpu.json")
    )
    parser.add_argument("--append", action="store_true", help="add to the entries in --out")
    parser.add_argument("--compile-only", action="store_true")
    parser.add_argument("--flop-ratio", action="store_true", help="MeanFlow / FM step FLOPs")
    parser.add_argument("--variant", default="S/2")
    parser.add_argument("--dtype", default="float32", help="compute dtype of --compile-only")
    parser.add_argument("--depth", type=int, default=0, help="--compile-only: override the depth")
    parser.add_argument(
        "--objective",
        default="fm",
        choices=("fm", "meanflow", "meanflow-all-rows"),
        help="--compile-only: the step to compile",
    )
    args = parser.parse_args()
    if args.device:
        args.steps = args.steps or (2 if args.tiny else 10)
        device_table(args)
        return
    if args.flop_ratio:
        return flop_ratio(args)
    if args.compile_only:
        compile_only(args)
        return
    args.steps = args.steps or 3
    if args.child:
        print(json.dumps(_child(args.child, args.steps, args.batch)))
        return
    runs = []
    for n in args.devices:
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
        cmd = [sys.executable, __file__, "--child", str(n), "--steps", str(args.steps)]
        cmd += ["--batch", str(args.batch)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = runs[-1]
        print(
            f"DiT-S/2 batch {r['batch']} on {n} CPU device(s), mesh {r['mesh']}: "
            f"step {r['step_seconds']:.2f} s, compile {r['compile_seconds']:.1f} s, "
            f"{r['tokens_per_s']:.0f} tokens/s, {r['model_tflops_per_device'] * 1e3:.1f} "
            f"model GFLOP/s per device, MFU vs measured matmul peak "
            f"({r['measured_matmul_flops'] / 1e9:.0f} GFLOP/s) {r['mfu']:.1%}"
        )
    if len(runs) > 1:
        ratio = runs[1]["step_seconds"] / runs[0]["step_seconds"]
        print(f"step time ratio {runs[1]['devices']} devices / 1 device: {ratio:.2f}")
    est = _estimates()
    tflops = est["xl2_model_flops_per_step_b256"] / 1e12
    print(f"DiT-XL/2, global batch 256: {tflops:.1f} model TFLOPs/step")
    for k, v in est.items():
        if k.endswith("step seconds"):
            print(f"  {k.replace(': step seconds', '')}: {v * 1e3:.1f} ms/step")
    os.makedirs(os.path.join(REPO, "results", "benchmarks"), exist_ok=True)
    with open(
        os.path.join(REPO, "results", "benchmarks", "dit_step.json"), "w", encoding="utf-8"
    ) as f:
        json.dump({"runs": runs, "estimates": est}, f, indent=1)


if __name__ == "__main__":
    main()
