"""The sampler grammar: the strings of ``config.eval.samplers`` and ``flowjax.sample --sampler``.

One parser for every sampler string::

    SPEC   := PIECE ("|" PIECE)* ["@" OPTION ("," OPTION)*]
    PIECE  := SOLVER ":" NFE [":" GRID]
    OPTION := NAME | NAME "=" NUMBER ("/" NUMBER)*

- ``"euler:4"``, ``"dpm++2m:8:logsnr"``, ``"heun:8:shifted,alpha=3"``: a solver, its number of
  velocity evaluations per sample and a time grid (any :func:`flowjax.time.grids.grid_from_spec`
  spec, default ``uniform``; ``learned`` and ``bespoke-NAME`` solvers name settings stored by
  ``flowjax.calibrate``).
- ``"euler:2|heun:4"``: one piece per segment, for an objective whose own sampler integrates
  segment by segment (it declares ``segmented_sampler``).
- ``"euler:8@frn"``, ``"euler:40@tau=0.7,phases=1/1"``: options of the objective's own sampler.
  A flag option sets one keyword of the objective's ``make_sampler`` to a fixed value; a value
  option passes its numbers (joined by ``/``) as a tuple of floats. The grammar knows no option
  names: an objective declares its own (``sampler_options``, a mapping ``name ->``
  :class:`SamplerOption`), and :func:`sampler_keywords` checks a parsed string against that
  declaration, naming the objective's options when one is not among them.

Labels (the suffix of metric names such as ``sw_euler_nfe4``): :func:`sampler_label` for one
piece (``euler_nfe4``, ``dpm++2m_nfe8_logsnr``, ``heun_nfe8_shifted_alpha3``), pieces joined by
``+``, then ``_<flag>`` or ``_<name><v1>-<v2>`` per option (``euler_nfe8_frn``,
``euler_nfe40_tau0.7_phases1-1``), in the order the objective declares its options.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from flowjax.time import grids
from flowjax.types import SamplerOption

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Piece(NamedTuple):
    """One ``solver:nfe[:grid]`` setting."""

    solver: str
    nfe: int
    grid: str = "uniform"


#: Parsed options: ``name -> True`` for a flag (``@frn``), ``name -> (floats)`` for a value
#: option (``@tau=0.7/0.9``), in the order written.
Options = dict[str, Any]


def _piece_error(spec: str) -> ValueError:
    return ValueError(
        f"eval sampler {spec!r} must look like 'solver:nfe' or 'solver:nfe:grid', e.g. "
        "'euler:4' or 'dpm++2m:8:logsnr'"
    )


def parse_sampler_spec(spec: str) -> Piece:
    """``"heun:8"`` -> ``("heun", 8, "uniform")``, ``"dpm++2m:8:logsnr"`` ->
    ``("dpm++2m", 8, "logsnr")``, with a clear error for anything else; the grid part is a
    :func:`flowjax.time.grids.parse_grid_spec` spec (``"heun:8:shifted,alpha=3"``)."""
    name, sep, rest = str(spec).partition(":")
    nfe, _, grid = rest.partition(":")
    if not sep or not nfe.strip().isdigit() or not name.strip():
        raise _piece_error(spec)
    grid = grid.strip() or "uniform"
    grids.parse_grid_spec(grid)  # a grid part in the name,k=v form (or times), checked now
    return Piece(name.strip(), int(nfe), grid)


def sampler_label(name: str, nfe: int, grid: str = "uniform") -> str:
    """Metric label of a sampler setting: ``euler_nfe4``, ``dpm++2m_nfe8_logsnr``."""
    label = f"{name}_nfe{nfe}"
    return label if grid == "uniform" else f"{label}_{grid.replace(',', '_').replace('=', '')}"


def _parse_option(text: str, spec: str) -> tuple[str, Any]:
    name, sep, values = (part.strip() for part in text.partition("="))
    if not _NAME.match(name):
        raise ValueError(
            f"sampler option {text!r} in {spec!r} must be a name or name=numbers, e.g. "
            "'euler:8@frn' or 'euler:40@tau=0.7'"
        )
    if not sep:
        return name, True
    try:
        return name, tuple(float(v) for v in values.split("/"))
    except ValueError:
        raise ValueError(
            f"sampler option {text!r} in {spec!r} needs numbers joined by '/' "
            f"(e.g. '{name}=0.7' or '{name}=0.7/0.9')"
        ) from None


def parse_eval_spec(spec: str) -> tuple[list[Piece], Options]:
    """A sampler string with per-segment pieces and options: ``(pieces, options)``.

    ``"euler:8"`` -> ``([("euler", 8, "uniform")], {})``; ``"euler:2|heun:4"`` -> two pieces;
    ``"euler:8@frn"`` -> ``([...], {"frn": True})``; ``"euler:40@tau=0.7,phases=1/1"`` ->
    ``([...], {"tau": (0.7,), "phases": (1.0, 1.0)})``. Only the form is checked here; which
    options exist is the sampling objective's declaration (:func:`sampler_keywords`).
    """
    body, sep, opts = str(spec).partition("@")
    options: Options = {}
    if sep:
        for text in opts.split(","):
            name, value = _parse_option(text, spec)
            if name in options:
                raise ValueError(f"sampler option {name!r} is given twice in {spec!r}")
            options[name] = value
    pieces = [parse_sampler_spec(piece) for piece in body.split("|")]
    return pieces, options


def _ordered(options: Options, order: Iterable[str]) -> list[str]:
    order = list(order)
    return sorted(options, key=lambda k: order.index(k) if k in order else len(order))


def eval_spec_label(pieces: list[Piece], options: Options, order: Iterable[str] = ()) -> str:
    """Label of :func:`parse_eval_spec`'s result: ``euler_nfe8``, ``euler_nfe2+heun_nfe4_frn``,
    ``euler_nfe40_tau0.7``; options in the order of ``order`` (an objective's declared
    options), the others after them as given."""
    label = "+".join(sampler_label(*piece) for piece in pieces)
    for name in _ordered(options, order):
        value = options[name]
        label += f"_{name}" if value is True else f"_{name}" + "-".join(f"{v:g}" for v in value)
    return label


def format_eval_spec(pieces: list[Piece], options: Options) -> str:
    """The inverse of :func:`parse_eval_spec`: ``"euler:2|heun:4:logsnr@tau=0.7"``."""
    text = "|".join(
        f"{name}:{nfe}" + ("" if grid == "uniform" else f":{grid}") for name, nfe, grid in pieces
    )
    items = [
        name if value is True else f"{name}=" + "/".join(repr(float(v)) for v in value)
        for name, value in options.items()
    ]
    return text + ("@" + ",".join(items) if items else "")


def describe_options(declared: Mapping[str, SamplerOption]) -> str:
    """``"@frn (...), @full (...)"``, or ``"none"``."""
    if not declared:
        return "none"
    return ", ".join(
        opt.usage(name) + (f" ({opt.help})" if opt.help else "") for name, opt in declared.items()
    )


def sampler_keywords(
    pieces: list[Piece],
    options: Options,
    declared: Mapping[str, SamplerOption],
    *,
    segmented: bool,
    owner: str,
) -> dict[str, Any]:
    """The keywords of ``owner``'s ``make_sampler`` for ``options``, checked against its
    declaration (``declared``; ``segmented``: it takes one piece per segment).

    A one-line error names the string, the problem and ``owner``'s options.
    """
    spec = format_eval_spec(pieces, options)
    if len(pieces) > 1 and not segmented:
        raise ValueError(
            f"sampler {spec!r}: per-segment settings ('a|b') are for objectives whose own sampler "
            f"takes them; {owner} takes one 'solver:nfe[:grid]'"
        )
    keywords: dict[str, Any] = {}
    set_by: dict[str, str] = {}
    for name, value in options.items():
        opt = declared.get(name)
        if opt is None:
            raise ValueError(
                f"unknown sampler option {name!r} in {spec!r}; the options of {owner}: "
                f"{describe_options(declared)}"
            )
        if opt.takes_numbers == (value is True):
            raise ValueError(
                f"sampler option {name!r} in {spec!r} is written {opt.usage(name)} for {owner}"
            )
        if opt.keyword in set_by:
            raise ValueError(
                f"sampler options {set_by[opt.keyword]!r} and {name!r} in {spec!r} both set "
                f"{opt.keyword}; give one"
            )
        set_by[opt.keyword] = name
        keywords[opt.keyword] = value if opt.takes_numbers else opt.value
    return keywords


def objective_keywords(objective: Any, pieces: list[Piece], options: Options) -> dict[str, Any]:
    """:func:`sampler_keywords` for ``objective``'s declaration (its ``sampler_options`` and
    ``segmented_sampler``, :class:`flowjax.types.Objective`)."""
    return sampler_keywords(
        pieces,
        options,
        objective.sampler_options,
        segmented=objective.segmented_sampler,
        owner=f"objective {type(objective).__name__}",
    )
