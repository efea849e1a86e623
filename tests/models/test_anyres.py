"""The any-resolution input contract: images and packed tokens are one input, checked early."""

import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.data.tokens import pack_images
from flowjax.models.anyres import rotary_from_spec, swiglu_hidden, token_input


def test_an_image_batch_is_its_full_token_grid_and_comes_back():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 6, 3)), jnp.float32)
    inp = token_input(x, 2)
    packed = pack_images(list(np.asarray(x)), 2)
    np.testing.assert_array_equal(inp.tokens, packed.tokens)
    np.testing.assert_array_equal(inp.positions, packed.positions)
    assert inp.grid == (2, 3) and inp.channels == 3 and bool(inp.mask.all())
    np.testing.assert_array_equal(inp.output(inp.tokens), x)


def test_token_output_is_zero_at_padding():
    images = [np.ones((4, 4, 1), np.float32), np.ones((2, 4, 1), np.float32)]
    b = pack_images(images, 2, pad_value=7.0)
    inp = token_input(
        jnp.asarray(b.tokens), 2, mask=jnp.asarray(b.mask), positions=jnp.asarray(b.positions)
    )
    out = inp.output(inp.tokens)
    assert inp.grid is None
    np.testing.assert_array_equal(out[1, 2:], 0.0)
    np.testing.assert_array_equal(out[1, :2], 1.0)


def test_bad_input_is_refused_before_work():
    x = jnp.zeros((2, 5, 4, 3))
    with pytest.raises(ValueError, match="not a multiple of the patch 2"):
        token_input(x, 2)
    with pytest.raises(ValueError, match="more than max_tokens=3"):
        token_input(jnp.zeros((1, 4, 4, 3)), 2, max_tokens=3)
    tok = jnp.zeros((2, 6, 12))
    with pytest.raises(ValueError, match="need mask="):
        token_input(tok, 2)
    with pytest.raises(ValueError, match="mask must be bool"):
        token_input(tok, 2, mask=jnp.ones((2, 5), bool), positions=jnp.zeros((2, 6, 2), int))
    with pytest.raises(ValueError, match="positions must be integer"):
        token_input(tok, 2, mask=jnp.ones((2, 6), bool), positions=jnp.zeros((2, 6)))
    with pytest.raises(ValueError, match="p\\^2 C"):
        token_input(jnp.zeros((2, 6, 10)), 2)


def test_rotary_spec_takes_the_network_layout_and_training_size():
    enc = rotary_from_spec("visionyarn", "nextdit", 8)
    assert enc.layout == "nextdit" and enc.train_size == 8 and enc.name == "visionyarn"
    assert rotary_from_spec("ntk,train_size=4", "fit", 8).train_size == 4
    with pytest.raises(ValueError, match="unknown position encoding"):
        rotary_from_spec("bogus", "fit", 8)
    with pytest.raises(ValueError, match="drop 'layout='"):
        rotary_from_spec("rope,layout=1d", "fit", 8)
    with pytest.raises(ValueError, match="not a rotary"):
        rotary_from_spec("sincos", "fit", 8)
    assert swiglu_hidden(1152) == 3072 and swiglu_hidden(2304, multiple_of=256) == 6144
