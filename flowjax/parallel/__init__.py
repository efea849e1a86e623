"""Meshes, logical-axis sharding rules and multi-host helpers."""

from flowjax.parallel.mesh import (
    DEFAULT_AXES,
    MeshSettings,
    make_mesh,
    replicated,
    resolve_mesh_shape,
)
from flowjax.parallel.rules import (
    DEFAULT_RULES,
    ShardingSettings,
    batch_parallel_size,
    batch_sharding,
    bytes_per_device,
    check_divisible,
    rules_from_config,
    state_shardings,
    validate_rules,
)

__all__ = [
    "DEFAULT_AXES",
    "DEFAULT_RULES",
    "MeshSettings",
    "ShardingSettings",
    "make_mesh",
    "replicated",
    "resolve_mesh_shape",
    "rules_from_config",
    "validate_rules",
    "batch_sharding",
    "batch_parallel_size",
    "state_shardings",
    "check_divisible",
    "bytes_per_device",
]
