"""The digits reward: log p(class | x) under the cached digits classifier."""

from __future__ import annotations

import jax
import numpy as np

from flowjax.data.digits_arrays import load_digits_numpy
from flowjax.models.digits_classifier import images_to_model_input
from flowjax.search import make_reward
from tests.evaluation.conftest import digits_extractor  # noqa: F401 - the shared fixture


def test_digits_reward_is_the_classifier_log_probability(digits_extractor):  # noqa: F811
    extractor, cache_dir = digits_extractor
    images, labels = load_digits_numpy("test")
    x = images_to_model_input(images[:200])
    logits = extractor.logits(x)
    log_p = (
        logits
        - np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1, keepdims=True))
        - logits.max(1, keepdims=True)
    )
    for label in (0, 7):
        reward = make_reward(f"digits_class,label={label}", cache_dir=cache_dir)
        got = np.asarray(jax.jit(reward)(x))
        np.testing.assert_allclose(got, log_p[:, label], atol=1e-4)
        assert np.all(got <= 0)
        # Images of the class score far higher than the others.
        assert got[labels[:200] == label].mean() > got[labels[:200] != label].mean() + 3
