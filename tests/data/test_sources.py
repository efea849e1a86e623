"""Training sources: the toy source's fused device batch equals its per-process batches."""

import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.data import ToySource


def test_toy_device_batch_is_the_concatenation_of_process_batches():
    shards = [
        ToySource("8gaussians", batch_size=8, seed=3, shard_index=i, shard_count=2)
        for i in range(2)
    ]
    for step in (0, 5):
        rows = np.concatenate([np.asarray(s.get_batch(step)["x1"]) for s in shards])
        fused = np.asarray(shards[0].device_batch(jnp.int32(step))["x1"])
        # Same random bits; XLA may fuse the arithmetic differently inside the step (1 ulp).
        np.testing.assert_allclose(rows, fused, rtol=1e-6, atol=1e-6)
    assert not np.array_equal(shards[0].device_batch(0)["x1"], shards[0].device_batch(1)["x1"])


def test_batch_layout_tiles_each_global_batch():
    from flowjax.data import BatchLayout

    layouts = [BatchLayout(12, i, 3) for i in range(3)]
    rows = np.concatenate([np.arange(12)[layout.rows] for layout in layouts])
    np.testing.assert_array_equal(rows, np.arange(12))
    # Stream positions: batch k, process i, row r -> k B + i b + r; all distinct, no gaps.
    positions = sorted(p.position(k, r) for p in layouts for k in range(2) for r in range(4))
    assert positions == list(range(24))
    with pytest.raises(ValueError, match="not divisible"):
        BatchLayout(10, 0, 3)
