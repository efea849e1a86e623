"""Rectified flow on your own folder of PNG / JPEG images (any sizes), read with Pillow.

    flowjax train --config=configs/image_folder_rf.py --workdir=/tmp/my_images \
        --config.data.path=~/my_images --config.data.resolution=32

Every image under ``data.path`` (at any depth) is center-cropped to ``resolution x resolution``
as ADM does (box halvings, bicubic resize of the short side, central crop) and flipped
left-right at random; 10% of the files (a fixed choice) are held out for the evaluation
metrics, or all of ``data.eval_path`` if given. One subfolder per class labels the images
(``--config.model.conditional=True`` then trains a class-conditional model with 10% label
dropout; sample with ``eval.cfg_scale``); ``data.channels=1`` reads them grey. The model is
``configs/digits_rf.py``'s small U-Net: widen it and train longer on an accelerator. Add
``--config.eval.inception_weights=inception_fid.npz`` for Inception FID against the held-out
images. Batch ``k`` is a pure function of the seed and ``k``: a stopped run resumes exactly.
"""

import ml_collections

from flowjax.config_files import data_section, sibling


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = sibling(__file__, "digits_rf").get_config()
    c.data = data_section(
        "image_folder",
        "image_folder",  # replaced by the folder's name when the run starts
        eval_fraction=0.1,
        resolution=32,
        channels=3,
        class_subfolders=True,
        random_flip=True,
    )
    c.model.conditional = False
    c.model.channel_mults = (1, 2, 2)
    c.eval.cfg_scale = 1.0
    return c
