"""A FiTv2-style any-resolution transformer on the 8x8 digits upsampled to mixed sizes (CPU).

    flowjax train --config=configs/digits_fitv2.py --workdir=/tmp/flowjax_digits_fitv2

Data (``digits_mixed``, flowjax/data/mixed_sizes.py): the ``train`` digits upsampled
bicubically to 15 sizes from 12x16 to 32x32 px (aspect ratios 1:1, 3:4, 3:5, 2:3, 5:7 and their
transposes); with patch 2 that is 48 to 256 tokens per image, in six buckets of sizes with
similar token counts (each size padded by at most 10% in its bucket, 2.0% expected; padding
every batch to 256 tokens would waste 52%), so the train step compiles six times, once per
bucket. The run evaluates and samples at ``data.eval_size`` (16x16 by default) and reports the
digits classifier's Fréchet distance after resizing the samples to 8x8; sample other sizes
with ``flowjax sample --height=H --width=W`` and an extrapolation rule ``--rope=visionyarn``.

Model: a tiny ``fitv2`` (width 96, depth 4, 4 heads, AdaLN-LoRA rank 24 = width / 4, patch 2,
2-D RoPE in FiT's layout with ``train_grid=16`` tokens per side, at most 256 tokens).
Objective: flow matching on the linear path with FiTv2's logit-normal time (``t = sigmoid(u)``,
``u ~ N(0, 1)``; docs/maths/any_resolution.md) and 10% label dropout for classifier-free
guidance; AdamW at lr 1e-3; the training loop and evaluation of ``configs/digits_rf.py``. The
family's measured numbers (width 64 on sides 8-16 px, against a Next-DiT and a DiT of equal
parameters, every extrapolation rule at unseen sizes) are in docs/results/any_resolution.md
(experiments/any_resolution.py). ``configs/digits_nextdit.py`` is the same task with a
Next-DiT.
"""

import ml_collections

from flowjax.config_files import data_section, sibling

common = sibling(__file__, "common")
digits_rf = sibling(__file__, "digits_rf")

PATCH, MAX_TOKENS = 2, 256


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    data = data_section(
        "digits_mixed",
        "digits_mixed",
        patch_size=PATCH,
        max_tokens=MAX_TOKENS,
        eval_size=(16, 16),
        bucket_padding=0.1,
    )  # data.sizes unset: flowjax.data.mixed_sizes.DIGITS_MIXED_SIZES
    model = common.anyres_model(
        "fitv2", patch_size=PATCH, hidden_size=96, depth=4, num_heads=4, max_tokens=MAX_TOKENS
    )
    c = digits_rf.get_config()  # its training loop and evaluation, at lr 1e-3
    c.data, c.model = data, model
    c.objective.time_sampler = "logit_normal,loc=0,scale=1"
    c.optim.lr = 1e-3
    return c
