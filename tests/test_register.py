"""Every name-to-object table has a public ``register_*`` function, and a registered network is
read only through the :class:`flowjax.types.Model` contract (throughput accounting included).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import numpy as np
import pytest

import flowjax.data
import flowjax.models
import flowjax.objectives
import flowjax.search
from flowjax import paths
from flowjax.data.sources import SOURCES
from flowjax.models import DiT, dit_forward_flops
from flowjax.models.registry import _MODELS
from flowjax.objectives.losses import LOSSES
from flowjax.solvers import sde
from flowjax.time import grids, laws
from flowjax.training import accounting
from flowjax.types import Model
from tests.training.conftest import tiny_config

#: (public register function, its table); the function is reached by its public path.
TABLES = [
    (flowjax.models.register_model, _MODELS),
    (flowjax.models.register_position, flowjax.models.POSITIONS),
    (flowjax.data.register_source, SOURCES),
    (flowjax.objectives.register_loss, LOSSES),
    (flowjax.search.register_search_method, flowjax.search.METHODS),
    (paths.register_path, paths.PATHS),
    (laws.register_time_law, laws.LAWS),
    (grids.register_grid, grids.GRIDS),
    (sde.register_diffusion, sde.DIFFUSIONS),
]


class ToyNet(nn.Module, Model):
    """A registered toy network that declares its own cost: 10 FLOPs per feature per call of
    the full network, 3 per feature for its ``"probe"`` part, and 2 tokens per example."""

    num_classes: int | None = None
    use_end_time: bool = False
    width: int = 4

    @nn.compact
    def __call__(self, x, t, cond=None, *, train: bool = False):
        del t, cond, train
        return nn.Dense(x.shape[-1])(x)

    def forward_flops(self, element_shape, part="full"):
        return {"full": 10.0, "probe": 3.0}[part] * float(np.prod(element_shape))

    def num_tokens(self, element_shape):
        return 2


@pytest.fixture
def toy_net():
    flowjax.models.register_model("toy_net", ToyNet)
    yield ToyNet
    del _MODELS["toy_net"]


@pytest.mark.parametrize("register, table", TABLES, ids=lambda x: getattr(x, "__name__", "t"))
def test_each_table_has_a_public_register_function(register, table):
    entry = ToyNet if table is _MODELS else object()
    assert register.__name__.startswith("register_") and register.__doc__
    try:
        assert register("extension_entry", entry) is entry
        assert table["extension_entry"] is entry
        assert register("extension_entry", entry) is entry  # the same object again: a no-op
        other = type("Other", (ToyNet,), {}) if table is _MODELS else object()
        with pytest.raises(ValueError, match="'extension_entry' is already registered"):
            register("extension_entry", other)
    finally:
        del table["extension_entry"]


def test_the_registered_entries_are_what_make_builds():
    # Through the public builders, not the tables: a path, a time law, a grid, a loss.
    @dataclasses.dataclass(frozen=True)
    class Halfway(laws.Uniform):
        pass

    class Half(paths.LinearPath):
        pass

    entries = [
        (paths.register_path, "half_path", Half),
        (laws.register_time_law, "halfway", Halfway),
        (grids.register_grid, "two_point", lambda n: np.linspace(0.0, 1.0, n + 1) ** 2),
    ]
    try:
        for register, name, obj in entries:
            register(name, obj)
        assert isinstance(paths.make_path("half_path"), Half)
        assert isinstance(laws.time_sampler_from_spec("halfway"), Halfway)
        np.testing.assert_allclose(grids.grid_from_spec("two_point", 4), np.linspace(0, 1, 5) ** 2)
    finally:
        del paths.PATHS["half_path"], laws.LAWS["halfway"], grids.GRIDS["two_point"]


def test_register_model_refuses_a_network_without_the_contract():
    class Bare(nn.Module):
        @nn.compact
        def __call__(self, x, t, cond=None, *, train=False):
            return x

    with pytest.raises(TypeError, match="subclasses flowjax.types.Model"):
        flowjax.models.register_model("bare", Bare)
    assert "bare" not in _MODELS


def test_accounting_charges_a_registered_model_through_its_contract(toy_net):
    model = flowjax.models.make_model({"name": "toy_net", "width": 8})
    assert isinstance(model, ToyNet)
    shape = (3, 5)  # 15 features: 150 FLOPs per full call, 45 per probe, 2 tokens per example
    cost = accounting.step_cost(model, shape, global_batch=4)
    assert cost.model_flops == 3 * 150.0 * 4
    assert cost.tokens == 2 * 4 and cost.examples == 4
    calls = {"full": 5, "probe": 2}
    assert accounting.inference_flops(model, shape, calls) == 5 * 150.0 + 2 * 45.0
    assert accounting.inference_flops(model, shape, calls, guided=True) == 2 * (750.0 + 90.0)


def test_a_model_without_a_count_reports_none_and_one_token_per_example():
    model = flowjax.models.make_model({"name": "mlp", "hidden": 8, "depth": 1})
    cost = accounting.step_cost(model, (2,), global_batch=16)
    assert cost.model_flops is None and cost.tokens == 16
    assert accounting.inference_flops(model, (2,), {"full": 4}) is None


@pytest.mark.parametrize("use_end_time, learn_sigma", [(False, False), (True, True)])
def test_dit_counts_are_the_analytic_formula(use_end_time, learn_sigma):
    # The DiT numbers are unchanged by the contract: the module's count is dit_forward_flops
    # of its own fields, its tokens the (H / p) (W / p) patches.
    fields = dict(patch_size=2, hidden_size=64, depth=3, mlp_ratio=2.0)
    model = DiT(num_heads=4, use_end_time=use_end_time, learn_sigma=learn_sigma, **fields)
    expected = dit_forward_flops(
        image_shape=(8, 12, 3), use_end_time=use_end_time, learn_sigma=learn_sigma, **fields
    )
    assert accounting.forward_flops_per_example(model, (8, 12, 3)) == expected
    cost = accounting.step_cost(model, (8, 12, 3), global_batch=2)
    assert cost.tokens == (8 // 2) * (12 // 2) * 2 and cost.model_flops == 3 * expected * 2
    with pytest.raises(ValueError, match="unknown FLOPs part 'probe'"):
        model.forward_flops((8, 12, 3), part="probe")


def test_experiment_refuses_an_objective_model_without_the_contract():
    from flowjax.training import Experiment
    from flowjax.types import Objective

    class Wrapper(nn.Module):
        inner: nn.Module

        def __call__(self, x, t, cond=None, **kw):
            return self.inner(x, t, cond, **kw)

    @dataclasses.dataclass(frozen=True)
    class Wrapping(Objective):
        def build_model(self, make):
            return Wrapper(make(False))

    with pytest.raises(TypeError, match="does not subclass flowjax.types.Model"):
        Experiment(tiny_config(), objective=Wrapping())
