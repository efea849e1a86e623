"""One name-to-object table for every kind of thing a config or a command line names.

A :class:`Registry` maps names to objects (classes, factories, builders) for one *kind*
(``"solver"``, ``"objective"``, ``"time law"``, ...). It behaves like a ``dict`` (so the
one-line form ``OBJECTIVES["name"] = builder`` and a dict literal at construction both work),
and a lookup of an unknown name raises one error format everywhere::

    unknown solver 'eulr'; choose one of ['dpm++2m', 'euler', 'heun', ...]

The error is a :class:`UnknownName`, a ``ValueError`` (what the public ``make_*`` functions
have always raised) that is also a ``KeyError`` (so ``Mapping`` code such as ``.get`` keeps
its meaning).

Example::

    LOSSES = Registry("loss", {"l2": L2})
    LOSSES.register("pseudo_huber", PseudoHuber)
    LOSSES["pseudo_huber"](c=None)
    LOSSES["huber"]  # ValueError: unknown loss 'huber'; choose one of ['l2', 'pseudo_huber']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """An unknown name in a :class:`Registry` (a ``ValueError`` and a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class Registry(MutableMapping[str, T], Generic[T]):
    """Names -> objects of one ``kind``, in registration order.

    ``registry[name]`` raises :class:`UnknownName` (``unknown <kind> 'x'; choose one of
    [...]``) for a name that is not registered; ``registry[name] = obj`` registers or replaces;
    :meth:`register` registers and refuses to rebind a name to a different object.
    """

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        for name, obj in (entries or {}).items():
            self[name] = obj

    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name`` and return it; registering the same object twice is a
        no-op, binding a taken name to another object is an error."""
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self[name] = obj
        return obj

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def unknown(self, name: object) -> UnknownName:
        """The error for an unknown ``name`` (raise it where a lookup is not by ``[]``)."""
        return UnknownName(f"unknown {self.kind} {name!r}; choose one of {sorted(self._entries)}")

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def __setitem__(self, name: str, obj: T) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} name must be a non-empty string; got {name!r}")
        self._entries[name] = obj

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def registrar(table: Registry[T], name: str, entry: str) -> Callable[[str, T], T]:
    """The public ``register_*`` function of ``table``, called ``name``: ``fn(key, obj) -> obj``
    registers ``obj`` (``entry`` says what it must be) with :meth:`Registry.register`.

    Example: ``register_path = registrar(PATHS, "register_path", "a Path class")``.
    """

    def register(key: str, obj: T) -> T:
        return table.register(key, obj)

    register.__name__ = register.__qualname__ = name
    register.__doc__ = (
        f"Register ``obj`` ({entry}) as the {table.kind} ``key``; returns ``obj``. "
        "Registering the same object again is a no-op; a taken name is an error."
    )
    return register
