"""The ``name,k=v`` text form, and config sections -> dataclasses.

Text specs
----------
Every short text form in flowjax (training-time laws, inference grids, the grid part of the
eval samplers ``solver:nfe[:grid]``, FreeFlow's samplers, diffusion coefficients, search
rewards) is ``NAME[,key=value...]``, parsed by :func:`parse_spec`::

    parse_spec("logit_normal,loc=0.4,scale=1.5") == ("logit_normal", {"loc": 0.4, "scale": 1.5})

Values are typed by their spelling: ``3`` -> int, ``0.4`` / ``1e-3`` / ``inf`` -> float,
``true`` / ``false`` -> bool, ``none`` -> None (any case), anything else -> str. The consumer
then converts by the target's annotations (:func:`coerce`: an int given to a ``float`` field
becomes a float, so ``scale=1`` builds the same law as ``scale=1.0``). Blank items are
ignored; a missing name, an item without ``=``, an empty key or a repeated key is an error
that shows an example. :func:`format_spec` is the inverse.

Config sections
---------------
:func:`from_section` builds a dataclass from a config section whose keys are the
constructor's arguments: only the keys present are passed (so defaults live once, in the
dataclass), an unknown key is an error naming the valid ones, a missing key without a default
is an error naming it, and per-field conversions are declared by the caller (e.g. a list -> a
tuple for an interval, a text spec -> a law). :func:`from_config` does the same for a named
section of a whole config, which may leave the section out.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WORDS = {"true": True, "false": False, "none": None}


def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.4"`` -> 0.4, ``"true"`` -> True, ``"none"`` -> None, else the text."""
    text = text.strip()
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_spec(
    spec: str, *, kind: str = "spec", example: str = "logit_normal,loc=0.4,scale=1"
) -> tuple[str, dict[str, Any]]:
    """``"name,k=v,..."`` -> ``(name, {k: typed v})``; a clear error otherwise.

    ``kind`` and ``example`` only shape the error message, e.g. ``bad time law 'x,1':
    item '1' is not key=value; write NAME[,key=value...] such as 'logit_normal,loc=0.4'``.
    """

    def error(problem: str) -> ValueError:
        return ValueError(
            f"bad {kind} {spec!r}: {problem}; write NAME[,key=value...] such as {example!r}"
        )

    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts or "=" in parts[0]:
        raise error("it does not start with a name")
    name, kwargs = parts[0], {}
    for item in parts[1:]:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key) or not value.strip():
            raise error(f"item {item!r} is not key=value")
        if key in kwargs:
            raise error(f"key {key!r} is given twice")
        kwargs[key] = parse_value(value)
    return name, kwargs


def format_spec(name: str, kwargs: Mapping[str, Any] | None = None) -> str:
    """The inverse of :func:`parse_spec`: ``("edm", {"rho": 5})`` -> ``"edm,rho=5"``."""
    items = [name]
    for key, value in (kwargs or {}).items():
        if isinstance(value, str):
            text = value
            if "," in text or "=" in text or parse_value(text) != text:
                raise ValueError(f"{key}={value!r} cannot be written in a name,k=v spec")
        elif value is None or isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, (int, float)):
            text = repr(value) if math.isfinite(value) else str(float(value))
        else:
            raise ValueError(f"{key}={value!r} cannot be written in a name,k=v spec")
        items.append(f"{key}={text}")
    return ",".join(items)


def _numbers(annotation: Any) -> set[type]:
    """The plain number types an annotation allows (``float | None`` -> {float})."""
    if annotation in (int, float):
        return {annotation}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {a for a in typing.get_args(annotation) if a in (int, float)}
    return set()


def _hints(target: Callable) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: no conversion by type
        return {}
    if inspect.isclass(target) and not dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target.__init__)
    return hints


