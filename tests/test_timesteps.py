"""Properties of the training-time samplers, the resolution shift and the inference grids.

Distributional claims are checked with Kolmogorov-Smirnov tests (fixed seeds, n = 20000)
against the CDF obtained by integrating each sampler's own ``density``, so a wrong sampler or a
wrong density fails. Negative controls check that the tests have power. Time convention: noise
at t=0, data at t=1.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from flowjax.time import grids, laws, shifts

N = 20_000
P_ACCEPT = 1e-3  # a correct sampler must not be rejected at this level
P_REJECT = 1e-6  # a wrong law must be rejected at this level


@pytest.fixture(autouse=True)
def _x64():
    # Scoped to each test, so float64 cannot leak into other test modules.
    with jax.enable_x64(True):
        yield


def _logit(t):
    return np.log(t) - np.log1p(-t)


def numerical_cdf(density, num_points: int = 200_001):
    """CDF of ``density`` on [0, 1] by cumulative trapezoid on a fine grid (not normalised)."""
    grid = np.linspace(0.0, 1.0, num_points)
    pdf = np.asarray(jax.jit(density)(jnp.asarray(grid)), dtype=np.float64)
    cdf = integrate.cumulative_trapezoid(pdf, grid, initial=0.0)
    return lambda t: np.interp(t, grid, cdf)


def _draw(sampler, seed: int = 0, n: int = N, dtype=jnp.float32) -> np.ndarray:
    x = sampler.sample(jax.random.key(seed), (n,), dtype)
    return np.asarray(x, dtype=np.float64)


def _support_breaks(sampler) -> list[float]:
    if isinstance(sampler, laws.Uniform):
        return [sampler.t_min, sampler.t_max]
    if isinstance(sampler, laws.UShaped):
        return [sampler.eps, 1.0 - sampler.eps]
    if isinstance(sampler, laws.Shifted):
        return [shifts.shift_time(b, sampler.alpha) for b in _support_breaks(sampler.base)]
    return []


SAMPLERS = [
    laws.Uniform(),
    laws.Uniform(1e-3, 1.0),
    laws.Uniform(0.2, 0.7),
    laws.LogitNormal(0.4, 1.0),
    laws.LogitNormal(-1.0, 0.5),
    laws.LogitNormal(2.0, 2.0),
    laws.ModeSampler(),
    laws.ModeSampler(-0.5),
    laws.ModeSampler(1.7),
    laws.CosMap(),
    laws.UShaped(),
    laws.UShaped(a=1.0, eps=0.01),
    laws.Shifted(laws.LogitNormal(), 3.0),
    laws.Shifted(laws.CosMap(), 2.0),
    laws.Shifted(laws.Uniform(0.2, 0.7), 4.0),
    laws.Shifted(laws.ModeSampler(), 1.0 / 3.0),
]
IDS = [repr(s) for s in SAMPLERS]


# --------------------------------------------------------------------------------------------
# Samplers: contract, densities, laws
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_density_integrates_to_one(sampler):
    f = jax.jit(sampler.density)
    total, err = integrate.quad(
        lambda t: float(f(t)), 0.0, 1.0, points=_support_breaks(sampler) or None, limit=400
    )
    assert abs(total - 1.0) < 1e-6, (total, err)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_samples_match_density_ks(sampler):
    x = _draw(sampler, seed=1)
    assert x.min() >= 0.0 and x.max() <= 1.0
    result = stats.kstest(x, numerical_cdf(sampler.density))
    assert result.pvalue > P_ACCEPT, result


@pytest.mark.parametrize(
    "samples_of, density_of",
    [
        (laws.Shifted(laws.LogitNormal(), 3.0), laws.LogitNormal()),  # shift ignored
        (laws.UShaped(), laws.Uniform()),
        (laws.ModeSampler(1.29), laws.Uniform()),
        (laws.LogitNormal(0.1, 1.0), laws.LogitNormal(0.0, 1.0)),
    ],
)
def test_ks_has_power(samples_of, density_of):
    x = _draw(samples_of, seed=2)
    assert stats.kstest(x, numerical_cdf(density_of.density)).pvalue < P_REJECT


@pytest.mark.parametrize(
    "sampler",
    [
        laws.Uniform(0.2, 0.7),
        laws.LogitNormal(0.4, 1.0),
        laws.ModeSampler(),
        laws.CosMap(),
        laws.UShaped(),
        laws.Shifted(laws.LogitNormal(), 3.0),
        # Extreme parameters: float32 rounding must not leave [0, 1].
        laws.LogitNormal(0.0, 30.0),
        laws.ModeSampler(laws.MODE_A_MAX),
        laws.ModeSampler(-1.0),
        laws.Shifted(laws.LogitNormal(0.0, 30.0), 100.0),
    ],
    ids=repr,
)
def test_sampler_contract(sampler):
    key = jax.random.key(3)
    x32 = sampler.sample(key, (N,))
    assert x32.shape == (N,) and x32.dtype == jnp.float32
    assert bool(jnp.all((x32 >= 0.0) & (x32 <= 1.0)))
    x64 = sampler.sample(key, (2, 3), jnp.float64)
    assert x64.shape == (2, 3) and x64.dtype == jnp.float64
    jitted = jax.jit(lambda k: sampler.sample(k, (N,)))
    # Same draws under jit (up to float32 rounding of fused ops, amplified by steep maps).
    np.testing.assert_allclose(np.asarray(jitted(key)), np.asarray(x32), rtol=1e-4, atol=1e-6)
    assert isinstance(sampler.name, str) and hash(sampler) == hash(sampler)


@pytest.mark.parametrize("loc, scale", [(0.0, 1.0), (0.4, 1.0), (-1.0, 0.5), (2.0, 2.0)])
def test_logit_normal_moments_of_logit(loc, scale):
    z = _logit(_draw(laws.LogitNormal(loc, scale), seed=4, dtype=jnp.float64))
    assert abs(z.mean() - loc) < 5 * scale / math.sqrt(N)
    assert abs(z.std() - scale) < 5 * scale / math.sqrt(2 * N)


def test_mode_sampler_with_a_zero_is_uniform():
    x = _draw(laws.ModeSampler(0.0), seed=5)
    assert stats.kstest(x, "uniform").pvalue > P_ACCEPT
    np.testing.assert_allclose(laws.ModeSampler(0.0).density(jnp.linspace(0, 1, 11)), 1.0)


def test_mode_sampler_is_symmetric_about_half():
    t = jnp.linspace(0.01, 0.99, 99)
    d = laws.ModeSampler(1.29).density
    np.testing.assert_allclose(d(t), d(1.0 - t), rtol=1e-9)


def test_cosmap_density_closed_form_cdf():
    # u = (2/pi) arctan(1/t - 1) is decreasing in t, so F(t) = 1 - u(t).
    x = _draw(laws.CosMap(), seed=6)

    def cdf(t):
        return 1.0 - (2.0 / math.pi) * np.arctan(1.0 / np.maximum(t, 1e-300) - 1.0)

    assert stats.kstest(x, cdf).pvalue > P_ACCEPT


def test_u_shaped_mean_and_cosh_density():
    sampler = laws.UShaped(a=4.0, eps=1e-5)
    x = _draw(sampler, seed=7)
    assert abs(x.mean() - 0.5) < 5 * x.std() / math.sqrt(N)
    # KS against the cosh density written independently of the implementation.
    a, eps = 4.0, 1e-5

    def cdf(t):
        y = np.clip((t - eps) / (1 - 2 * eps), 0.0, 1.0)
        return (np.sinh(a * (y - 0.5)) + np.sinh(a / 2)) / (2 * np.sinh(a / 2))

    assert stats.kstest(x, cdf).pvalue > P_ACCEPT
    # And it is U-shaped: more mass near the ends than the middle.
    assert np.mean(x < 0.1) > 2 * np.mean(np.abs(x - 0.5) < 0.05)


def test_sd3_logit_normal_conversion():
    # SD3 draws the noise level tau = sigmoid(m_SD3 + s n); our t = 1 - tau. With m_SD3 = -m
    # this is LogitNormal(m, s) over our t.
    m, s = 0.8, 1.0
    n = np.random.default_rng(8).standard_normal(N)
    t_sd3 = 1.0 - 1.0 / (1.0 + np.exp(-(-m + s * n)))
    cdf = numerical_cdf(laws.LogitNormal(m, s).density)
    assert stats.kstest(t_sd3, cdf).pvalue > P_ACCEPT
    t_wrong = 1.0 - 1.0 / (1.0 + np.exp(-(m + s * n)))  # forgot to negate the location
    assert stats.kstest(t_wrong, cdf).pvalue < P_REJECT


def test_shifted_logit_normal_is_logit_normal_with_moved_loc():
    alpha = 3.0
    t = jnp.linspace(0.001, 0.999, 501)
    shifted = laws.Shifted(laws.LogitNormal(0.4, 1.2), alpha).density(t)
    direct = laws.LogitNormal(0.4 - math.log(alpha), 1.2).density(t)
    np.testing.assert_allclose(shifted, direct, rtol=1e-10)


def test_densities_vanish_outside_unit_interval():
    t = jnp.array([-0.5, -1e-9, 1.0 + 1e-9, 2.0])
    for sampler in SAMPLERS:
        np.testing.assert_array_equal(np.asarray(sampler.density(t)), 0.0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: laws.Uniform(0.5, 0.5),
        lambda: laws.Uniform(-0.1, 1.0),
        lambda: laws.Uniform(0.0, 1.5),
        lambda: laws.LogitNormal(0.0, 0.0),
        lambda: laws.LogitNormal(math.inf, 1.0),
        lambda: laws.ModeSampler(2.0),
        lambda: laws.ModeSampler(-1.01),
        lambda: laws.UShaped(a=0.0),
        lambda: laws.UShaped(eps=0.5),
        lambda: laws.Shifted(laws.Uniform(), 0.0),
        lambda: laws.Shifted(laws.Uniform(), -2.0),
    ],
)
def test_invalid_sampler_parameters_raise(build):
    with pytest.raises(ValueError):
        build()


def test_shifted_rejects_non_sampler():
    with pytest.raises(TypeError, match="sample/density"):
        laws.Shifted(object(), 2.0)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_make_time_sampler_names_and_kwargs():
    assert laws.make_time_sampler("uniform", t_min=1e-3) == laws.Uniform(1e-3, 1.0)
    assert laws.make_time_sampler("logit_normal", loc=0.4) == laws.LogitNormal(0.4, 1.0)
    assert laws.make_time_sampler("mode", a=0.5) == laws.ModeSampler(0.5)
    assert laws.make_time_sampler("cosmap") == laws.CosMap()
    assert laws.make_time_sampler("u_shaped", a=2.0) == laws.UShaped(a=2.0)
    for name in ("uniform", "logit_normal", "mode", "cosmap", "u_shaped"):
        assert laws.make_time_sampler(name).name == name
        assert laws.make_time_sampler(name, shift=1.0) == laws.make_time_sampler(name)
        shifted = laws.make_time_sampler(name, shift=3.0)
        assert shifted == laws.Shifted(laws.make_time_sampler(name), 3.0)


def test_make_time_sampler_errors():
    with pytest.raises(ValueError, match="unknown time sampler 'beta'.*cosmap.*logit_normal"):
        laws.make_time_sampler("beta")
    with pytest.raises(ValueError, match=r"unknown arguments \['mean'\]"):
        laws.make_time_sampler("logit_normal", mean=0.0)
    with pytest.raises(ValueError, match="shift"):
        laws.make_time_sampler("uniform", shift=0.0)


# --------------------------------------------------------------------------------------------
# Resolution shift
# --------------------------------------------------------------------------------------------

T_GRID = np.concatenate([[0.0, 1.0], np.random.default_rng(9).uniform(size=200)])


@pytest.mark.parametrize("alpha, beta", [(3.0, 0.5), (2.0, 2.0), (0.1, 7.0), (1.0, 4.0)])
def test_shift_composes(alpha, beta):
    two = shifts.shift_time(shifts.shift_time(T_GRID, alpha), beta)
    np.testing.assert_allclose(two, shifts.shift_time(T_GRID, alpha * beta), rtol=1e-13, atol=1e-15)


def test_shift_identity_order_endpoints_and_logit():
    np.testing.assert_allclose(shifts.shift_time(T_GRID, 1.0), T_GRID, rtol=1e-15, atol=0)
    t = np.sort(T_GRID)
    for alpha in (0.2, 3.0, 50.0):
        shifted = shifts.shift_time(t, alpha)
        assert shifted[0] == 0.0 and shifted[-1] == 1.0
        assert np.all(np.diff(shifted) > 0)
        inner = t[1:-1]
        np.testing.assert_allclose(
            _logit(shifts.shift_time(inner, alpha)), _logit(inner) - math.log(alpha), atol=1e-9
        )
        # alpha > 1 moves time toward noise (t' < t), alpha < 1 toward data.
        assert np.all((shifted[1:-1] < inner) == (alpha > 1))


def test_shift_keeps_array_kind_and_dtype():
    t32 = jnp.linspace(0, 1, 5, dtype=jnp.float32)
    out = shifts.shift_time(t32, np.float64(3.0))
    assert isinstance(out, jax.Array) and out.dtype == jnp.float32
    assert isinstance(shifts.shift_time(np.linspace(0, 1, 5), 3.0), np.ndarray)
    with pytest.raises(ValueError, match="> 0"):
        shifts.shift_time(t32, 0.0)


def test_resolution_shift_formulas():
    assert shifts.sd3_resolution_shift(256**2) == 1.0
    assert shifts.sd3_resolution_shift(1024**2) == pytest.approx(4.0)
    assert shifts.sd3_resolution_shift(512 * 512, base_pixels=128 * 128) == pytest.approx(4.0)
    assert shifts.flux_shift(256) == pytest.approx(math.exp(0.5))
    assert shifts.flux_shift(4096) == pytest.approx(math.exp(1.15))
    assert math.log(shifts.flux_shift(2176)) == pytest.approx(0.825)  # midpoint: mu is linear
    with pytest.raises(ValueError):
        shifts.sd3_resolution_shift(0)
    with pytest.raises(ValueError):
        shifts.flux_shift(-1)


# --------------------------------------------------------------------------------------------
# (s, e) pairs for average-velocity models
# --------------------------------------------------------------------------------------------


def test_sample_pair_order_statistics():
    loc, scale = 0.4, 1.0
    base = laws.LogitNormal(loc, scale)
    batch, frac = 2 * N, 0.5
    s, e = laws.sample_pair(jax.random.key(10), (batch,), base, frac)
    s, e = np.asarray(s, np.float64), np.asarray(e, np.float64)
    n_eq = batch // 2
    assert np.all(s <= e)
    np.testing.assert_array_equal(s[:n_eq], e[:n_eq])
    assert np.mean(s[n_eq:] == e[n_eq:]) < 1e-3

    def cdf(t):
        return stats.norm.cdf((_logit(np.clip(t, 1e-300, 1 - 1e-16)) - loc) / scale)

    def cdf_min(t):
        return 1 - (1 - cdf(t)) ** 2

    assert stats.kstest(s[n_eq:], cdf_min).pvalue > P_ACCEPT
    assert stats.kstest(e[n_eq:], lambda t: cdf(t) ** 2).pvalue > P_ACCEPT
    # Rows forced to e = s keep s = min(a, b) (spec 3.2: e is overwritten by s).
    assert stats.kstest(s[:n_eq], cdf_min).pvalue > P_ACCEPT
    # Power: the unequal rows are not marginally distributed as the base.
    assert stats.kstest(e[n_eq:], cdf).pvalue < P_REJECT
    assert stats.kstest(s[n_eq:], cdf).pvalue < P_REJECT


@pytest.mark.parametrize(
    "frac, expected", [(0.29, 29), (0.755, 75), (0.75, 75), (0.0, 0), (1.0, 100)]
)
def test_sample_pair_equal_rows_count(frac, expected):
    batch = 100
    s, e = laws.sample_pair(jax.random.key(11), (batch, 3), laws.Uniform(), frac)
    assert s.shape == e.shape == (batch, 3) and s.dtype == jnp.float32
    equal_rows = np.all(np.asarray(s) == np.asarray(e), axis=1)
    assert np.all(equal_rows[:expected]) and not np.any(equal_rows[expected:])


def test_sample_pair_errors():
    with pytest.raises(ValueError, match="equal_fraction"):
        laws.sample_pair(jax.random.key(0), (4,), laws.Uniform(), 1.5)
    with pytest.raises(ValueError, match="batch"):
        laws.sample_pair(jax.random.key(0), (), laws.Uniform(), 0.5)


# --------------------------------------------------------------------------------------------
# Inference grids
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_steps", [1, 4, 17])
@pytest.mark.parametrize("t_min, t_max", [(0.0, 1.0), (1e-3, 1.0), (0.1, 0.6)])
def test_uniform_grid(num_steps, t_min, t_max):
    grid = grids.uniform_grid(num_steps, t_min, t_max)
    assert grid.dtype == np.float64 and grid.shape == (num_steps + 1,)
    assert grid[0] == t_min and grid[-1] == t_max
    np.testing.assert_allclose(np.diff(grid), (t_max - t_min) / num_steps, rtol=1e-12)
    grids.validate_grid(grid)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("t_min", [0.0, 1e-3])
def test_shifted_grid_is_shift_of_uniform_grid(alpha, t_min):
    grid = grids.shifted_grid(10, alpha, t_min)
    uniform = grids.uniform_grid(10, t_min, 1.0)
    np.testing.assert_array_equal(grid, shifts.shift_time(uniform, alpha))
    assert grid.shape == (11,) and grid[-1] == 1.0
    assert grid[0] == pytest.approx(shifts.shift_time(t_min, alpha), abs=0)
    assert np.all(np.diff(grid) > 0)
    if alpha > 1:
        assert np.all(grid[1:-1] < uniform[1:-1])  # more resolution near noise


@pytest.mark.parametrize("num_steps", [2, 5, 25])
def test_logsnr_grid(num_steps):
    t_min, t_max = 1e-3, 1 - 1e-3
    grid = grids.logsnr_uniform_grid(num_steps, t_min, t_max)
    assert grid.dtype == np.float64 and grid.shape == (num_steps + 1,)
    assert grid[0] == t_min and grid[-2] == t_max and grid[-1] == 1.0
    assert np.all(np.diff(grid) > 0)
    lam = _logit(grid[:-1])
    spacing = (_logit(t_max) - _logit(t_min)) / (num_steps - 1)
    np.testing.assert_allclose(np.diff(lam), spacing, rtol=1e-9)


def test_grid_argument_errors():
    with pytest.raises(ValueError, match="num_steps must be >= 2"):
        grids.logsnr_uniform_grid(1)
    with pytest.raises(ValueError, match="0 < t_min < t_max < 1"):
        grids.logsnr_uniform_grid(4, t_max=1.0)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        grids.uniform_grid(0)
    with pytest.raises(TypeError, match="integer"):
        grids.uniform_grid(2.5)
    with pytest.raises(ValueError, match="t_min"):
        grids.uniform_grid(4, 0.5, 0.2)
    with pytest.raises(ValueError, match="> 0"):
        grids.shifted_grid(4, -1.0)


def test_make_grid_registry():
    np.testing.assert_array_equal(grids.make_grid("uniform", 6), grids.uniform_grid(6))
    np.testing.assert_array_equal(
        grids.make_grid("shifted", 8, alpha=3.0, t_min=1e-3), grids.shifted_grid(8, 3.0, 1e-3)
    )
    np.testing.assert_array_equal(grids.make_grid("logsnr", 5), grids.logsnr_uniform_grid(5))
    with pytest.raises(ValueError, match="unknown time grid 'karras'.*logsnr.*shifted.*uniform"):
        grids.make_grid("karras", 5)
    with pytest.raises(ValueError, match="accepts keyword arguments"):
        grids.make_grid("shifted", 5)  # alpha missing
    with pytest.raises(ValueError, match="accepts keyword arguments"):
        grids.make_grid("uniform", 5, rho=7.0)


def test_validate_grid_accepts_and_converts():
    out = grids.validate_grid([0.0, 0.25, 1.0])
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    grids.validate_grid(jnp.asarray([0.0, 0.5, 1.0], dtype=jnp.float32))


@pytest.mark.parametrize(
    "grid, pattern",
    [
        ([[0.0, 1.0]], r"must be 1-D; got shape \(1, 2\)"),
        ([0.5], r"at least 2 points.*got 1"),
        ([], r"at least 2 points.*got 0"),
        ([0.0, np.nan, 1.0], r"NaN at t\[1\]=nan"),
        ([-0.1, 0.5, 1.0], r"leaves \[0, 1\] at t\[0\]=-0.1"),
        ([0.0, 0.5, 1.2], r"leaves \[0, 1\] at t\[2\]=1.2"),
        ([0.0, np.inf], r"leaves \[0, 1\] at t\[1\]=inf"),
        ([0.0, 0.5, 0.5, 1.0], r"not strictly increasing.*t\[1\]=0.5 >= t\[2\]=0.5"),
        ([1.0, 0.5, 0.0], r"not strictly increasing.*t\[0\]=1.0 >= t\[1\]=0.5"),
    ],
)
def test_validate_grid_rejects(grid, pattern):
    with pytest.raises(ValueError, match=pattern):
        grids.validate_grid(grid)


@pytest.mark.parametrize("num_steps", [1, 2, 7])
@pytest.mark.parametrize("rho", [1.0, 7.0])
def test_edm_grid_is_a_rho_schedule_over_the_noise_level(num_steps, rho):
    grid = grids.edm_grid(num_steps, rho=rho, sigma_min=0.01, sigma_max=0.9)
    assert grid.shape == (num_steps + 1,) and grid[-1] == 1.0
    grids.validate_grid(grid)
    sigma = 1.0 - grid[:-1]
    assert sigma[0] == pytest.approx(0.9)
    if num_steps > 1:
        assert sigma[-1] == pytest.approx(0.01)
        # sigma^(1/rho) is evenly spaced.
        np.testing.assert_allclose(np.diff(sigma ** (1 / rho)), np.diff(sigma ** (1 / rho))[0])
    if rho == 1.0 and num_steps > 1:
        np.testing.assert_allclose(grid[:-1], np.linspace(0.1, 0.99, num_steps), rtol=1e-12)
    if rho > 1 and num_steps > 2:
        assert np.diff(grid[:-1])[-1] < np.diff(grid[:-1])[0]  # finer near the data end


def test_diffusers_grid_is_the_shifted_grid_from_one_over_t():
    for shift in (1.0, 3.0):
        np.testing.assert_allclose(
            grids.diffusers_flow_grid(10, shift), grids.shifted_grid(10, shift, t_min=1e-3), atol=0
        )
    # diffusers' own construction over noise levels (docs/maths/solvers.md), converted to t.
    n, shift = 10, 3.0
    s = 1.0 - np.linspace(1, 1 / 1000, n + 1)
    s = np.flip(shift * s / (1 + (shift - 1) * s))[:-1]
    np.testing.assert_allclose(
        grids.diffusers_flow_grid(n, shift), 1 - np.append(s, 0.0), atol=1e-15
    )


def test_grid_specs_and_custom_grids():
    assert grids.parse_grid_spec("uniform") == ("uniform", {})
    assert grids.parse_grid_spec("shifted, alpha=3") == ("shifted", {"alpha": 3.0})
    assert grids.parse_grid_spec("0,0.5,1") == ("custom", {"times": [0.0, 0.5, 1.0]})
    np.testing.assert_array_equal(grids.grid_from_spec("edm,rho=5", 4), grids.edm_grid(4, rho=5.0))
    np.testing.assert_array_equal(
        grids.grid_from_spec("diffusers,shift=3,num_train_timesteps=100", 4),
        grids.diffusers_flow_grid(4, 3.0, 100),
    )
    np.testing.assert_array_equal(grids.grid_from_spec("0,0.2,0.9,1", 3), [0, 0.2, 0.9, 1])
    np.testing.assert_array_equal(
        grids.make_grid("custom", 2, times=[0.1, 0.4, 1.0]), [0.1, 0.4, 1]
    )
    with pytest.raises(ValueError, match="needs 4 points; the given grid has 3"):
        grids.grid_from_spec("0,0.5,1", 3)
    with pytest.raises(ValueError, match=r"leaves \[0, 1\]"):
        grids.grid_from_spec("0,0.5,1.5", 2)
    with pytest.raises(ValueError, match="not strictly increasing"):
        grids.custom_grid(2, [0.0, 0.7, 0.3])
    with pytest.raises(ValueError, match="NAME\\[,key=value"):
        grids.parse_grid_spec("shifted,alpha")
    with pytest.raises(ValueError, match="unknown time grid 'karras'"):
        grids.grid_from_spec("karras", 4)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        grids.edm_grid(4, sigma_min=0.5, sigma_max=0.2)
    with pytest.raises(ValueError, match="rho > 0"):
        grids.edm_grid(4, rho=0.0)
