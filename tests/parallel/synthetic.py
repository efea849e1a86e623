"""A tiny DiT job on synthetic labelled images, shared by the sharded and multi-process tests.

Run as a subprocess worker (so that the device count can be set before JAX starts); see
``sharded_worker.py`` and ``multiprocess_worker.py``.
"""

from __future__ import annotations

import os

import numpy as np

from flowjax.config_files import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SyntheticImages:
    """Global batch ``k``: ``B`` images ``8x8x1`` and labels from ``RandomState(seed + k)``;
    process ``i`` of ``P`` yields rows ``[i B/P, (i+1) B/P)`` (the tfds pipeline's contract)."""

    kind = "images"
    name = "synthetic"
    element_shape = (8, 8, 1)
    num_classes = 10

    def __init__(self, batch_size, seed=0, shard_index=0, shard_count=1):
        self.batch_size, self.seed = batch_size, seed
        self.local = batch_size // shard_count
        self.lo = shard_index * self.local

    def global_batch(self, step):
        rng = np.random.RandomState(self.seed + step)
        x = np.tanh(rng.normal(size=(self.batch_size, *self.element_shape))).astype(np.float32)
        y = rng.randint(0, self.num_classes, size=(self.batch_size,)).astype(np.int32)
        return {"x1": x, "label": y}

    def iterator(self, start_step=0):
        step = start_step
        while True:
            batch = self.global_batch(step)
            yield {k: v[self.lo : self.lo + self.local] for k, v in batch.items()}
            step += 1

    def eval_array(self, n):
        batch = SyntheticImages(n, seed=self.seed + 10**6).global_batch(0)
        return batch["x1"], batch["label"]


def tiny_dit_config(**train):
    """``configs/digits_dit.py`` shrunk: width 32, depth 1, 2 heads, constant learning rate."""
    c = load_config("digits_dit")
    c.model.hidden_size = 32
    c.model.depth = 1
    c.model.num_heads = 2
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.lr = 1e-3
    c.train.batch_size = 16
    c.train.num_steps = 8
    c.train.log_every = 2
    c.train.eval_every = 0
    c.train.checkpoint_every = 4
    c.train.progress = False
    c.train.tensorboard = False
    c.train.async_checkpoint = False
    c.eval.samplers = ("euler:2",)
    c.eval.num_samples = 32
    c.eval.cfg_scale = 1.0
    c.train.update(train)
    return c
