"""Rewards for inference-time search: jit-able batched callables ``R(x [B, ...]) -> [B]``.

A reward is evaluated on Tweedie estimates ``x1_hat`` (data space, t = 1 end) and on final
samples; higher is better. Build one by name with :func:`make_reward` (``"name,k=v"`` specs,
as on the command line) or register your own factory with :func:`register_reward`.

Shipped rewards:

``toy_mode`` (2-D toy data)
    ``R(x) = -||x - c||^2``: closeness to one chosen mode ``c`` of ``8gaussians``
    (``mode=k``, ``c = 2 (cos(k pi/4), sin(k pi/4))``), or to a given point (``x=..,y=..``).
``digits_class`` (8x8 digits)
    ``R(x) = log p(class | x)`` under the small digits classifier of
    :mod:`flowjax.evaluation.digits_features` (trained once and cached; images are clipped to
    ``[-1, 1]`` as the classifier expects).
``constant``
    ``R(x) = value``: no preference; every search method then reduces to plain sampling.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from flowjax.data.toy2d import eight_gaussians_centres
from flowjax.evaluation import digits_features as df
from flowjax.registry import Registry
from flowjax.spec import coerce, parse_spec

Reward = Callable[[jax.Array], jax.Array]

_REWARDS: Registry[Callable[..., Reward]] = Registry("reward")


def register_reward(name: str, factory: Callable[..., Reward]) -> None:
    """Register ``factory(**kwargs) -> R`` under ``name`` (for :func:`make_reward` and the CLI)."""
    _REWARDS[name] = factory


def reward_names() -> list[str]:
    return sorted(_REWARDS)


def parse_reward_spec(spec: str) -> tuple[str, dict[str, float]]:
    """``"toy_mode,mode=3"`` -> ``("toy_mode", {"mode": 3.0})``."""
    return parse_spec(spec, kind="reward spec", example="toy_mode,mode=3")


def make_reward(spec: str, **overrides) -> Reward:
    """A reward from a spec ``"name,key=value,..."``; ``overrides`` are passed to the factory."""
    name, kwargs = parse_reward_spec(spec)
    factory = _REWARDS[name]
    kwargs = coerce(factory, {**kwargs, **overrides})
    try:
        return factory(**kwargs)
    except TypeError as err:
        raise ValueError(f"reward {name!r}: bad options {sorted(kwargs)} ({err})") from None


def constant(value: float = 0.0) -> Reward:
    """``R(x) = value`` for every sample."""

    def reward(x):
        return jnp.full((x.shape[0],), value, jnp.float32)

    return reward


def toy_mode(mode: float | None = 0, x: float | None = None, y: float | None = None) -> Reward:
    """``R(p) = -||p - c||^2`` for 2-D points ``p [B, 2]``; ``c`` = mode ``k`` of 8gaussians, or
    ``(x, y)`` when both are given."""

    if x is not None or y is not None:
        if x is None or y is None:
            raise ValueError("toy_mode: give both x and y for a custom centre")
        centre = jnp.asarray([x, y], jnp.float32)
    else:
        k = int(mode)
        if k != mode or not 0 <= k < 8:
            raise ValueError(f"toy_mode: mode must be an integer 0..7; got {mode}")
        centre = eight_gaussians_centres()[k]

    def reward(p):
        return -jnp.sum((p.reshape(p.shape[0], -1) - centre) ** 2, axis=-1)

    reward.centre = centre
    return reward


def digits_class(label: float = 0, cache_dir: str | None = None) -> Reward:
    """``R(x) = log p(label | x)`` of the cached digits classifier, for images ``[B, 8, 8, 1]``
    (or ``[B, 64]``) in ``[-1, 1]``."""

    k = int(label)
    if k != label or not 0 <= k < df.NUM_CLASSES:
        raise ValueError(f"digits_class: label must be an integer 0..{df.NUM_CLASSES - 1}")
    extractor = df.DigitsFeatureExtractor.load_or_train(cache_dir)
    model = df.DigitsClassifier(**df.ARCHITECTURE)
    params = jax.tree.map(jnp.asarray, extractor.params)

    def reward(x):
        img = jnp.clip(x.reshape((x.shape[0],) + df.IMAGE_SHAPE), -1.0, 1.0).astype(jnp.float32)
        logits, _ = model.apply({"params": params}, img)
        return jax.nn.log_softmax(logits, axis=-1)[:, k]

    reward.label = k
    return reward


register_reward("constant", constant)
register_reward("toy_mode", toy_mode)
register_reward("digits_class", digits_class)
