"""The parts of the ``metering`` command line every command shares (private).

Global options are declared once (a function that adds them to a parser) and
accepted at every level of the command tree: before the command, between its
words, or after it. The top level holds their defaults; every copy below it
defaults to ``argparse.SUPPRESS``, so a copy the user did not type sets
nothing and the value given earlier (or the top-level default) stands. Given
twice, the later one wins, as with any repeated option.

A command group typed without its command (``metering``, ``metering plans``)
is not an error message but the group's help on stderr, exit 2: the user
asked for nothing, so nothing goes to stdout (where results go) and a script
that forgot its command fails.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

__all__ = [
    "Parser",
    "add_command",
    "add_commands",
    "duration",
    "package_version",
    "positive_int",
    "spread_global_options",
    "subparsers",
]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Lists commands without a line for the ``COMMAND`` placeholder; keeps epilogs' lines."""

    def _format_action(self, action: argparse.Action) -> str:
        if isinstance(action, argparse._SubParsersAction):
            return "".join(self._format_action(a) for a in action._get_subactions())
        return super()._format_action(action)


class Parser(argparse.ArgumentParser):
    """Bad usage is one line on stderr naming the help to read, exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


#: Adds the global options to a parser (or an argument group); ``default`` is
#: called with each option's real default and returns the default to declare.
GlobalOptions = Callable[[argparse._ActionsContainer, Callable[[Any], Any]], None]


def add_commands(parser: argparse.ArgumentParser, dest: str) -> Any:
    """Subcommands of ``parser``; typing ``parser``'s words alone prints its help."""
    parser.set_defaults(help_of=parser)
    return parser.add_subparsers(
        dest=dest, title="commands", metavar="COMMAND", parser_class=type(parser)
    )


def add_command(commands: Any, name: str, text: str, **kwargs: Any) -> argparse.ArgumentParser:
    """One subcommand, with ``text`` both in its group's list and atop its own help."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=text, description=text[:1].upper() + text[1:] + ".", **kwargs
    )
    return parser


def subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parsers directly below ``parser`` (argparse has no public walk)."""
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if id(sub) not in seen:  # an alias maps to the same parser
                    seen.add(id(sub))
                    yield sub


def spread_global_options(parser: argparse.ArgumentParser, declare: GlobalOptions) -> None:
    """Declare the global options at the top of ``parser`` and on every parser below."""
    declare(parser.add_argument_group("global options (before or after the command)"), _same)
    _spread_below(parser, declare)


def _spread_below(parser: argparse.ArgumentParser, declare: GlobalOptions) -> None:
    for sub in subparsers(parser):
        declare(sub.add_argument_group("global options"), _suppressed)
        _spread_below(sub, declare)


def _same(value: Any) -> Any:
    return value


def _suppressed(value: Any) -> Any:
    return argparse.SUPPRESS


def duration(unit: str) -> Callable[[str], float]:
    """A parser of a non-negative, finite number of ``unit`` that fits a timedelta."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit}") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be zero or more {unit}")
        try:
            timedelta(**{unit: value})
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{text!r} {unit} is too long") from None
        return value

    return parse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def package_version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``unknown`` when run from a bare checkout."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"
