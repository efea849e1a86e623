"""What every command line shares: its ``--help`` and its flag parsing.

:func:`run` answers ``--help`` with the command module's docstring and its own flags (absl's
built-in help lists the flags of the script that started Python, which under the ``flowjax``
console script or a ``python -m`` shim is not the command's module), then hands the command to
:func:`absl.app.run` with :func:`parse_flags`: an unknown flag, a bad value or a missing
required flag is one ``ERROR:`` line and exit 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from absl import app, flags

HELP = ("-h", "--help", "--helpshort", "-?")


def usage(module_name: str) -> str:
    """The command module's docstring, then each of its flags with its one-line explanation."""
    doc = (sys.modules[module_name].__doc__ or "").strip()
    return f"{doc}\n\nflags:\n{flags.FLAGS.module_help(module_name)}\n"


def parse_flags(argv: Sequence[str]) -> list[str]:
    """``flags.FLAGS(argv)``; a flag error is one ``ERROR:`` line and exit status 2."""
    try:
        return flags.FLAGS(list(argv))
    except flags.Error as err:
        message = " ".join(str(err).split())
        print(f"ERROR: bad command-line flag: {message}", file=sys.stderr)
        sys.exit(2)


def run(
    main: Callable[[list[str]], int | None],
    module_name: str,
    argv: Sequence[str] | None = None,
    flags_parser: Callable[[list[str]], list[str]] = parse_flags,
) -> None:
    """Run the command ``main`` of ``module_name`` on ``argv`` (default ``sys.argv``)."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in HELP for a in argv[1:]):
        sys.stdout.write(usage(module_name))
        sys.exit(0)
    app.run(main, argv=argv, flags_parser=flags_parser)


def run_converter(input_flags: Sequence[str], convert: Callable[[], str]) -> None:
    """A weight converter's ``main``: every input file flag must name a file, then
    ``convert()`` writes the output and returns the line to print; a missing file or a
    ``ValueError`` of the conversion is one ``ERROR:`` line and exit status 2."""
    for name in input_flags:
        path = flags.FLAGS[name].value
        if not os.path.isfile(path):
            print(f"ERROR: --{name}: no file {path!r}", file=sys.stderr)
            sys.exit(2)
    try:
        message = convert()
    except ValueError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
    print(message)
