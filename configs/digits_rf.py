"""Class-conditional rectified flow on the UCI handwritten digits (8x8, bundled with scikit-learn).

    flowjax train --config=configs/digits_rf.py --workdir=/tmp/flowjax_digits

The data set is a real tfds builder (``sklearn_digits``, array_record, read with grain and no
TensorFlow); it is prepared on first use under ``data.data_dir`` (default
``~/tensorflow_datasets``) without any download. A small U-Net (0.66M parameters: 32 base
channels, two resolutions, one residual block each) trains for 4000 steps of batch 64 with
10% label dropout; evaluation samples with CFG scale 2 and reports the Fréchet distance on
features of a digits classifier (trained once and cached) at several NFE. The sample grid is
``samples.png``. XLA's convolutions are slow on CPU (about 0.15 s per step here); on an
accelerator, widen the network (``--config.model.base_channels=64``) and train longer.
See ``configs/digits_dit.py`` for the same task with a DiT.
"""

import ml_collections
from ml_collections import config_dict

from flowjax.config_files import data_section, sibling

common = sibling(__file__, "common")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    data = data_section(
        "tfds",
        "sklearn_digits",
        data_dir="~/tensorflow_datasets",
        split="train",
        eval_split="test",
        random_flip=False,
    )
    model = dict(
        name="unet",
        base_channels=32,
        channel_mults=(1, 2),
        num_res_blocks=1,
        dropout=0.0,
        time_scale=1000.0,
        end_time_scale=config_dict.placeholder(float),
        conditional=True,
    )
    c = common.base_config(data, model)
    c.objective.label_dropout = 0.1
    c.optim.lr = 5e-4
    c.optim.warmup_steps = 500
    c.train.batch_size = 64
    c.train.num_steps = 4000
    c.train.ema_decay = 0.999
    c.train.eval_every = 2000
    c.train.checkpoint_every = 1000
    c.eval.samplers = ("euler:2", "euler:4", "euler:8", "euler:32", "heun:64")
    c.eval.num_samples = 1000
    c.eval.cfg_scale = 2.0
    return c
