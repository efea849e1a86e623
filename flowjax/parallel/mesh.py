"""Device meshes from config.

The mesh is data: the ``config.mesh`` section (:class:`MeshSettings`) gives the size of each
of the axes ``data``, ``fsdp`` and ``tensor``, e.g. ``{"data": -1, "fsdp": 1, "tensor": 1}``
where ``-1`` means "all remaining devices"; an axis the section leaves out takes its default
(``data=-1``, ``fsdp=1``, ``tensor=1``; no section at all: every device on ``data``), and an
unknown axis name is refused (a misspelt axis would otherwise be an unused axis that silently
replicates the work). The three axes are always present, so the default rule table of
:mod:`flowjax.parallel.rules` is valid on any mesh. :func:`make_mesh` itself takes any axes
(extra ones for a rule table that names them). The batch is sharded over
``("data", "fsdp")`` (the ``batch`` rule).

Axes are created with ``AxisType.Auto``: shardings of intermediate values are chosen by the
compiler's propagation from the in/out shardings and the logical constraints the model sets,
as in classic pjit. (``jax.make_mesh`` now defaults to ``Explicit`` axes, where every array's
sharding is part of its type and must be resolved by hand at each op; not what we want.)
Devices are laid out by ``jax.make_mesh``, which on TPU follows the physical topology.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Mapping, Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from flowjax.spec import Section

DEFAULT_AXES = ("data", "fsdp", "tensor")


@dataclasses.dataclass(frozen=True)
class MeshSettings(Section):
    """The ``mesh`` section: the size of each standard axis (``-1``: the remaining devices)."""

    section: ClassVar[str] = "mesh"
    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def axes(self) -> dict[str, int]:
        """Axis name -> size, in the order ``data, fsdp, tensor`` (:func:`make_mesh`'s input)."""
        return {name: int(getattr(self, name)) for name in DEFAULT_AXES}


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
    """A mesh over ``devices`` (default: all devices of all processes) with the given axes.

    Standard axes missing from ``axes`` are added with size 1, after the given ones.
    """
    devices = list(jax.devices() if devices is None else devices)
    axes = dict(axes or {"data": -1})
    for name in DEFAULT_AXES:
        axes.setdefault(name, 1)
    axes = resolve_mesh_shape(axes, len(devices))
    names = tuple(axes)
    shape = tuple(axes[n] for n in names)
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