def coerce(
    target: Callable,
    kwargs: Mapping[str, Any],
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
) -> dict[str, Any]:
    """``kwargs`` converted for ``target`` (a dataclass or a function).

    A key in ``convert`` goes through its function; otherwise an int given where the
    annotation says ``float`` becomes a float, and an integral float given where it says
    ``int`` becomes an int (``num_steps=2.0`` -> 2). Other values pass unchanged (the
    constructor validates them).
    """
    hints, convert = _hints(target), convert or {}
    out = {}
    for key, value in kwargs.items():
        numbers = _numbers(hints.get(key))
        if key in convert:
            value = convert[key](value)
        elif isinstance(value, bool) or value is None:
            pass
        elif numbers and isinstance(value, str):
            raise ValueError(f"{key} must be a number; got {value!r}")
        elif float in numbers and isinstance(value, int):
            value = float(value)
        elif numbers == {int} and isinstance(value, float) and value.is_integer():
            value = int(value)
        out[key] = value
    return out


def init_fields(cls: type) -> list[str]:
    """The constructor arguments of dataclass ``cls`` (its ``init`` fields), in order."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def check_keys(given: Any, valid: Any, where: str) -> None:
    """Raise ``unknown key(s) [...] in <where>; valid keys: [...]`` for keys not in ``valid``."""
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(valid)}")


def section_kwargs(
    cls: type,
    section: Mapping[str, Any] | None,
    *,
    where: str,
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
    exclude: Any = (),
) -> dict[str, Any]:
    """The constructor arguments of dataclass ``cls`` given in ``section``, converted.

    Only keys present in ``section`` are returned (absent ones take the dataclass default when
    the caller builds ``cls``); ``exclude`` names fields the caller decides (not configurable),
    and any other key is an error naming the valid ones (``where`` names the section).
    """
    section = dict(section or {})
    check_keys(section, [f for f in init_fields(cls) if f not in set(exclude)], where)
    return coerce(cls, section, convert)


def from_section(
    cls: type,
    section: Mapping[str, Any] | None,
    *,
    where: str,
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
    **fixed: Any,
):
    """``cls(**fixed, **configured)``: a dataclass from a config section.

    ``fixed`` are the arguments the caller decides (e.g. ``num_classes`` from the data set);
    they are not configurable. See :func:`section_kwargs` for the rest.

    Example::

        from_section(Dispersive, {"weight": 0.5}, where="objective.dispersive")
        # Dispersive(weight=0.5, <every other field at its default>)
    """
    kwargs = section_kwargs(cls, section, where=where, convert=convert, exclude=fixed)
    missing = [f for f in required_fields(cls) if f not in kwargs and f not in fixed]
    if missing:
        raise ValueError(f"missing key(s) {missing} in {where}; set them in the config")
    return cls(**fixed, **kwargs)


def required_fields(cls: type) -> list[str]:
    """The constructor arguments of dataclass ``cls`` without a default, in order."""
    no_default = dataclasses.MISSING
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is no_default and f.default_factory is no_default
    ]


class Section:
    """Base of a dataclass that declares a config section: ``section`` is its name in the
    config, ``convert`` its per-field conversions (see :func:`from_section`).

    Example::

        @dataclasses.dataclass(frozen=True)
        class MeshSettings(Section):
            section: ClassVar[str] = "mesh"
            data: int = -1

        MeshSettings.from_config(config)  # the defaults where config has no mesh section
    """

    section: ClassVar[str]
    convert: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}

    @classmethod
    def from_config(cls, config: Any):
        """This section of a whole config (:func:`from_config`)."""
        return from_config(cls, config, cls.section, convert=cls.convert)


def from_config(
    cls: type,
    config: Any,
    name: str,
    *,
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
    **fixed: Any,
):
    """:func:`from_section` of the section ``name`` of ``config``.

    A config without that section (or with it set to None) gets every default of ``cls``, so
    a section's defaults are stated once, in its dataclass, whether or not a config has it.
    """
    section = config[name] if name in config else None
    return from_section(cls, section, where=name, convert=convert, **fixed)


def interval(value: Any) -> tuple[float, float] | None:
    """A ``[lo, hi]`` config value as a tuple of floats (None stays None)."""
    return None if value is None else tuple(float(v) for v in value)
