"""Logical-axis rules: the table that maps the names models use to the axes of the mesh.

Models annotate every weight dimension with a *logical* name (``"embed"``, ``"mlp"``,
``"heads"`` ...; see :mod:`flowjax.models.dit`) and never mention a mesh axis. The config holds
the table, as data::

    config.sharding.rules = (
        ("batch", ("data", "fsdp")),   # activations / inputs: data parallel over data x fsdp
        ("embed", "fsdp"),             # model width of the weights: FSDP (ZeRO-3) sharding
        ("mlp", "tensor"),             # MLP hidden width: tensor (Megatron) parallel
        ("heads", "tensor"),           # attention heads: tensor parallel
        ...
    )

Each rule is ``(logical_name, mesh_axis | (mesh_axes, ...) | None)``; for a given array, rules
are applied in order, a mesh axis is used at most once per array, and names without a rule are
replicated (flax's ``logical_to_mesh_axes``). A rule naming an axis that the mesh does not have
is a configuration error, reported by :func:`validate_rules` before anything is compiled.

The optimizer state and the EMA copy of the parameters have the parameters' shardings (see
:func:`state_shardings`), so Adam's two moments are sharded like the weights (FSDP).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from flowjax.spec import Section

Rules = tuple[tuple[str, Any], ...]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("layers", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("modulation", "tensor"),
    ("kv", None),
    ("patch", None),
    ("freq", None),
    ("vocab", None),
    ("length", None),
    ("act_embed", None),
)


def _axes_of(target: Any) -> tuple[str, ...]:
    if target is None:
        return ()
    if isinstance(target, str):
        return (target,)
    return tuple(target)


def normalize_rules(rules: Sequence[Any]) -> Rules:
    """Turn a config value (tuples or lists, from Python or the command line) into rules."""
    out = []
    for rule in rules:
        if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
            raise ValueError(
                f"sharding rule {rule!r} must be a pair (logical_name, mesh_axis or tuple of mesh "
                f"axes or None), e.g. ('embed', 'fsdp')"
            )
        name, target = rule
        if target is None or isinstance(target, str):
            out.append((name, target))
        elif isinstance(target, (tuple, list)) and all(isinstance(a, str) for a in target):
            out.append((name, tuple(target)))
        else:
            raise ValueError(
                f"sharding rule {rule!r}: the target must be a mesh axis name, a "
                f"tuple of names, or None"
            )
    return tuple(out)


def validate_rules(rules: Rules, mesh: Mesh) -> Rules:
    """Check that every rule names only axes of ``mesh``; return the rules unchanged."""
    known = set(mesh.axis_names)
    for name, target in rules:
        unknown = [a for a in _axes_of(target) if a not in known]
        if unknown:
            raise ValueError(
                f"sharding rule ({name!r}, {target!r}) names mesh axis {unknown[0]!r}, but the "
                f"mesh has axes {list(mesh.axis_names)}; fix config.sharding.rules or add the "
                f"axis to config.mesh"
            )
    return rules


def _rules_or_default(rules: Sequence[Any] | None) -> Rules:
    return DEFAULT_RULES if rules is None else normalize_rules(rules)


@dataclasses.dataclass(frozen=True)
class ShardingSettings(Section):
    """The ``sharding`` section: ``rules``, the logical-axis rule table (None or left out:
    :data:`DEFAULT_RULES`)."""

    section: ClassVar[str] = "sharding"
    convert: ClassVar = {"rules": _rules_or_default}
    rules: Rules = DEFAULT_RULES


def rules_from_config(config: Any, mesh: Mesh) -> Rules:
    """``config.sharding.rules`` (or :data:`DEFAULT_RULES`), validated against ``mesh``."""
    return validate_rules(ShardingSettings.from_config(config).rules, mesh)


def mesh_axes_for(logical_name: str, rules: Rules) -> tuple[str, ...]:
    """Mesh axes the first rule for ``logical_name`` maps to (``()``: replicated)."""
    for name, target in rules:
        if name == logical_name:
            return _axes_of(target)
    return ()


def batch_sharding(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> NamedSharding:
    """Leading (batch) axis split over the mesh axes of the ``"batch"`` rule."""
    axes = mesh_axes_for("batch", rules)
    return NamedSharding(mesh, P(axes if axes else None))


def batch_parallel_size(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> int:
    """Number of devices the batch is split over (its rows must divide by it)."""
    return math.prod(mesh.shape[a] for a in mesh_axes_for("batch", rules))


def logical_specs(boxed_tree: Any) -> Any:
    """Logical ``PartitionSpec`` of every leaf (``P()`` for unannotated leaves)."""
    return nn.get_partition_spec(boxed_tree)


def state_shardings(boxed_abstract_state: Any, mesh: Mesh, rules: Rules) -> Any:
    """``NamedSharding`` per leaf of an abstract state whose annotated leaves are boxed.

    The state is built with boxed parameters (``LogicallyPartitioned``); ``jax.tree`` maps
    inside the boxes, so Adam's moments and the EMA copy carry the parameters' names and get
    the parameters' shardings. Scalars (step, counters) and the rng are replicated. A box that
    holds no array (optax's ``MaskedNode``: the optimizer state of a frozen parameter group of
    an annotated model) is unboxed first, so it stays an empty node as in the unboxed state.
    """

    def empty_box(x):
        return isinstance(x, nn.Partitioned) and not jax.tree.leaves(x.value)

    state = jax.tree.map(
        lambda x: x.value if empty_box(x) else x,
        boxed_abstract_state,
        is_leaf=lambda x: isinstance(x, nn.Partitioned),
    )
    return nn.logical_to_mesh_sharding(logical_specs(state), mesh, rules)


def check_divisible(abstract: Any, shardings: Any) -> None:
    """Every sharded dimension must divide evenly by its mesh axes (JAX requires it)."""
    paths = jax.tree_util.tree_leaves_with_path(abstract)
    for (path, leaf), sharding in zip(paths, jax.tree.leaves(shardings)):
        spec = tuple(sharding.spec) + (None,) * (len(leaf.shape) - len(sharding.spec))
        for dim, axes in zip(leaf.shape, spec):
            size = math.prod(sharding.mesh.shape[a] for a in _axes_of(axes))
            if dim % size:
                raise ValueError(
                    f"{jax.tree_util.keystr(path)} has shape {tuple(leaf.shape)}; its dimension "
                    f"{dim} is sharded over mesh axes {axes} of total size {size}, which does "
                    f"not divide it. Change the model width/heads, the mesh "
                    f"({dict(sharding.mesh.shape)}) or config.sharding.rules"
                )


def bytes_per_device(abstract: Any) -> int:
    """Bytes the largest shard of each leaf occupies on one device, summed over leaves."""
    total = 0
    for leaf in jax.tree.leaves(abstract):
        shape = leaf.shape
        sharding = getattr(leaf, "sharding", None)
        if sharding is not None:
            shape = sharding.shard_shape(shape)
        total += math.prod(shape) * leaf.dtype.itemsize
    return total
