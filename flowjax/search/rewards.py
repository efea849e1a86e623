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
    :mod:`flowjax.models.digits_classifier` (trained once and cached; images are clipped to
    ``[-1, 1]`` as the classifier expects).
``constant``
    ``R(x) = value``: no preference; every search method then reduces to plain sampling.

Each reward declares the data it fits in its ``data`` attribute (a data set name such as
``"8gaussians"``, or ``None`` for any data); :func:`check_reward_fits` refuses a reward on a
run trained on other data (``toy_mode``'s modes are 8gaussians' centres, meaningless on a
checkerboard). Your own reward: ``make_reward("module:function")`` or
``make_reward("path/to/file.py:function")`` imports ``function``, a jit-able
``R(x [B, ...]) -> [B]`` (give it a ``data`` attribute to declare what it fits).
"""

from __future__ import annotations

import importlib
import os
from typing import Callable

import jax
import jax.numpy as jnp

from flowjax.config_files import load_module
from flowjax.data.toy2d import eight_gaussians_centres
from flowjax.models import digits_classifier as dc
from flowjax.registry import Registry
from flowjax.spec import coerce, parse_spec

Reward = Callable[[jax.Array], jax.Array]

_REWARDS: Registry[Callable[..., Reward]] = Registry("reward")
_FITS: dict[str, str | None] = {}


def register_reward(name: str, factory: Callable[..., Reward], data: str | None = None) -> None:
    """Register ``factory(**kwargs) -> R`` under ``name`` (for :func:`make_reward` and the CLI);
    ``data`` names the data set its rewards fit (``None``: any). A reward the factory returns
    may state its own ``data`` attribute (``toy_mode`` with a given centre fits any 2-D data)."""
    _REWARDS[name] = factory
    _FITS[name] = data


def reward_data(name: str) -> str | None:
    """The data set that the registered reward ``name`` fits (``None``: any)."""
    _REWARDS[name]  # unknown reward 'x'; choose one of [...]
    return _FITS[name]


def reward_names() -> list[str]:
    return sorted(_REWARDS)


def parse_reward_spec(spec: str) -> tuple[str, dict[str, float]]:
    """``"toy_mode,mode=3"`` -> ``("toy_mode", {"mode": 3.0})``."""
    return parse_spec(spec, kind="reward spec", example="toy_mode,mode=3")


def make_reward(spec: str, **overrides) -> Reward:
    """A reward from a spec ``"name,key=value,..."`` (``overrides`` are passed to the factory),
    or your own function from ``"module:function"`` / ``"path/to/file.py:function"``.

    The result has a ``data`` attribute: the data set it fits (``None``: any).
    """
    if ":" in str(spec).split(",", 1)[0]:
        if overrides or "," in str(spec):
            raise ValueError(
                f"reward {spec!r}: a reward given as module:function takes no options; "
                "bind them inside your function"
            )
        return load_reward(str(spec))
    name, kwargs = parse_reward_spec(spec)
    factory = _REWARDS[name]
    kwargs = coerce(factory, {**kwargs, **overrides})
    try:
        reward = factory(**kwargs)
    except TypeError as err:
        raise ValueError(f"reward {name!r}: bad options {sorted(kwargs)} ({err})") from None
    if not hasattr(reward, "data"):
        reward.data = _FITS[name]
    return reward


def load_reward(spec: str) -> Reward:
    """Your reward function from ``"module:function"`` (a module on the Python path) or
    ``"path/to/file.py:function"`` (a relative path is taken from the working directory).

    The function is checked to be callable here; its shapes are checked on a batch by the
    search (:func:`flowjax.search.particles.check_reward`). Its ``data`` attribute, if any,
    says what data it fits; otherwise it fits any data.
    """
    where, _, attr = spec.rpartition(":")
    if not where or not attr.isidentifier():
        raise ValueError(f"reward {spec!r}: write module:function or path/to/file.py:function")
    try:
        module = _import_reward_module(where)
    except Exception as err:  # noqa: BLE001 - the user's module; one line, with its error
        raise ValueError(
            f"reward {spec!r}: cannot import {where!r} ({type(err).__name__}: {err}); give a "
            "module on the Python path or an existing path/to/file.py"
        ) from None
    if not hasattr(module, attr):
        raise ValueError(f"reward {spec!r}: {where!r} has no attribute {attr!r}")
    reward = getattr(module, attr)
    if not callable(reward):
        raise ValueError(
            f"reward {spec!r} is not callable (it is a {type(reward).__name__}); give a "
            "function R(x [B, ...]) -> [B]"
        )
    if not hasattr(reward, "data"):
        try:
            reward.data = None
        except AttributeError:  # a builtin or other object without a __dict__: fits any data
            pass
    return reward


def _import_reward_module(where: str):
    if not where.endswith(".py"):
        return importlib.import_module(where)
    path = os.path.abspath(os.path.expanduser(where))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no file {path}")
    return load_module(path)  # executed as config files are


def check_reward_fits(reward_fn: Reward, data_name: str | None, spec: str = "") -> None:
    """Refuse a reward declared for other data than the run's (``data_name``)."""
    fits = getattr(reward_fn, "data", None)
    if fits is not None and data_name is not None and fits != data_name:
        shown = f" {spec!r}" if spec else ""
        raise ValueError(
            f"reward{shown} fits the {fits!r} data but this run was trained on {data_name!r}; "
            "choose a reward for its data or pass your own with --reward=module:function"
        )


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
        data = None  # a point of the user's choice: any 2-D data
    else:
        k = int(mode)
        if k != mode or not 0 <= k < 8:
            raise ValueError(f"toy_mode: mode must be an integer 0..7; got {mode}")
        centre = eight_gaussians_centres()[k]
        data = "8gaussians"

    def reward(p):
        return -jnp.sum((p.reshape(p.shape[0], -1) - centre) ** 2, axis=-1)

    reward.centre = centre
    reward.data = data
    return reward


def digits_class(label: float = 0, cache_dir: str | None = None) -> Reward:
    """``R(x) = log p(label | x)`` of the cached digits classifier, for images ``[B, 8, 8, 1]``
    (or ``[B, 64]``) in ``[-1, 1]``."""

    k = int(label)
    if k != label or not 0 <= k < dc.NUM_CLASSES:
        raise ValueError(f"digits_class: label must be an integer 0..{dc.NUM_CLASSES - 1}")
    extractor = dc.TrainedDigitsClassifier.load_or_train(cache_dir)
    model = dc.DigitsClassifier(**dc.ARCHITECTURE)
    params = jax.tree.map(jnp.asarray, extractor.params)

    def reward(x):
        img = jnp.clip(x.reshape((x.shape[0],) + dc.IMAGE_SHAPE), -1.0, 1.0).astype(jnp.float32)
        logits, _ = model.apply({"params": params}, img)
        return jax.nn.log_softmax(logits, axis=-1)[:, k]

    reward.label = k
    return reward


register_reward("constant", constant)
register_reward("toy_mode", toy_mode, data="8gaussians")
register_reward("digits_class", digits_class, data="sklearn_digits")
