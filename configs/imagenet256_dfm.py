"""Decomposable Flow Matching on ImageNet 256 SD-VAE latents (32x32x4), sharded like DiT.

    flowjax train --config=configs/imagenet256_dfm.py --workdir=gs://BUCKET/dfm_xl \
        --distributed --config.data.path=gs://BUCKET/imagenet256_sdvae_latents

The data, evaluation (VAE decoding, Inception FID), mesh and logical-axis rules are those of
``configs/imagenet256_dit.py`` (read its docstring for the one-off latent encoding). The network
is a ``decomposable_dit`` with the XL trunk (depth 28, width 1152, 16 heads) over two pyramid
stages: the 16x16x4 coarse latent with patch 1 and the 32x32x4 detail with patch 2, both 256
tokens (the token count of DiT-XL/2 on these latents). The paper's recipe (Sec. 4): Adam
(0.9, 0.99), lr 1e-4 after 10k warm-up steps, weight decay 0.01, gradient clipping at 1,
batch 256, EMA 0.9999, class dropout 0.1; stage probabilities (0.9, 0.1); sampling with
tau = 0.9 and 40 Euler steps split 30 + 10.
"""

import ml_collections

from flowjax.config_files import sibling


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = sibling(__file__, "imagenet256_dit").get_config(arg or "latents")
    if c.data.kind != "latents":
        raise ValueError("imagenet256_dfm trains on latents only; use the 'latents' variant")
    c.model = dict(
        name="decomposable_dit",
        num_stages=2,
        patch_size=1,
        depth=28,
        hidden_size=1152,
        num_heads=16,
        mlp_ratio=4.0,
        time_scale=1.0,
        conditional=True,
        dtype="bfloat16",
        param_dtype="float32",
        remat=False,
    )
    c.objective.name = "decomposable"
    c.objective.decomposable = dict(
        num_stages=2,
        stage_probs=(0.9, 0.1),
        current_sampler="logit_normal,loc=0,scale=1",
        earlier_loc=1.5,
        earlier_scale=1.0,
        thresholds=(0.9,),
        phase_weights=(3.0, 1.0),
    )
    c.optim.update(dict(lr=1e-4, b2=0.99, weight_decay=0.01, warmup_steps=10_000, grad_clip=1.0))
    c.eval.samplers = ("euler:40", "heun:80")
    return c
