"""Position encodings (flowjax.models.positions): the sin-cos table the DiT uses, the RoPE
layouts and every extrapolation rule, checked by their closed forms and invariances."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.models import POSITIONS, position_from_spec, register_position
from flowjax.models.positions import (
    NTK,
    PI,
    FrequencyAware,
    RoPE,
    SinCos2D,
    TimeAware,
    TimeSwitch,
    VisionNTK,
    VisionYaRN,
    YaRN,
    grid_positions,
    yarn_ramp,
)
from tests.tolerance import assert_equal_up_to_rounding

ROTARY = [name for name in POSITIONS if name != "sincos"]
TIMES = np.array([0.1, 0.9])  # one on each side of time_switch's watershed (0.3)
RNG = np.random.default_rng(0)


def _qk(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape), rng.normal(size=shape)


def _rule(name, layout):
    return position_from_spec(f"{name},layout={layout},train_size=16")


# ---------------------------------------------------------------------------------------------
# sin-cos: the DiT's table, unchanged
# ---------------------------------------------------------------------------------------------


def _table_as_the_dit_had_it(dim, grid_h, grid_w):
    """The DiT's table as written before the move (float64 numpy, then float32)."""
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))

    def axis(pos):
        args = pos.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(args), np.cos(args)], axis=1)

    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    return np.concatenate([axis(cols), axis(rows)], axis=1).astype(np.float32)


@pytest.mark.parametrize("dim, grid_h, grid_w", [(16, 3, 4), (64, 8, 8), (1152, 16, 16)])
def test_sincos_table_is_bit_identical_to_the_dits(dim, grid_h, grid_w):
    table = SinCos2D().table(dim, grid_h, grid_w)
    assert table.dtype == np.float32
    np.testing.assert_array_equal(table, _table_as_the_dit_had_it(dim, grid_h, grid_w))


def test_sincos_of_gathered_tokens_is_the_gathered_table():
    enc, table = SinCos2D(), SinCos2D().table(16, 5, 7)
    order = RNG.permutation(35)[:20]
    gathered = grid_positions(5, 7)[order]
    np.testing.assert_array_equal(enc.embed(gathered, 16), table[order])
    # under jit, positions are arrays of the batch: the same numbers to float32 rounding
    traced = jax.jit(lambda p: enc.embed(p, 16))(jnp.asarray(gathered, jnp.float32))
    np.testing.assert_allclose(np.asarray(traced), table[order], rtol=0, atol=1e-5)
    x = jnp.ones((1, 35, 2, 8))
    assert enc.rotate(x, gathered) is x  # an additive encoding leaves q and k alone


# ---------------------------------------------------------------------------------------------
# RoPE layouts
# ---------------------------------------------------------------------------------------------


