"""Reflow and distillation from pairs (docs/maths/reflow.md) on the Gaussian closed form, the
LPIPS-Huber loss, and pair generation from a trained teacher (exact resume)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import solvers
from flowjax.evaluation import straightness
from flowjax.evaluation.lpips import LPIPS, random_weights
from flowjax.objectives import L2, PseudoHuber, Reflow
from flowjax.time import grids, laws
from tests import gaussian_fixture as gf

KEY = jax.random.PRNGKey(0)
MU, Q = 1.5, 0.5


def _col(a):
    return a.reshape((-1,) + (1,) * 1)


def gaussian_pairs(n, dim=2, key=KEY):
    """Pairs of the 1-RF teacher of N(MU, Q^2): z1 = RK4 solve of the exact marginal field."""
    z0 = jax.random.normal(key, (n, dim))
    v = solvers.instantaneous_velocity(lambda x, t, c: gf.velocity(x, _col(t), MU, Q))
    z1 = solvers.sample(solvers.RK4(), v, z0, grids.uniform_grid(64))
    return z0, z1


def reflowed_velocity(x, t):
    """The exact 2-RF field of the fixture: v = MU + (Q - 1) z on x_t = t MU + (1 - t + t Q) z."""
    z = (x - t * MU) / (1.0 - t + t * Q)
    return MU + (Q - 1.0) * z


def test_pair_generation_is_the_gaussian_transport_map_and_keeps_the_marginal():
    z0, z1 = gaussian_pairs(20000)
    np.testing.assert_allclose(z1, MU + Q * z0, atol=1e-5)  # the 1-RF map z -> mu + q z
    assert abs(float(jnp.mean(z1)) - MU) < 0.02 and abs(float(jnp.std(z1)) - Q) < 0.01


def test_reflowed_field_is_constant_along_paths_straight_and_one_step_exact():
    z0, z1 = gaussian_pairs(512)
    reflow = Reflow(time_sampler=laws.Uniform())

    def apply_fn(params, x, t, cond, **kwargs):
        return reflowed_velocity(x, _col(t))

    loss, _ = reflow.loss_fn(None, apply_fn, {"x0": z0, "x1": z1}, KEY)
    assert float(loss) < 1e-9  # the target z1 - z0 is the field everywhere on the path
    v = solvers.instantaneous_velocity(lambda x, t, c: reflowed_velocity(x, _col(t)))
    x1, traj = solvers.sample(solvers.Euler(), v, z0, [0.0, 1.0], return_trajectory=True)
    np.testing.assert_allclose(x1, z1, atol=1e-5)
    _, traj16 = solvers.sample(
        solvers.Euler(), v, z0, grids.uniform_grid(16), return_trajectory=True
    )
    assert float(straightness(traj16, grids.uniform_grid(16))) < 1e-10
    # The 1-RF (teacher) field is not straight on the same data: the check can fail.
    v1 = solvers.instantaneous_velocity(lambda x, t, c: gf.velocity(x, _col(t), MU, Q))
    _, traj1 = solvers.sample(
        solvers.Euler(), v1, z0, grids.uniform_grid(16), return_trajectory=True
    )
    assert float(straightness(traj1, grids.uniform_grid(16))) > 1e-2


def test_distillation_loss_is_zero_for_the_exact_one_step_map():
    z0, z1 = gaussian_pairs(256)
    distill = Reflow(time_sampler=laws.Discrete(num_steps=1))
    seen = {}

    def apply_fn(params, x, t, cond, **kwargs):
        seen["t"] = np.asarray(t)
        return MU + (Q - 1.0) * x  # v(z, 0) = z1 - z0

    loss, _ = distill.loss_fn(None, apply_fn, {"x0": z0, "x1": z1}, KEY)
    assert float(loss) < 1e-10 and np.all(seen["t"] == 0.0)
    perturbed = Reflow(time_sampler=laws.Discrete(num_steps=1)).loss_fn(
        None, lambda p, x, t, c, **k: apply_fn(p, x, t, c) + 0.1, {"x0": z0, "x1": z1}, KEY
    )[0]
    np.testing.assert_allclose(perturbed, 0.01, rtol=1e-4)


def test_discrete_time_sampler():
    d = laws.Discrete(num_steps=4)
    np.testing.assert_allclose(d.support(), [0.0, 0.25, 0.5, 0.75])
    t = np.asarray(d.sample(KEY, (40000,)))
    values, counts = np.unique(t, return_counts=True)
    np.testing.assert_allclose(values, d.support(), atol=1e-7)
    assert np.all(np.abs(counts / 40000 - 0.25) < 0.01)
    assert laws.time_sampler_from_spec("discrete,num_steps=2") == laws.Discrete(2)
    with pytest.raises(ValueError, match="num_steps >= 1"):
        laws.Discrete(num_steps=0)
    with pytest.raises(NotImplementedError, match="no density|without a density"):
        d.density(0.5)


def test_lpips_huber_loss_matches_its_formula():
    lpips = LPIPS.from_weights(random_weights(0, widths=(4, 4, 8, 8, 8)), resize_to=None)
    k1, k2, k3 = jax.random.split(KEY, 3)
    z0 = jax.random.normal(k1, (4, 16, 16, 1))
    z1 = jnp.tanh(jax.random.normal(k2, (4, 16, 16, 1)))
    huber = PseudoHuber(normalize=True)
    obj = Reflow(time_sampler=laws.UShaped(a=4.0), loss=huber, lpips=lpips)
    seen = {}

    def record(x, t):
        seen.update(x=np.asarray(x), t=np.asarray(t))

    def apply_fn(params, x, t, cond, **kwargs):
        jax.debug.callback(record, x, t)
        return 0.5 * x

    loss, metrics = obj.loss_fn(None, apply_fn, {"x0": z0, "x1": z1}, k3)
    t, x_t = seen["t"], seen["x"]
    tb = t[:, None, None, None]
    v = 0.5 * x_t
    expected = t * huber(v, z1 - z0) + lpips(x_t + (1 - tb) * v, z1) / (1 - t)
    np.testing.assert_allclose(loss, np.mean(expected), rtol=1e-4)
    assert float(metrics["lpips"]) > 0
    exact = obj.loss_fn(None, lambda p, x, t, c, **k: z1 - z0, {"x0": z0, "x1": z1}, k3)[0]
    assert float(exact) < 1e-6  # v = z1 - z0 gives x1_hat = z1: both terms vanish


@pytest.mark.parametrize("config_name", ["toy2d_reflow", "digits_reflow"])
@pytest.mark.parametrize("dim", [64, 3072])
def test_shipped_rfpp_config_uses_the_2rf_pp_pseudo_huber_scale(config_name, dim):
    """The ``rfpp`` config's objective, built from the config file through the registry, is
    2-RF++'s ``(sqrt(||delta||^2 + c^2) - c) / d`` with ``c = 0.00054 d`` (not iCT's
    ``c = 0.00054 sqrt(d)`` undivided), at d = 64 (digits) and d = 3072 (CIFAR-10)."""
    from flowjax.config_files import load_config
    from flowjax.objectives import make_objective

    cfg = load_config(config_name, "rfpp")
    obj = make_objective(cfg.objective)
    assert isinstance(obj, Reflow) and obj.lpips is None
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(dim), 3)
    z0, z1 = jax.random.normal(k1, (4, dim)), jax.random.normal(k2, (4, dim))
    # Rows from the quadratic regime (||delta|| << c) to the linear one (||delta|| >> c).
    pred = (z1 - z0) + jnp.array([1e-4, 1e-2, 1.0, 10.0])[:, None] * jax.random.normal(k3, (4, dim))

    def apply_fn(params, x, t, cond, **kwargs):
        return pred  # independent of t: the loss is the batch mean of the premetric

    loss, _ = obj.loss_fn(None, apply_fn, {"x0": z0, "x1": z1}, KEY)
    c = 0.00054 * dim
    sq = np.sum(np.square(np.asarray(pred - (z1 - z0), np.float64)), axis=1)
    expected = np.mean((np.sqrt(sq + c**2) - c) / dim)
    np.testing.assert_allclose(loss, expected, rtol=1e-4)


def test_reflow_needs_pairs():
    with pytest.raises(ValueError, match="pairs_dir"):
        Reflow().loss_fn(None, None, {"x1": jnp.zeros((2, 2))}, KEY)
    with pytest.raises(ValueError, match="lpips_time_weight"):
        Reflow(lpips_time_weight="sqrt")
    assert isinstance(Reflow().loss, L2)


# -- pair generation from a trained teacher ---------------------------------------------------


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from flowjax.training import train_and_evaluate
    from tests.training.conftest import tiny_config

    workdir = str(tmp_path_factory.mktemp("teacher"))
    train_and_evaluate(tiny_config(num_steps=10), workdir)
    return workdir


def _files(path):
    return {
        name: open(os.path.join(path, name), "rb").read()
        for name in sorted(os.listdir(path))
        if name.startswith("reflow_pairs-")
    }


def test_interrupted_pair_generation_resumes_to_the_same_data_set(teacher, tmp_path, monkeypatch):
    from flowjax.data import pairs, shards
    from flowjax.workflows import reflow

    kwargs = dict(num_pairs=50, solver="heun", nfe=4, shard_size=16, chunk=8, progress=False)
    full = reflow.generate_pairs(teacher, str(tmp_path / "full"), **kwargs)
    assert full["complete"]

    real_write = shards.write_shard
    calls = []

    def flaky(path, arrays, features):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt("preempted while writing shard 2")
        return real_write(path, arrays, features)

    monkeypatch.setattr(shards, "write_shard", flaky)
    out = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        reflow.generate_pairs(teacher, out, **kwargs)
    assert not pairs.is_complete(out) and len(_files(out)) == 2
    monkeypatch.setattr(shards, "write_shard", real_write)
    resumed = reflow.generate_pairs(teacher, out, **kwargs)
    assert resumed["complete"]
    assert _files(out) == _files(full["out_dir"])  # byte for byte: nothing dropped or duplicated
    data = pairs.load_pairs(out)
    assert data["x0"].shape == (50, 2) and len(np.unique(data["x0"][:, 0])) == 50
    manifest = pairs.read_manifest(out)
    assert manifest["metadata"]["solver"] == "heun" and manifest["metadata"]["nfe"] == 4
