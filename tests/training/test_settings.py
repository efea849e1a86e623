"""The training job's declared config sections: ``train``, ``optim``, ``init``, ``mesh`` and
``sharding`` as frozen dataclasses built by :func:`flowjax.spec.from_config`.

Each section's defaults are stated once, in its dataclass: a config that leaves a key (or a
whole optional section) out gets them, and they are the behaviour the job had before the
sections were declared. An unknown key is refused at the boundary, in one line that lists the
valid keys, before any work; so is a missing key that has no default.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flowjax import parallel
from flowjax.config_files import config_names, load_config
from flowjax.training import Experiment, SetupError, train_and_evaluate
from flowjax.training.experiment import InitSettings, TrainSettings
from flowjax.training.optim import OptimSettings, make_optimizer, make_schedule
from flowjax.training.validate import validate_config
from tests.training.conftest import tiny_config

SECTIONS = {
    "train": TrainSettings,
    "optim": OptimSettings,
    "init": InitSettings,
    "mesh": parallel.MeshSettings,
    "sharding": parallel.ShardingSettings,
}


def _without(config, section, *keys):
    """``config`` with ``keys`` removed from ``section`` (all of it when no key is named)."""
    plain = config.to_dict()
    if keys:
        for key in keys:
            del plain[section][key]
    else:
        del plain[section]
    return ml_collections.ConfigDict(plain)


# -- defaults ---------------------------------------------------------------------------------
def test_optional_sections_left_out_take_their_dataclass_defaults():
    bare = tiny_config()
    for name in ("init", "mesh", "sharding"):
        bare = _without(bare, name)
    assert InitSettings.from_config(bare) == InitSettings() and InitSettings().workdir is None
    assert parallel.MeshSettings.from_config(bare).axes() == {"data": -1, "fsdp": 1, "tensor": 1}
    assert parallel.ShardingSettings.from_config(bare).rules == parallel.DEFAULT_RULES
    # The section set to None, or rules=None (the shipped placeholder), mean the same.
    assert parallel.ShardingSettings.from_config({"sharding": None}).rules == parallel.DEFAULT_RULES
    assert parallel.ShardingSettings.from_config({"sharding": {"rules": None}}).rules == (
        parallel.DEFAULT_RULES
    )
    # Rules given as lists (the command line's form) become the rule table's tuples.
    rules = parallel.ShardingSettings.from_config({"sharding": {"rules": [["batch", ["data"]]]}})
    assert rules.rules == (("batch", ("data",)),)
    # The job set up without those sections: every device on the data axis, the default rules.
    exp = Experiment(bare)
    assert dict(exp.mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
    assert exp.rules == parallel.DEFAULT_RULES and exp.init.workdir is None


def test_train_defaults_evaluate_and_checkpoint_only_at_the_end():
    required = {"batch_size": 8, "num_steps": 40, "ema_decay": 0.99, "log_every": 5}
    settings = TrainSettings.from_config({"train": required})
    assert dataclasses.asdict(settings) == dict(
        required,
        eval_every=0,
        checkpoint_every=0,
        keep_checkpoints=3,
        async_checkpoint=True,
        tensorboard=True,
        progress=True,
        grad_accum_steps=1,
        preemption_check_every=10,
        peak_flops_per_device=None,
    )
    assert settings.eval_interval == settings.checkpoint_interval == 40
    stated = TrainSettings.from_config({"train": dict(required, eval_every=10, checkpoint_every=4)})
    assert (stated.eval_interval, stated.checkpoint_interval) == (10, 4)
    # Numbers are converted by the field's type: 8.0 steps is 8 steps, a decay of 1 is 1.0.
    typed = TrainSettings.from_config({"train": dict(required, num_steps=8.0, ema_decay=0)})
    assert type(typed.num_steps) is int and type(typed.ema_decay) is float


def test_optim_defaults_are_plain_adamw_at_a_constant_rate():
    """Only ``lr`` given: the update is optax's AdamW (b1 0.9, b2 0.999, eps 1e-8, no weight
    decay, no clipping, no warm-up, constant rate), checked on three updates."""
    settings = OptimSettings.from_config({"optim": {"lr": 0.1}})
    assert settings == OptimSettings(lr=0.1)
    assert [float(make_schedule(settings, 50)(k)) for k in (0, 25, 49)] == pytest.approx([0.1] * 3)
    params = {"w": jnp.linspace(-1.0, 1.0, 6)}
    reference = optax.adamw(0.1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
    ours = make_optimizer({"lr": 0.1}, 50)  # a section is taken as well as settings
    states = [tx.init(params) for tx in (ours, reference)]
    for k in range(3):
        grads = {"w": jnp.cos(params["w"] * (k + 1.0))}
        updates = []
        for i, tx in enumerate((ours, reference)):
            update, states[i] = tx.update(grads, states[i], params)
            updates.append(update["w"])
        np.testing.assert_array_equal(updates[0], updates[1])


@pytest.mark.parametrize("name", config_names())
def test_every_shipped_config_states_only_known_keys(name):
    config = load_config(name)
    for section, cls in SECTIONS.items():
        built = cls.from_config(config)
        if section in config and config[section] is not None:
            for key in config[section]:  # what the file states is what the job reads
                if key != "rules":
                    assert getattr(built, key) == config[section][key], (name, section, key)


# -- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "section, key",
    [
        ("train", "chekpoint_every"),
        ("optim", "warmup"),
        ("init", "work_dir"),
        ("mesh", "tensr"),
        ("sharding", "rule"),
    ],
)
def test_an_unknown_key_is_refused_before_any_work_naming_the_valid_ones(tmp_path, section, key):
    config = tiny_config()
    config[section][key] = 2
    valid = sorted(f.name for f in dataclasses.fields(SECTIONS[section]))
    expected = f"unknown key(s) ['{key}'] in {section}; valid keys: {valid}"
    with pytest.raises(SetupError) as err:
        validate_config(config)
    assert str(err.value) == expected
    with pytest.raises(SetupError) as err:
        train_and_evaluate(config, str(tmp_path / "w"))
    assert str(err.value) == expected and not (tmp_path / "w").exists()
    with pytest.raises(ValueError, match="unknown key"):  # the Python API, not validated
        Experiment(config)


@pytest.mark.parametrize("section, key", [("train", "log_every"), ("optim", "lr")])
def test_a_missing_key_without_default_is_named(section, key):
    config = _without(tiny_config(), section, key)
    with pytest.raises(SetupError) as err:
        validate_config(config)
    assert str(err.value) == f"missing key(s) ['{key}'] in {section}; set them in the config"
    assert "\n" not in str(err.value)


def test_an_unknown_eval_key_is_refused_before_any_work(tmp_path):
    # The eval section is declared by the evaluator (flowjax.evaluation.settings); the
    # training job builds it at validation, before the workdir exists.
    config = tiny_config()
    config.eval["samplrs"] = ("euler:2",)
    with pytest.raises(SetupError, match=r"unknown key\(s\) \['samplrs'\] in config.eval"):
        validate_config(config)
    with pytest.raises(SetupError, match="samplrs"):
        train_and_evaluate(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
