"""The four command lines behave alike: --version, every option explained, options before
or after the subcommand, subcommands in the usage line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable

import pytest

from benchmarks.runner import build_parser as benchmarks_parser
from coordinator.__main__ import build_parser as coordinator_parser
from edge_agent.__main__ import build_parser as edge_parser
from edge_agent.__main__ import main as edge_main
from protocols.cli import undocumented
from simulators.__main__ import build_parser as simulators_parser

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "coordinator": coordinator_parser, "edge_agent": edge_parser,
    "simulators": simulators_parser, "benchmarks": benchmarks_parser,
}


@pytest.mark.parametrize("module", sorted(PARSERS))
def test_every_entry_point_prints_its_version(module: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"python -m {module} (breakwater) ")


@pytest.mark.parametrize("module", sorted(PARSERS))
def test_every_option_and_argument_says_what_it_does(module: str) -> None:
    assert undocumented(PARSERS[module]()) == []


@pytest.mark.parametrize("argv", [
    ["--config", "site.toml", "serve", "--port", "8100"],
    ["serve", "--config", "site.toml", "--port", "8100"],
])
def test_coordinator_config_goes_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = coordinator_parser().parse_args(argv)
    assert (args.command, args.config, args.port) == ("serve", "site.toml", 8100)


def test_coordinator_config_defaults_to_none_and_reaches_nested_commands() -> None:
    assert coordinator_parser().parse_args(["seed-sample"]).config is None
    nested = coordinator_parser().parse_args(["report", "health", "--config", "c.toml"])
    assert nested.config == "c.toml"


def test_the_edge_agents_usage_shows_its_subcommands() -> None:
    parser = edge_parser()
    assert "COMMAND" in parser.format_usage()
    text = parser.format_help()
    for name in ("check", "new-incarnation", "command", "replay"):
        assert name in text
    with pytest.raises(SystemExit) as stop:
        edge_main(["--log-level", "INFO"])
    assert stop.value.code == 2  # no --config and no command: a clear usage error
