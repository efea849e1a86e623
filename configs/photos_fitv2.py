"""A FiTv2-style transformer on crops of the photographs scikit-learn ships, at mixed sizes.

    flowjax train --config=configs/photos_fitv2.py --workdir=/tmp/flowjax_photos_fitv2

Data (``photos_mixed``, flowjax/data/mixed_sizes.py): crops of ``china.jpg`` and
``flower.jpg`` (the photographs scikit-learn ships) of eight
sizes from 16x32 to 320x160 px, at random places in the left three quarters of each
photograph, flipped half of the time, brought to multiples of the patch by FiTv2's area rule
with side 32 (at most 256 tokens: 32x32, 26x36, 22x44 and transposes, 24x24, 16x32, 32x16;
three buckets). Unlabelled; evaluated and sampled at 32x32 against held-out crops of the right
quarter of each photograph (pixel metrics only: no feature network suits these images).

Model and objective as ``configs/digits_fitv2.py`` (tiny ``fitv2``, patch 2, logit-normal
time), unconditional. Not measured yet.
"""

import ml_collections

from flowjax.config_files import data_section, sibling

digits_fitv2 = sibling(__file__, "digits_fitv2")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = digits_fitv2.get_config(arg)
    c.data = data_section(
        "photos_mixed",
        "photos_mixed",
        side=32,
        patch_size=digits_fitv2.PATCH,
        max_tokens=digits_fitv2.MAX_TOKENS,
        eval_size=(32, 32),
        bucket_padding=0.1,
    )  # data.crop_sizes unset: flowjax.data.mixed_sizes.PHOTO_CROP_SIZES
    c.model.conditional = False
    c.objective.label_dropout = 0.0
    c.eval.cfg_scale = 1.0
    return c
