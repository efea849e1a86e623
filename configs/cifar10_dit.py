"""DiT-S/2 on CIFAR-10 pixels (32x32x3, 256 tokens), any prepared tfds ``cifar10``.

    python -m flowjax.main --config=configs/cifar10_dit.py --workdir=/tmp/cifar10_dit \
        --config.data.data_dir=~/tensorflow_datasets \
        --config.eval.inception_weights=inception_fid.npz \
        [--config.eval.fid_stats=cifar10_train_stats.npz]

Prepare the data set once (on a machine with internet access) with ``tfds build cifar10
--file_format=array_record``. Recipe as SiT/DiT (linear path, velocity prediction, uniform t,
AdamW 1e-4 constant, EMA 0.9999, class dropout 0.1, horizontal flips); DiT-S/2 (33M parameters),
global batch 128. With ``eval.inception_weights`` set, evaluation reports Inception FID
(``fid_<sampler>``, :mod:`flowjax.evaluation.fid`) against ``eval.fid_stats`` (make it with
``python -m flowjax.evaluation.fid --inception=inception_fid.npz --tfds=cifar10 --split=train
--out=cifar10_train_stats.npz``) or, without it, the held-out test images' statistics.
"""

import ml_collections
from ml_collections import config_dict

from flowjax.config_files import sibling


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = sibling(__file__, "toy2d_rf").get_config()
    c.data = dict(
        kind="tfds",
        name="cifar10",
        data_dir=config_dict.placeholder(str),
        split="train",
        eval_split="test",
        random_flip=True,
        pairs_dir=config_dict.placeholder(str),
    )
    c.model = dict(
        name="dit",
        variant="S/2",
        mlp_ratio=4.0,
        learn_sigma=False,
        time_scale=1.0,
        conditional=True,
        dtype="float32",
        param_dtype="float32",
        remat=False,
    )
    c.objective.label_dropout = 0.1
    c.optim.update(
        dict(lr=1e-4, weight_decay=0.0, warmup_steps=0, schedule="constant", grad_clip=0.0)
    )
    c.train.update(
        dict(
            batch_size=128,
            num_steps=400_000,
            ema_decay=0.9999,
            log_every=100,
            eval_every=20_000,
            checkpoint_every=10_000,
        )
    )
    c.eval.update(dict(samplers=("euler:50", "heun:100"), num_samples=1000, cfg_scale=1.5))
    c.eval.num_kernel_samples = 1000
    c.eval.vae_weights = config_dict.placeholder(str)  # pixels: no VAE
    c.eval.inception_weights = config_dict.placeholder(str)
    c.eval.fid_stats = config_dict.placeholder(str)
    return c
