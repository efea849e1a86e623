"""Blockwise Flow Matching on the 8x8 UCI digits (class-conditional; runs on a CPU).

    flowjax train --config=configs/digits_bfm.py --workdir=/tmp/flowjax_digits_bfm
    flowjax sample --workdir=/tmp/flowjax_digits_bfm --solver=euler --nfe=8
    flowjax sample --workdir=/tmp/flowjax_digits_bfm --sampler='euler:2|heun:8'

K = 2 equal segments by default; ``--config.objective.blockwise.num_segments=4`` for K = 4, or
``--config.objective.blockwise.boundaries='(0.0, 0.6, 1.0)'`` for given ones. The network
(``model.name='blockwise'``, docs/maths/blockwise.md): patch 2 (16 tokens), width 64, 4 heads, a
feature network of ``feature_depth=2`` DiT blocks, ``segment_depth=1`` block per segment,
``frn_depth=1``; one network evaluation costs the feature net + ONE segment block. The features
are aligned (weight 0.05, the official setting) to the spatial features (4x4 tokens x 32
channels, one per 2x2 patch) of the digits classifier trained here and cached
(``flowjax.evaluation.DigitsFeatureExtractor``). Evaluation: digits Fréchet distance at total
NFE 4 .. 64 (split evenly over the segments; multiples of K = 2 and 4).

Stage 2, the Feature Residual Approximation (everything but G_psi frozen)::

    flowjax train --config=configs/digits_bfm.py --workdir=/tmp/digits_bfm_frn \
        --config.objective.blockwise.frn=True --config.init.workdir=/tmp/flowjax_digits_bfm \
        --config.train.num_steps=1000 --config.eval.samplers='("euler:8@frn", "euler:8@full")'
"""

import ml_collections
from ml_collections import config_dict

from flowjax.config_files import sibling

digits_dit = sibling(__file__, "digits_dit")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = digits_dit.get_config()
    c.model = dict(
        name="blockwise",
        patch_size=2,
        hidden_size=64,
        num_heads=4,
        mlp_ratio=4.0,
        feature_depth=2,
        segment_depth=1,
        frn_depth=1,
        projector_dim=128,
        align_dim=32,
        time_scale=1000.0,
        conditional=True,
        dtype="float32",
        param_dtype="float32",
    )
    c.objective.name = "blockwise"
    c.objective.blockwise = dict(
        num_segments=2,
        boundaries=config_dict.placeholder(tuple),
        align_weight=0.05,
        encoder="digits",
        encoder_cache_dir=config_dict.placeholder(str),
        frn=False,
    )
    c.train.num_steps = 2000
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    c.eval.samplers = ("euler:4", "euler:8", "euler:16", "heun:64")
    return c
