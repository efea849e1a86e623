"""Flow matching on mixed-size token batches: padding never enters the loss or its gradient,
each image's loss is the one it has alone, a fixed-size batch keeps today's loss, and the
objectives that do not train on token batches are refused at set-up.

Comparisons between programs of different sequence lengths run in float64 (the reference
is exact there; float32 sums of different lengths differ in the last bits)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.data.tokens import pack_images
from flowjax.models import make_apply_fn
from flowjax.models.dit import patchify, unpatchify
from flowjax.objectives import FlowMatching, make_objective
from flowjax.objectives.flow_matching import token_noise
from flowjax.training import Experiment
from tests.anyres_standin import SIZES, TinyAnyRes, TokenSource, image, registered

PATCH = 2
IMAGES = [image(i, size) for i, size in enumerate(((4, 6), (6, 4), (2, 2)))]
KEY = jax.random.PRNGKey(3)


def _f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if a.dtype.kind == "f" else a, tree)


@pytest.fixture(scope="module")
def net():
    """The stand-in network, its float64 parameters and apply_fn (label-conditional)."""
    model = TinyAnyRes(patch_size=PATCH, num_classes=3)
    with jax.enable_x64(True):
        x = jnp.zeros((1, 4, 4, 1))
        params = model.init(KEY, x, jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))["params"]
        params = _f64(params)
    return model, params, make_apply_fn(model)


def _batch(packed, labels=(0, 1, 2)):
    return {
        "x1": jnp.asarray(packed.tokens, jnp.float64),
        "mask": jnp.asarray(packed.mask),
        "positions": jnp.asarray(packed.positions),
        "label": jnp.asarray(labels, jnp.int32),
    }


def _padded(batch, extra, seed):
    """``batch`` with ``extra`` padding tokens appended: large random features and random
    positions (any value: the mask says they are not tokens)."""
    rng = np.random.default_rng(seed)
    b, _, f = batch["x1"].shape
    return dict(
        batch,
        x1=jnp.concatenate([batch["x1"], 1e3 * rng.standard_normal((b, extra, f))], axis=1),
        mask=jnp.concatenate([batch["mask"], np.zeros((b, extra), bool)], axis=1),
        positions=jnp.concatenate(
            [batch["positions"], rng.integers(0, 50, (b, extra, 2)).astype(np.int32)], axis=1
        ),
    )


def test_padding_tokens_change_neither_the_loss_nor_its_gradient(net):
    model, params, apply_fn = net
    objective = FlowMatching(num_classes=3, label_dropout=0.5)
    with jax.enable_x64(True):
        batch = _batch(pack_images(IMAGES, PATCH))

        def loss(p, b):
            return objective.loss_fn(p, apply_fn, b, KEY)

        value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
        (value, metrics), grad = value_and_grad(params, batch)
        for extra, seed in ((1, 0), (7, 1)):
            (v2, m2), g2 = value_and_grad(params, _padded(batch, extra, seed))
            np.testing.assert_allclose(v2, value, rtol=1e-12)
            for k in metrics:
                np.testing.assert_allclose(m2[k], metrics[k], rtol=1e-12, atol=1e-15)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), g2, grad)
        assert float(value) > 0 and all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grad))


def test_each_image_weighs_the_same_and_gets_its_own_loss_alone(net):
    """The token loss is the mean over images of each image's mean squared error, with the
    network called on that image ALONE in the image layout (the same noise and time)."""
    model, params, apply_fn = net
    objective = FlowMatching(num_classes=3)
    with jax.enable_x64(True):
        packed = pack_images(IMAGES, PATCH)
        batch = _batch(packed)
        value, _ = objective.loss_fn(params, apply_fn, batch, KEY)
        # The draws of loss_fn, made here by hand.
        key_t, key_noise, _, _ = jax.random.split(KEY, 4)
        t = objective.time_sampler.sample(key_t, (3,)).astype(jnp.float64)
        x0 = token_noise(key_noise, batch["x1"].shape, jnp.float64)
        per_image = []
        for i, im in enumerate(IMAGES):
            h, w, _ = im.shape
            n = (h // PATCH) * (w // PATCH)
            noise = unpatchify(x0[i : i + 1, :n], PATCH, h, w)
            x1 = jnp.asarray(im[None], jnp.float64)
            ti = t[i : i + 1]
            v = apply_fn(params, ti * x1 + (1 - ti) * noise, ti, batch["label"][i : i + 1])
            per_image.append(jnp.mean(jnp.square(patchify(v - (x1 - noise), PATCH))))
        np.testing.assert_allclose(value, np.mean(per_image), rtol=1e-10)


def test_token_noise_does_not_depend_on_the_padded_length():
    short = token_noise(KEY, (2, 3, 4), jnp.float32)
    long = token_noise(KEY, (2, 9, 4), jnp.float32)
    np.testing.assert_array_equal(long[:, :3], short)
    assert abs(float(long.std()) - 1.0) < 0.3


def test_a_fixed_size_batch_keeps_the_image_loss():
    """An image batch (no mask) takes the image path: ``mean |v - (x1 - x0)|^2`` with the
    noise of the whole image shape, exactly as before token batches existed."""
    model = TinyAnyRes(patch_size=PATCH)
    with jax.enable_x64(True):
        x1 = jnp.asarray(np.stack([image(i, (4, 4)) for i in range(3)]), jnp.float64)
        params = _f64(model.init(KEY, x1[:1], jnp.zeros((1,)))["params"])
        apply_fn = make_apply_fn(model)
        value, _ = FlowMatching().loss_fn(params, apply_fn, {"x1": x1}, KEY)
        key_t, key_noise, _, _ = jax.random.split(KEY, 4)
        t = FlowMatching().time_sampler.sample(key_t, (3,)).astype(jnp.float64)
        x0 = jax.random.normal(key_noise, x1.shape, jnp.float64)
        tb = t[:, None, None, None]
        v = apply_fn(params, tb * x1 + (1 - tb) * x0, t, None)
        np.testing.assert_allclose(value, jnp.mean(jnp.square(v - (x1 - x0))), rtol=1e-12)


def test_a_loss_over_whole_examples_is_refused_on_tokens(net):
    model, params, apply_fn = net
    objective = make_objective({"name": "flow_matching", "loss": "pseudo_huber"})
    with jax.enable_x64(True), pytest.raises(ValueError, match="per-token objective.loss='l2'"):
        objective.loss_fn(params, apply_fn, _batch(pack_images(IMAGES, PATCH)), KEY)


def _token_config(objective: str):
    from tests.training.conftest import tiny_config

    config = tiny_config()
    config.model = {"name": "tiny_anyres", "patch_size": PATCH}
    config.objective.name = objective
    return config


@pytest.mark.parametrize("objective", ["meanflow", "reflow", "decomposable", "blockwise"])
def test_objectives_without_token_batches_refuse_a_token_source(objective):
    with registered(), pytest.raises(ValueError) as err:
        Experiment(_token_config(objective), data=TokenSource(32))
    message = str(err.value)
    assert "token batches" in message and "objective.name='flow_matching'" in message
    assert "\n" not in message


def test_flow_matching_accepts_a_token_source():
    with registered():
        exp = Experiment(_token_config("flow_matching"), data=TokenSource(32))
    assert exp.token_batches and len(SIZES) == 6
