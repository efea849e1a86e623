"""FiTv2-XL/2 on ImageNet 256x256 SD-VAE latents, sharded over a TPU pod slice or GPU hosts.

    flowjax train --config=configs/imagenet256_fitv2.py --workdir=gs://BUCKET/fitv2_xl2 \
        --distributed --config.data.path=gs://BUCKET/imagenet256_sdvae_latents \
        --config.eval.vae_weights=sd_vae_ft_ema.npz \
        --config.eval.inception_weights=inception_fid.npz \
        --config.eval.fid_stats=VIRTUAL_imagenet256_stats.npz

Data: a latent set of 32x32x4 posteriors (made once with ``flowjax latents``, as for
``configs/imagenet256_dit.py``, whose docstring has the command): fixed-size latents, which
the network takes as image batches (16x16 = 256 tokens each, FiTv2's ``L_max``); FiTv2's own
pre-training data are latents of mixed sizes up to 256 tokens.

Model (docs/maths/any_resolution.md, ALGORITHMS §13): ``fitv2`` at FiTv2-XL/2's size, width
1152, depth 36, 16 heads, patch 2 (671M parameters published), 2-D RoPE in FiT's layout
trained at 16 tokens per side; sample larger or non-square latents with ``flowjax sample
--height=H --width=W --rope=visionntk`` (or ``visionyarn``). The recipe as released:
logit-normal t (``t = sigmoid(u)``, ``u ~ N(0, 1)``), class dropout 0.1; AdamW lr 1e-4, betas
0.9 / 0.999, eps 1e-8, no weight decay, gradient clipping at 1.0, a 50K-step linear warm-up
then constant, global batch 256, EMA 0.9999, bf16 activations with float32 weights, 2M steps.
Evaluation as the DiT's (Euler 50, Heun 100, CFG 1.5 on all four latent channels: FiTv2
guides only the first three).

Sharding: batch over ``data x fsdp``, weights FSDP over ``fsdp``, heads / MLP over ``tensor``
(the rule table is ``dit_rules()`` in configs/common.py).
"""

import ml_collections

from flowjax.config_files import data_section, sibling

common = sibling(__file__, "common")

MAX_TOKENS = 256  # FiTv2's L_max at 256x256 (16x16 tokens of patch 2 on a 32x32 latent)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = common.base_config(data_section("latents", "imagenet256_sdvae_latents"))
    common.dit_recipe(
        c,
        variant="XL/2",
        dtype="bfloat16",
        batch_size=256,
        eval_every=50_000,
        num_eval_samples=1024,
    )
    c.model = common.anyres_model(
        "fitv2",
        patch_size=2,
        hidden_size=1152,
        depth=36,
        num_heads=16,
        max_tokens=MAX_TOKENS,
        dtype="bfloat16",
    )
    c.objective.time_sampler = "logit_normal,loc=0,scale=1"
    c.optim.update(dict(lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0))
    c.optim.update(dict(warmup_steps=50_000, schedule="constant"))
    c.train.num_steps = 2_000_000
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    c.sharding.rules = common.dit_rules()
    return c