def _expected_angles(layout, head_dim, row, col, theta=10000.0):
    """Per channel pair, the angle each published layout gives, from the definitions."""
    if layout == "1d":
        return [row * theta ** (-2 * j / head_dim) for j in range(head_dim // 2)]
    f = head_dim // 4
    w = [theta ** (-4 * k / head_dim) for k in range(f)]
    if layout == "fit":  # height half, then width half
        return [row * w[j] if j < f else col * w[j - f] for j in range(2 * f)]
    return [(row if j % 2 == 0 else col) * w[j // 2] for j in range(2 * f)]  # interleaved


@pytest.mark.parametrize("layout", ["fit", "nextdit", "1d"])
def test_each_layout_turns_each_pair_by_its_published_angle(layout):
    head_dim, row, col = 16, 3, 5
    enc = RoPE(layout=layout)
    pos = np.array([[row, col]]) if layout != "1d" else np.array([row])
    # basis vectors e_2j: the rotated pair is (cos a_j, sin a_j)
    x = np.eye(head_dim)[0::2][None, None]  # [1, 1, D/2 "heads", D]
    x = x.reshape(1, 1, head_dim // 2, head_dim)
    out = np.asarray(enc.rotate(jnp.asarray(x, jnp.float32), pos))[0, 0]
    want = _expected_angles(layout, head_dim, row, col)
    for j, a in enumerate(want):
        np.testing.assert_allclose(out[j, 2 * j : 2 * j + 2], [math.cos(a), math.sin(a)], atol=2e-6)
        rest = np.delete(out[j], [2 * j, 2 * j + 1])
        assert np.all(rest == 0)


@pytest.mark.parametrize("name", ROTARY)
@pytest.mark.parametrize("layout", ["fit", "nextdit"])
def test_qk_depends_only_on_the_offset(name, layout):
    # float64: q . k at positions P equals q . k at P + (dr, dc) for every pair, at a grid
    # beyond the training size (so every rule acts), per-example times for the time rules
    enc, n, heads, d = _rule(name, layout), 12, 2, 16
    q, k = _qk((2, n, heads, d))
    pos = RNG.integers(0, 30, size=(n, 2))
    with jax.enable_x64(True):

        def scores(p):
            kw = dict(grid=(24, 40), t=jnp.asarray(TIMES))
            rq, rk = enc.rotate(jnp.asarray(q), p, **kw), enc.rotate(jnp.asarray(k), p, **kw)
            return np.asarray(jnp.einsum("bihd,bjhd->bhij", rq, rk))

        base = scores(pos)
        for shift in RNG.integers(-50, 50, size=(3, 2)):
            np.testing.assert_allclose(scores(pos + shift), base, rtol=0, atol=1e-10)
        moved = pos.copy()
        moved[0] += (1, 2)  # one token moved: its scores change
        assert np.abs(scores(moved) - base)[:, :, 0].max() > 1e-3


def test_gathered_tokens_keep_their_rotation():
    enc = VisionYaRN()
    q, _ = _qk((1, 20, 2, 8))
    pos = grid_positions(4, 5)
    order = RNG.permutation(20)
    whole = np.asarray(enc.rotate(jnp.asarray(q, jnp.float32), pos, grid=(40, 20)))
    gathered = enc.rotate(jnp.asarray(q[:, order], jnp.float32), pos[order], grid=(40, 20))
    np.testing.assert_array_equal(np.asarray(gathered), whole[:, order])


# ---------------------------------------------------------------------------------------------
# Extrapolation rules
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ROTARY)
@pytest.mark.parametrize("layout", ["fit", "nextdit", "1d"])
def test_every_rule_is_plain_rope_at_scale_one(name, layout):
    enc, plain = _rule(name, layout), RoPE(layout=layout, train_size=16)
    grids = [(16, 16), (8, 12)] if layout != "1d" else [(16,), (5,)]
    q, _ = _qk((2, 6, 2, 16))
    pos = RNG.integers(0, 16, size=(6, 2) if layout != "1d" else (6,))
    t = jnp.asarray(TIMES)
    for grid in grids:
        for got, want in zip(enc.frequencies(16, grid, t), plain.frequencies(16, grid)):
            np.testing.assert_allclose(np.asarray(got), np.broadcast_to(want, np.shape(got)))
        x = jnp.asarray(q, jnp.float32)
        assert_equal_up_to_rounding(
            enc.rotate(x, pos, grid=grid, t=t), plain.rotate(x, pos, grid=grid), ulps=8
        )


def test_ntk_keeps_the_highest_frequency_and_interpolates_the_lowest_exactly():
    d, s = 36, 2.5  # head dim 72 (FiTv2-XL): 36 channels and 18 frequencies per axis
    w = RoPE().base_frequencies(d)
    for enc in (NTK(), VisionNTK()):
        got = enc.axis_frequencies(d, s, None)
        np.testing.assert_allclose(got[-1], w[-1] / s, rtol=1e-13)
        assert got[0] == w[0] == 1.0
        assert np.all(np.diff(got / w) < 0)  # interpolation grows with the wavelength
    np.testing.assert_allclose(PI().axis_frequencies(d, s, None), w / s, rtol=1e-15)


def test_visionntk_with_unit_height_scale_changes_only_the_width_half():
    q, _ = _qk((1, 10, 2, 16))
    x = jnp.asarray(q, jnp.float32)
    pos = RNG.integers(0, 32, size=(10, 2))
    grid = (16, 32)  # s_h = 1, s_w = 2
    plain = np.asarray(RoPE().rotate(x, pos, grid=grid))
    decoupled = np.asarray(VisionNTK().rotate(x, pos, grid=grid))
    np.testing.assert_array_equal(decoupled[..., :8], plain[..., :8])  # the height half
    assert np.abs(decoupled[..., 8:] - plain[..., 8:]).max() > 1e-3
    coupled = np.asarray(NTK().rotate(x, pos, grid=grid))  # s = 2 on both axes
    assert np.abs(coupled[..., :8] - plain[..., :8]).max() > 1e-3
    # interleaved: only the odd pairs (the width) change
    nd = np.asarray(VisionNTK(layout="nextdit").rotate(x, pos, grid=grid)).reshape(
        1, 10, 2, 4, 2, 2
    )
    ref = np.asarray(RoPE(layout="nextdit").rotate(x, pos, grid=grid)).reshape(nd.shape)
    np.testing.assert_array_equal(nd[..., 0, :], ref[..., 0, :])
    assert np.abs(nd[..., 1, :] - ref[..., 1, :]).max() > 1e-3


def test_yarn_at_the_worked_example():
    # FiTv2-XL: d = 36 per axis, theta 1e4, 16 tokens per side in training
    ramp = yarn_ramp(36, 1e4, 16, beta_fast=32.0, beta_slow=1.0)
    np.testing.assert_array_equal(ramp, [0.0, 0.5] + [1.0] * 16)
    enc, w = YaRN(), RoPE().base_frequencies(36)
    got = enc.axis_frequencies(36, 2.0, None)
    np.testing.assert_allclose(got, np.concatenate([w[:1], 0.75 * w[1:2], w[2:] / 2]), rtol=1e-15)
    assert round(enc.attention_factor((32, 32)), 4) == 1.0693
    assert enc.attention_factor((16, 8)) == 1.0
    # the factor is on cos and sin: each rotated vector's norm grows by m, so logits by m^2
    q, _ = _qk((1, 4, 1, 72))
    out = np.asarray(
        VisionYaRN().rotate(jnp.asarray(q, jnp.float32), np.ones((4, 2)), grid=(16, 32))
    )
    np.testing.assert_allclose(
        np.linalg.norm(out, axis=-1), 1.0693147 * np.linalg.norm(q, axis=-1), rtol=1e-5
    )


def test_visionyarn_scales_each_axis_by_its_own_ratio():
    rows, cols = VisionYaRN().frequencies(72, (16, 48))
    np.testing.assert_array_equal(rows, RoPE().base_frequencies(36))  # s_h = 1
    np.testing.assert_array_equal(cols, YaRN().axis_frequencies(36, 3.0, None))
    assert VisionYaRN().attention_factor((16, 48)) == 0.1 * math.log(3.0) + 1.0


def test_time_switch_is_pi_before_the_watershed_and_ntk_after():
    enc, grid = TimeSwitch(), (32, 18)  # s = sqrt(32 * 18) / 16 = 1.5, both axes
    w = RoPE().base_frequencies(8)
    t = jnp.asarray([0.0, 0.29, 0.3, 1.0])
    for freqs in enc.frequencies(16, grid, t):
        np.testing.assert_allclose(np.asarray(freqs[:2]), np.stack([w / 1.5] * 2), rtol=1e-6)
        np.testing.assert_allclose(
            np.asarray(freqs[2:]), np.stack([RoPE(theta=1.5e4).base_frequencies(8)] * 2), rtol=1e-6
        )
    with pytest.raises(ValueError, match="pass t"):
        enc.rotate(jnp.ones((1, 2, 1, 16)), np.zeros((2, 2)), grid=grid)


def test_frequency_aware_is_ntk_below_the_target_index_and_pi_beyond():
    enc, d, s = FrequencyAware(), 36, 2.0
    w = RoPE().base_frequencies(d)
    d_target = d * math.log(16 / (2 * math.pi)) / math.log(1e4)
    base = 1e4 * s ** (d / d_target)
    got = np.asarray(enc.axis_frequencies(d, s, None), np.float64)
    # the spec's two forms agree: max(b'^(-2k/d), w / s)
    np.testing.assert_allclose(
        got, np.maximum(RoPE(theta=base).base_frequencies(d), w / s), rtol=1e-6
    )
    beyond = 2 * np.arange(d // 2) >= d_target
    np.testing.assert_allclose(got[beyond], w[beyond] / s, rtol=1e-6)
    assert got[0] == 1.0 and beyond.sum() == d // 2 - 2


def test_time_aware_moves_from_pi_at_noise_to_ntk_at_data():
    enc, grid = TimeAware(), (48, 48)  # s = 3
    w = RoPE().base_frequencies(18)
    rows, cols = enc.frequencies(36, grid, jnp.asarray([0.0, 1.0]))
    np.testing.assert_array_equal(np.asarray(rows), np.asarray(cols))
    np.testing.assert_allclose(np.asarray(rows[0]), np.concatenate([w[:1], w[1:] / 3]), rtol=1e-6)
    ntk = RoPE(theta=3e4).base_frequencies(18)
    np.testing.assert_allclose(np.asarray(rows[1]), ntk, rtol=1e-6)
    at_data = TimeSwitch().frequencies(36, grid, jnp.asarray(1.0))[0]
    np.testing.assert_allclose(np.asarray(rows[1]), np.asarray(at_data), rtol=1e-6)


def test_per_example_times_rotate_each_example_as_alone():
    q, _ = _qk((2, 5, 2, 16))
    x, pos = jnp.asarray(q, jnp.float32), RNG.integers(0, 40, size=(5, 2))
    for enc in (TimeSwitch(), TimeAware()):
        both = np.asarray(enc.rotate(x, pos, grid=(40, 40), t=jnp.asarray(TIMES)))
        for b in range(2):
            alone = enc.rotate(x[b : b + 1], pos, grid=(40, 40), t=jnp.asarray(TIMES[b]))
            np.testing.assert_array_equal(both[b : b + 1], np.asarray(alone))


# ---------------------------------------------------------------------------------------------
# Specs and errors
# ---------------------------------------------------------------------------------------------


def test_specs_build_the_registered_values():
    assert position_from_spec("visionyarn,train_size=8,beta_fast=16") == VisionYaRN(
        train_size=8, beta_fast=16.0
    )
    assert position_from_spec("pi,theta=100,layout=1d") == PI(theta=100.0, layout="1d")
    assert position_from_spec("time_switch").layout == "nextdit"
    assert position_from_spec("sincos") == SinCos2D()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("visionyarm", "unknown position encoding 'visionyarm'; choose one of"),
        ("yarn,beta=3", r"unknown key\(s\) \['beta'\] in position encoding 'yarn'; valid keys"),
        ("rope,layout=zigzag", "unknown RoPE layout 'zigzag'"),
        ("ntk,theta=1", "theta .* must be a number > 1"),
        ("yarn,beta_fast=1,beta_slow=2", "need 0 < beta_slow < beta_fast"),
        ("time_switch,watershed=1.5", r"watershed must be in \[0, 1\]"),
        ("frequency_aware,train_size=6", "needs train_size > 2 pi"),
        ("rope,train_size=0", "train_size must be a positive integer"),
        ("rope,16", "bad position encoding 'rope,16'"),
    ],
)
def test_a_bad_spec_is_a_one_line_error(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        position_from_spec(spec)
    assert "\n" not in str(err.value)
    if "unknown position encoding" in message:
        assert all(name in str(err.value) for name in POSITIONS)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: RoPE().rotate(jnp.ones((1, 4, 2, 10)), np.zeros((4, 2))), "divisible by 4"),
        (lambda: RoPE().rotate(jnp.ones((1, 4, 2, 8)), np.zeros((5, 2))), "with N = 4 tokens"),
        (lambda: RoPE().rotate(jnp.ones((1, 4, 2, 8)), np.zeros((4, 3))), r"\(row, col\)"),
        (lambda: RoPE().rotate(jnp.ones((4, 2, 8)), np.zeros((4, 2))), r"\[B, N, H, D\]"),
        (lambda: NTK().rotate(jnp.ones((1, 4, 2, 8)), np.zeros((4, 2)), grid=(4,)), "grid must"),
        (lambda: SinCos2D().embed(np.zeros((4, 2)), 10), "width % 4 == 0"),
        (
            lambda: TimeAware().rotate(
                jnp.ones((2, 4, 1, 8)), np.zeros((4, 2)), grid=(8, 8), t=jnp.zeros(3)
            ),
            "t must be a scalar or",
        ),
    ],
)
def test_bad_inputs_are_one_line_errors(call, message):
    with pytest.raises(ValueError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


def test_a_registered_rule_is_built_by_its_spec():
    @dataclasses.dataclass(frozen=True)
    class Halved(RoPE):
        name = "halved"

        def axis_frequencies(self, d, scale, t):
            return self.base_frequencies(d) / 2

    try:
        register_position("halved", Halved)
        assert position_from_spec("halved,layout=nextdit") == Halved(layout="nextdit")
    finally:
        del POSITIONS["halved"]
