"""DiT-S/2 on CIFAR-10 pixels (32x32x3, 256 tokens), any prepared tfds ``cifar10``.

    flowjax train --config=configs/cifar10_dit.py --workdir=/tmp/cifar10_dit \
        --config.data.data_dir=~/tensorflow_datasets \
        --config.eval.inception_weights=inception_fid.npz \
        [--config.eval.fid_stats=cifar10_train_stats.npz]

Prepare the data set once (on a machine with internet access) with ``tfds build cifar10
--file_format=array_record``. Recipe as SiT/DiT (linear path, velocity prediction, uniform t,
AdamW 1e-4 constant, EMA 0.9999, class dropout 0.1, horizontal flips); DiT-S/2 (33M parameters),
global batch 128. With ``eval.inception_weights`` set, evaluation reports Inception FID
(``fid_<sampler>``, :mod:`flowjax.evaluation.fid`) against ``eval.fid_stats`` (make it with
``flowjax fid-stats --inception=inception_fid.npz --tfds=cifar10 --split=train
--out=cifar10_train_stats.npz``) or, without it, the held-out test images' statistics.
"""

import ml_collections

from flowjax.config_files import data_section, sibling

common = sibling(__file__, "common")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = common.base_config(
        data_section("tfds", "cifar10", split="train", eval_split="test", random_flip=True)
    )
    # DiT-S/2, pixels (no VAE): the ImageNet recipe at batch 128
    common.dit_recipe(
        c,
        variant="S/2",
        dtype="float32",
        batch_size=128,
        eval_every=20_000,
        num_eval_samples=1000,
    )
    return c
