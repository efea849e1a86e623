"""A tiny version of the main job's config, shared by the training tests."""

import os

import pytest

from flowjax.config_files import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(**train):
    """The real toy config, shrunk: a 16-wide MLP, small batches, one cheap eval sampler."""
    c = load_config("toy2d_rf")
    c.model.hidden = 16
    c.model.depth = 1
    c.train.batch_size = 32
    c.train.num_steps = 20
    c.train.log_every = 5
    c.train.eval_every = 0
    c.train.checkpoint_every = 10
    c.train.progress = False
    c.train.tensorboard = False
    c.train.async_checkpoint = False
    c.optim.warmup_steps = 3
    c.eval.samplers = ("euler:2",)
    c.eval.num_samples = 128
    c.eval.num_kernel_samples = 128
    c.train.update(train)
    return c


@pytest.fixture
def make_config():
    return tiny_config
