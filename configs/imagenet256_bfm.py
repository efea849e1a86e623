"""Blockwise Flow Matching (BFM-XL/2) on ImageNet 256 SD-VAE latents (32x32x4), sharded like
``configs/imagenet256_dit.py`` (same data, mesh, rule table and launch commands)::

    flowjax train --config=configs/imagenet256_bfm.py --workdir=gs://BUCKET/bfm_xl2 \
        --distributed --config.data.path=gs://BUCKET/imagenet256_sdvae_latents

The official XL setting, converted (docs/maths/blockwise.md): K = 6 equal segments, width 1152,
16 heads, patch 2 (256 tokens), a feature network of 20 DiT blocks, 5 blocks per segment, an FRN
of 4 blocks, projector 1152 -> 2048 -> 2048 -> 768, raw t into the time embedder, AdamW lr 1e-4,
no weight decay, grad clip 1.0, EMA 0.9999, label dropout 0.1. One network evaluation costs the
feature net + one segment block (25 blocks, DiT-XL has 28).

Representation alignment: the paper aligns to DINOv2-B patch tokens (768 channels, 256 tokens
at 224x224); flowjax ships no DINOv2 port and downloads nothing, so ``align_weight`` is 0 here.
To align, build the objective in code with ``BlockwiseFlowMatching(encoder=fn, encoder_dim=768,
align_weight=0.05, ...)`` (``fn(x1) -> [B, 256, 768]``) and pass it to ``Experiment``.
Stage 2 (Feature Residual Approximation): ``--config.objective.blockwise.frn=True
--config.init.workdir=<stage-1 run>``; sample with ``euler:60@frn``.
"""

import ml_collections
from ml_collections import config_dict

from flowjax.config_files import sibling


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = sibling(__file__, "imagenet256_dit").get_config(arg)
    c.model = dict(
        name="blockwise",
        patch_size=2 if (arg or "latents") == "latents" else 8,
        hidden_size=1152,
        num_heads=16,
        mlp_ratio=4.0,
        feature_depth=20,
        segment_depth=5,
        frn_depth=4,
        projector_dim=2048,
        align_dim=768,
        time_scale=1.0,
        conditional=True,
        dtype="bfloat16",
        param_dtype="float32",
    )
    c.objective.name = "blockwise"
    c.objective.blockwise = dict(
        num_segments=6,
        boundaries=config_dict.placeholder(tuple),
        align_weight=0.0,
        encoder=config_dict.placeholder(str),
        encoder_cache_dir=config_dict.placeholder(str),
        frn=False,
    )
    c.optim.grad_clip = 1.0
    c.eval.samplers = ("euler:60", "heun:120")
    return c
