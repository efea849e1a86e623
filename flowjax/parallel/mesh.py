"""Device meshes from config.

The mesh is data: ``config.mesh`` maps axis names to sizes, e.g.
``{"data": -1, "fsdp": 1, "tensor": 1}`` where ``-1`` means "all remaining devices". The batch
is sharded over ``("data", "fsdp")``. Axes are created with ``AxisType.Auto`` so sharding
propagation works as in classic pjit (``jax.make_mesh`` would default to Explicit axes).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DEFAULT_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def resolve_mesh_shape(axes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Replace a single ``-1`` by the remaining device count and check the product."""
    axes = {str(k): int(v) for k, v in dict(axes).items()}
    unknown = [k for k, v in axes.items() if v == -1]
    if len(unknown) > 1:
        raise ValueError(f"at most one mesh axis may be -1; got {axes}")
    for k, v in axes.items():
        if v == 0 or v < -1:
            raise ValueError(f"mesh axis {k!r} has invalid size {v}; use a positive size or -1")
    known = math.prod(v for v in axes.values() if v != -1)
    if unknown:
        if num_devices % known:
            raise ValueError(
                f"mesh {axes}: the fixed axes use {known} devices, which does not divide the "
                f"{num_devices} available devices"
            )
        axes[unknown[0]] = num_devices // known
    if math.prod(axes.values()) != num_devices:
        raise ValueError(
            f"mesh {axes} has {math.prod(axes.values())} devices but {num_devices} are available; "
            f"make the product of the axis sizes equal {num_devices} or set one axis to -1"
        )
    return axes


def make_mesh(axes: Mapping[str, int] | None = None, devices: Sequence | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    axes = resolve_mesh_shape(axes or {"data": -1}, len(devices))
    names = tuple(axes)
    shape = tuple(axes[n] for n in names)
    device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, names, axis_types=(AxisType.Auto,) * len(names))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in batch_axes(mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data-parallel axes, the rest replicated."""
    return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
