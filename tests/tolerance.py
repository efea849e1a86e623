"""Comparing two float32 programs that compute the same function in a different order.

Scanned and unrolled layers, sharded and unsharded steps, a custom JVP rule and JAX's own:
XLA may reassociate their sums differently (and differently again on another build or thread
count), so they agree only up to rounding. Reassociating a sum of ``n`` terms changes it by at
most ``(n - 1) eps sum |terms|`` (``eps`` = float32's 2^-23); through a network of small
layers the differences observed are a few ``eps`` times the magnitude of the whole tensor, not
of each element (a near-zero element of a large tensor carries the same absolute error as its
neighbours). So the bound is absolute, per array: ``ulps * eps * max |want|``. The default
``ulps = 64`` leaves a wide margin above what the tiny test models show (under 10) while any
real mismatch (a wrong layer, weight, order or tangent) is of the order of the tensor itself.
"""

from __future__ import annotations

import jax
import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def rounding_bound(want, ulps: float = 64) -> float:
    """``ulps * eps32 * max |want|``: the absolute float32 reassociation bound for an array."""
    scale = float(np.max(np.abs(np.asarray(want, np.float64)))) if np.size(want) else 0.0
    return ulps * EPS32 * scale


def assert_equal_up_to_rounding(got, want, ulps: float = 64, err_msg: str = "") -> None:
    """Every array of the pytree ``got`` equals ``want``'s within :func:`rounding_bound`."""
    got_leaves, tree = jax.tree.flatten(got)
    want_leaves, want_tree = jax.tree.flatten(want)
    assert tree == want_tree, (tree, want_tree)
    for i, (a, b) in enumerate(zip(got_leaves, want_leaves)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert a.shape == b.shape, (i, a.shape, b.shape)
        np.testing.assert_allclose(
            a, b, rtol=0, atol=rounding_bound(b, ulps), err_msg=f"leaf {i} {err_msg}"
        )
