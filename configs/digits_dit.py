"""Class-conditional rectified flow with a small DiT on the 8x8 UCI digits (runs on a CPU).

    python -m flowjax.main --config=configs/digits_dit.py --workdir=/tmp/flowjax_digits_dit

The same DiT code as the ImageNet config, at digits size: 8x8x1 images, patch 2 -> 16 tokens,
width 128, depth 4, 4 heads (1.28M parameters), SiT's recipe otherwise (raw time t into the
time embedder, linear path, velocity prediction, AdamW, EMA). Sharded exactly like the big
model: try ``--config.mesh.fsdp=2`` with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``.
Evaluation is as in ``configs/digits_rf.py`` (Fréchet distance on digits-classifier features).
"""

import importlib.util
import os

import ml_collections


def _sibling(name):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"flowjax_configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


digits_rf = _sibling("digits_rf")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = digits_rf.get_config()
    c.model = dict(
        name="dit",
        patch_size=2,
        hidden_size=128,
        depth=4,
        num_heads=4,
        mlp_ratio=4.0,
        learn_sigma=False,
        time_scale=1.0,
        conditional=True,
        dtype="float32",
        param_dtype="float32",
        remat=False,
    )
    c.optim.lr = 3e-4
    c.optim.warmup_steps = 500
    return c
