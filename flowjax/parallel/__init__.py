"""Meshes and shardings (see the DiT issue for logical-axis rules and multi-host)."""

from flowjax.parallel.mesh import (
    batch_sharding,
    data_parallel_size,
    make_mesh,
    replicated,
    resolve_mesh_shape,
)

__all__ = ["make_mesh", "batch_sharding", "replicated", "data_parallel_size", "resolve_mesh_shape"]
