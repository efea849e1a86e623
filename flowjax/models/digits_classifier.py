"""A small classifier of the 8x8 digits: the network, its deterministic training and its cache.

Inception features mean nothing on 8x8 grey digits, so sample quality of models trained on
:mod:`flowjax.data.digits_arrays` is measured with a classifier trained here on the same
images (the Fréchet distance on its features, ``fd``, is in
:mod:`flowjax.evaluation.digits_features`); its logits are a search reward
(:mod:`flowjax.search.rewards`) and its spatial features a representation target
(:mod:`flowjax.objectives.blockwise`).

Inputs: images ``[N, 8, 8, 1]`` (NHWC; ``[N, 8, 8]`` and ``[N, 64]`` are reshaped), either
``uint8`` in ``0..255`` (scaled by ``x / 127.5 - 1``) or floats in ``[-1, 1]`` — the range
generated samples arrive in (noise at t=0, data at t=1). Float inputs are clipped to
``[-1, 1]``, as when samples are written out as images.

- Features: the 64 post-ReLU units before the logits. They are trained to separate the ten
  classes, so they respond to stroke shape and class identity rather than to pixel noise.
- The classifier sees +-1 pixel random shifts during training, so features are not tied to
  the exact pixel grid of the training images.
- The classifier is trained deterministically from a fixed seed on the ``train`` split, and
  its parameters are cached on disk under a key that hashes the architecture and the training
  settings, so the numbers made with it are comparable across runs and machines.

Cache: ``$FLOWJAX_CACHE`` or ``~/.cache/flowjax``; one msgpack file per settings hash, written
atomically (temporary file + ``os.replace``). An unreadable or mismatched file is retrained and
rewritten with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowjax import console
from flowjax.data.digits_arrays import IMAGE_SHAPE, NUM_CLASSES, load_digits_numpy

__all__ = [
    "ARCHITECTURE",
    "TRAIN_SETTINGS",
    "DigitsClassifier",
    "TrainedDigitsClassifier",
    "cache_key",
    "default_cache_dir",
    "images_to_model_input",
    "load_weights",
    "save_weights",
    "spatial_features",
]

# Changing any of these changes the cache key, so a stale file is never used. Bump _FORMAT
# when the model or training *code* changes in a way these dictionaries do not record.
ARCHITECTURE = {"conv_features": (16, 32), "feature_dim": 64, "num_classes": NUM_CLASSES}
TRAIN_SETTINGS = {
    "seed": 0,
    "epochs": 40,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "weight_decay": 1e-4,
    "max_shift": 1,
    "data": "sklearn-digits uint8 x/127.5-1, flowjax.data.digits_arrays split v1",
}
_FORMAT = 1
_EVAL_BATCH = 256


def _conv3x3(h_bhwc: jax.Array, features: int, stride: int) -> jax.Array:
    """A 3x3 'SAME' convolution written as patches + dense.

    Same function class as ``nn.Conv``, but the matmul form trains several times faster on a
    CPU for these tiny images (XLA's CPU convolution gradients are slow at this size).
    """
    patches = jax.lax.conv_general_dilated_patches(
        h_bhwc, (3, 3), (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return nn.Dense(features)(patches)


class DigitsClassifier(nn.Module):
    """CNN for ``[B, 8, 8, 1]`` float32 images in ``[-1, 1]``; returns ``(logits, features)``.

    conv3x3(16) - relu - conv3x3/2(32) - relu - flatten(4*4*32) - dense(64) - relu [features
    ``[B, 64]``] - dense(10) [logits ``[B, 10]``]. 38,282 parameters, all float32.
    """

    conv_features: Sequence[int] = (16, 32)
    feature_dim: int = 64
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, x_bhwc: jax.Array) -> tuple[jax.Array, jax.Array]:
        c1, c2 = self.conv_features
        h = nn.relu(_conv3x3(x_bhwc, c1, 1))
        h = nn.relu(_conv3x3(h, c2, 2))
        h = h.reshape(h.shape[0], -1)
        features = nn.relu(nn.Dense(self.feature_dim)(h))
        logits = nn.Dense(self.num_classes)(features)
        return logits, features


_MODEL = DigitsClassifier(**ARCHITECTURE)


@jax.jit
def _apply(params, x_bhwc: jax.Array) -> tuple[jax.Array, jax.Array]:
    return _MODEL.apply({"params": params}, x_bhwc)


def cache_key() -> str:
    """Hex digest identifying the architecture, training settings and file format."""
    blob = json.dumps(
        {"format": _FORMAT, "architecture": ARCHITECTURE, "train": TRAIN_SETTINGS},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> str:
    """``$FLOWJAX_CACHE`` if set, else ``~/.cache/flowjax``."""
    return os.environ.get("FLOWJAX_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "flowjax"
    )


def images_to_model_input(x) -> np.ndarray:
    """Images as the classifier reads them: float32 ``[N, 8, 8, 1]`` in ``[-1, 1]``.

    ``uint8`` input is scaled by ``x / 127.5 - 1``; float input is clipped to ``[-1, 1]``.
    Shapes ``[N, 8, 8, 1]``, ``[N, 8, 8]`` and ``[N, 64]`` are accepted.
    """
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[0] < 1 or int(np.prod(x.shape[1:])) != int(np.prod(IMAGE_SHAPE)):
        raise ValueError(
            f"expected digits images of shape [N, 8, 8, 1] (or [N, 8, 8], [N, 64]) with N >= 1, "
            f"got {x.shape}."
        )
    x = x.reshape((x.shape[0],) + IMAGE_SHAPE)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 127.5 - 1.0
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"images must be uint8 or real floats, got dtype {x.dtype}.")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("images contain NaN or inf; the sampler probably diverged.")
    if np.mean(np.abs(x) > 1.5) > 0.5:
        warnings.warn(
            "most pixel values lie outside [-1.5, 1.5]; the classifier expects floats in "
            "[-1, 1] (uint8 images are scaled automatically). Values are clipped to [-1, 1].",
            stacklevel=3,
        )
    return np.clip(x, -1.0, 1.0)


def _all_shifts(x_bhwc: np.ndarray, max_shift: int) -> np.ndarray:
    """``[S, N, 8, 8, 1]``: every image translated by each ``(dy, dx)`` in
    ``[-max_shift, max_shift]^2`` (``S = (2 max_shift + 1)^2``), background filled with -1."""
    k = max_shift
    h, w = x_bhwc.shape[1:3]
    padded = np.pad(x_bhwc, ((0, 0), (k, k), (k, k), (0, 0)), constant_values=-1.0)
    return np.stack(
        [
            padded[:, k - dy : k - dy + h, k - dx : k - dx + w]
            for dy in range(-k, k + 1)
            for dx in range(-k, k + 1)
        ]
    )


def _train_params(
    settings: dict[str, Any] | None = None, *, progress: bool | None = None
) -> tuple[Any, float]:
    """Train the classifier deterministically on the train split; ``(params, test_accuracy)``.

    All randomness comes from ``settings["seed"]``: the initialisation (``jax.random.key``) and
    the minibatch order and shifts (NumPy ``RandomState``, drawn up front). Each epoch is one
    jitted ``lax.scan`` over its steps (one compilation; bit-identical to one scan over all).
    ``settings`` defaults to ``TRAIN_SETTINGS`` (only those are cached under
    :func:`cache_key`). ``progress`` shows a bar over the epochs (``None``: when stderr is a
    terminal).
    """
    settings = TRAIN_SETTINGS if settings is None else settings
    images, labels = load_digits_numpy("train")
    x = images_to_model_input(images)
    x_shifted = jnp.asarray(_all_shifts(x, settings["max_shift"]))
    y = jnp.asarray(labels, jnp.int32)
    n = x.shape[0]
    bs = settings["batch_size"]
    steps_per_epoch = n // bs
    total = settings["epochs"] * steps_per_epoch
    rs = np.random.RandomState(settings["seed"])
    order = np.concatenate(
        [rs.permutation(n)[: steps_per_epoch * bs] for _ in range(settings["epochs"])]
    ).reshape(total, bs)
    shift_ids = rs.randint(0, x_shifted.shape[0], size=(total, bs))

    params = jax.jit(_MODEL.init)(jax.random.key(settings["seed"]), x[:1])["params"]
    schedule = optax.cosine_decay_schedule(settings["learning_rate"], total)
    tx = optax.adamw(schedule, weight_decay=settings["weight_decay"])

    def loss_fn(p, xb, yb):
        logits, _ = _MODEL.apply({"params": p}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def run_epoch(carry, idx, shift_ids):
        def step(carry, inputs):
            p, opt_state = carry
            idx_b, shift_b = inputs
            loss, grads = jax.value_and_grad(loss_fn)(p, x_shifted[shift_b, idx_b], y[idx_b])
            updates, opt_state = tx.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), loss

        return jax.lax.scan(step, carry, (idx, shift_ids))

    # One jitted scan per epoch (one compilation, the same updates as a single scan over all
    # steps), so a progress bar can follow the epochs.
    carry = (params, tx.init(params))
    order = jnp.asarray(order, jnp.int32).reshape(settings["epochs"], steps_per_epoch, bs)
    shift_ids = jnp.asarray(shift_ids, jnp.int32).reshape(settings["epochs"], steps_per_epoch, bs)
    bar = console.progress_bar(
        settings["epochs"],
        desc="digits classifier",
        unit="epoch",
        enabled=progress,
        first_step_compiles=True,
    )
    with bar:
        for epoch in range(settings["epochs"]):
            carry, losses = run_epoch(carry, order[epoch], shift_ids[epoch])
            if not bar.disable:
                bar.set_postfix(loss=f"{float(losses[-1]):.3f}", refresh=False)
            bar.update(1)
    params = jax.device_get(carry[0])
    test_images, test_labels = load_digits_numpy("test")
    logits = _batched_apply(params, images_to_model_input(test_images))[0]
    return params, float(np.mean(np.argmax(logits, axis=1) == test_labels))


def _batched_apply(params, x_bhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [N, 10], features [N, F])`` in fixed-size padded batches (one compilation)."""
    n = x_bhwc.shape[0]
    pad = -n % _EVAL_BATCH
    xp = np.concatenate([x_bhwc, np.zeros((pad,) + x_bhwc.shape[1:], x_bhwc.dtype)])
    outs = [_apply(params, xp[i : i + _EVAL_BATCH]) for i in range(0, len(xp), _EVAL_BATCH)]
    logits = np.concatenate([np.asarray(o[0]) for o in outs])[:n]
    features = np.concatenate([np.asarray(o[1]) for o in outs])[:n]
    return logits, features


def spatial_features(params, x_bhwc: jax.Array) -> jax.Array:
    """The classifier's second convolution, ``[B, 8, 8, 1] -> [B, 16, 32]``: one 32-dim token per
    2x2 cell of the image (row-major over the 4x4 grid), post-ReLU. Traceable (a jax function
    of float images in ``[-1, 1]``, clipped), for losses that align to the classifier's
    spatial features (Blockwise Flow Matching's representation alignment)."""
    h = jnp.clip(x_bhwc.astype(jnp.float32), -1.0, 1.0)
    for name, stride in (("Dense_0", 1), ("Dense_1", 2)):
        patches = jax.lax.conv_general_dilated_patches(
            h, (3, 3), (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(patches @ params[name]["kernel"] + params[name]["bias"])
    return h.reshape(h.shape[0], -1, h.shape[-1])


def _param_template():
    return jax.eval_shape(_MODEL.init, jax.random.key(0), jnp.zeros((1,) + IMAGE_SHAPE))["params"]


def save_weights(path: str, params, test_accuracy: float) -> None:
    """Write the cache file atomically: a temporary file in the same directory, then rename."""
    payload = {
        "key": cache_key(),
        "test_accuracy": float(test_accuracy),
        "params": flax.serialization.to_state_dict(params),
    }
    data = flax.serialization.msgpack_serialize(payload)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".digits_classifier.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_weights(path: str) -> tuple[Any, float]:
    """``(params, test_accuracy)`` of a cache file, checked; ``ValueError`` if anything
    (the settings key, the tree, shapes, dtypes, finiteness) does not match."""
    with open(path, "rb") as f:
        payload = flax.serialization.msgpack_restore(f.read())
    if not isinstance(payload, dict) or payload.get("key") != cache_key():
        raise ValueError("cache key mismatch")
    template = _param_template()
    params = flax.serialization.from_state_dict(template, payload["params"])
    want = jax.tree_util.tree_structure(template)
    if jax.tree_util.tree_structure(params) != want:
        raise ValueError("parameter tree does not match the architecture")
    for got, ref in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(template), strict=True
    ):
        got = np.asarray(got)
        if got.shape != ref.shape or got.dtype != ref.dtype or not np.all(np.isfinite(got)):
            raise ValueError("parameter shapes, dtypes or values do not match")
    params = jax.tree_util.tree_map(np.asarray, params)
    return params, float(payload["test_accuracy"])


class TrainedDigitsClassifier:
    """The trained classifier: features, logits and accuracy of 8x8 digits images.

    Build it with :meth:`load_or_train`. Attributes: ``params``; ``test_accuracy`` (on the
    ``test`` split, measured after training and stored in the cache); ``from_cache`` (whether
    the parameters were read from disk rather than trained by this call); ``train_seconds``.

    Example::

        classifier = TrainedDigitsClassifier.load_or_train()
        classifier.accuracy(images, labels)   # images in [-1, 1] or uint8
    """

    def __init__(
        self,
        params,
        *,
        test_accuracy: float | None = None,
        from_cache: bool = False,
        train_seconds: float = 0.0,
    ):
        self.params = params
        self.test_accuracy = test_accuracy
        self.from_cache = from_cache
        self.train_seconds = train_seconds

    @classmethod
    def cache_path(cls, cache_dir: str | os.PathLike | None = None) -> str:
        """The file the parameters are cached in for the current settings."""
        directory = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
        return os.path.join(directory, f"digits_classifier-{cache_key()}.msgpack")

    @classmethod
    def load_or_train(cls, cache_dir: str | os.PathLike | None = None):
        """Load the cached classifier, or train it (a few seconds on a CPU) and cache it.

        Args:
          cache_dir: directory of the cache; default ``$FLOWJAX_CACHE`` or ``~/.cache/flowjax``.

        A cache file that cannot be read or does not match the current architecture is
        replaced after a ``UserWarning``; it never raises for a bad cache.
        """
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise ValueError(f"cache_dir must be a path or None, got {cache_dir!r}.")
        path = cls.cache_path(cache_dir)
        if os.path.exists(path):
            try:
                params, acc = load_weights(path)
                return cls(params, test_accuracy=acc, from_cache=True)
            except Exception as err:  # noqa: BLE001 - any unreadable cache means: retrain
                warnings.warn(
                    f"digits classifier cache {path} is unusable ({type(err).__name__}: {err}); "
                    "retraining and overwriting it.",
                    stacklevel=2,
                )
        start = time.perf_counter()
        params, acc = _train_params()
        seconds = time.perf_counter() - start
        save_weights(path, params, acc)
        return cls(params, test_accuracy=acc, from_cache=False, train_seconds=seconds)

    @property
    def feature_dim(self) -> int:
        return ARCHITECTURE["feature_dim"]

    def features(self, x) -> np.ndarray:
        """Penultimate-layer features, float32 ``[N, 64]``, of images (see module docstring)."""
        return _batched_apply(self.params, images_to_model_input(x))[1]

    def spatial_encoder(self):
        """``encode(x [B, 8, 8, 1]) -> [B, 16, 32]``: :func:`spatial_features` with these
        parameters bound (a traceable jax function; the parameters become constants)."""
        params = jax.tree.map(jnp.asarray, self.params)

        def encode(x):
            return spatial_features(params, x)

        return encode

    def logits(self, x) -> np.ndarray:
        """Class logits, float32 ``[N, 10]``."""
        return _batched_apply(self.params, images_to_model_input(x))[0]

    def accuracy(self, x, labels) -> float:
        """Fraction of images whose arg-max logit equals ``labels [N]`` (ints in 0..9)."""
        labels = np.asarray(labels)
        x = images_to_model_input(x)
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape [{x.shape[0]}], got {labels.shape}.")
        return float(np.mean(np.argmax(self.logits(x), axis=1) == labels))
