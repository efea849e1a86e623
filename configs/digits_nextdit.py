"""A Next-DiT (Lumina-Next) on the 8x8 digits upsampled to mixed sizes (CPU).

    flowjax train --config=configs/digits_nextdit.py --workdir=/tmp/flowjax_digits_nextdit

Everything as ``configs/digits_fitv2.py`` (data, sizes, buckets, evaluation at 16x16 with the
digits Fréchet distance after resizing to 8x8, optimiser, steps) except the network, a tiny
``nextdit`` (width 96, depth 4, 4 heads, patch 2, interleaved 2-D RoPE, at most 256 tokens;
the class label is its length-1 condition sequence; SwiGLU width 256, rounded to 16), and the
time law: uniform t, Lumina's default. Measured at width 64 on sides 8-16 px against FiTv2 and
a DiT of equal parameters: docs/results/any_resolution.md (experiments/any_resolution.py).
"""

import ml_collections

from flowjax.config_files import sibling

digits_fitv2 = sibling(__file__, "digits_fitv2")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = digits_fitv2.get_config(arg)
    c.model.name = "nextdit"
    # SwiGLU width int(8 D / 3) rounded up to 16 (Lumina's 256 would double it at width 96)
    c.model.multiple_of = 16
    c.objective.time_sampler = "uniform"
    return c
