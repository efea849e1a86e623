"""A Next-DiT (Lumina-Next) on ImageNet 256x256 SD-VAE latents, sharded like the DiT.

    flowjax train --config=configs/imagenet256_nextdit.py --workdir=gs://BUCKET/nextdit \
        --distributed --config.data.path=gs://BUCKET/imagenet256_sdvae_latents \
        --config.eval.vae_weights=sd_vae_ft_ema.npz \
        --config.eval.inception_weights=inception_fid.npz \
        --config.eval.fid_stats=VIRTUAL_imagenet256_stats.npz

Data, evaluation and sharding as ``configs/imagenet256_fitv2.py``. Model (ALGORITHMS §14):
``nextdit`` at Lumina-Next-2B's width and depth (2304, 24 layers, 32 heads; the released model
also has 8 key/value heads), patch 2, interleaved 2-D RoPE trained at 16 tokens per side, the
class label as a length-1 condition sequence; sample other sizes with ``flowjax sample
--height=H --width=W --rope=time_aware`` (Next-DiT's rules). Recipe as Lumina-Next's training
script: uniform t, class dropout 0.1, AdamW lr 1e-4 with no weight decay, gradient clipping at
2.0, bf16 activations with float32 weights, EMA 0.9999, global batch 256 (the warm-up and the
step count are FiTv2's, not published for this model on ImageNet: inferred).
"""

import ml_collections

from flowjax.config_files import sibling

imagenet256_fitv2 = sibling(__file__, "imagenet256_fitv2")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = imagenet256_fitv2.get_config(arg)
    c.model.update(dict(name="nextdit", hidden_size=2304, depth=24, num_heads=32))
    c.objective.time_sampler = "uniform"
    c.optim.grad_clip = 2.0
    return c
