"""What the four command lines (``python -m coordinator``, ``edge_agent``, ``simulators``,
``benchmarks``) have in common: ``--version``, options accepted before or after the
subcommand, and a check that every option says what it does.

In the base install (the gateway's), so the edge agent can use it without the coordinator.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib import metadata
from typing import Any

DIST = "breakwater"


def version_text(prog: str) -> str:
    try:
        version = metadata.version(DIST)
    except metadata.PackageNotFoundError:  # running from a source tree without install
        version = "unknown (not installed)"
    return f"{prog} ({DIST}) {version}"


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=version_text(parser.prog),
                        help="print the version and exit")


def subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser`` (subcommands of subcommands too), depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield child
                yield from subparsers(child)


def everywhere(parser: argparse.ArgumentParser, *names: str, **kwargs: Any) -> None:
    """Accept an option on the main parser AND after any subcommand
    (``python -m coordinator serve --config FILE`` as well as ``--config FILE serve``).
    On subcommands the default is suppressed, so a value given before the subcommand is
    not overwritten by the subcommand's default."""
    parser.add_argument(*names, **kwargs)
    for child in subparsers(parser):
        if not any(set(names) & set(a.option_strings) for a in child._actions):
            child.add_argument(*names, **{**kwargs, "default": argparse.SUPPRESS})


def undocumented(parser: argparse.ArgumentParser) -> list[str]:
    """Options and arguments without a help text, as ``prog option`` (for the tests)."""
    missing = []
    for p in (parser, *subparsers(parser)):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not action.help:
                missing.append(f"{p.prog} {'/'.join(action.option_strings) or action.dest}")
    return missing
