"""Command line: ``python -m edge_agent --config site.toml`` runs the agent;
``python -m edge_agent check site.toml`` validates a config (exit code 2 when invalid);
``python -m edge_agent new-incarnation site.toml`` gives the state database a new
incarnation (after restoring it from a backup, with the agent stopped);
``python -m edge_agent command site.toml BREAKER KIND --actor NAME --reason TEXT`` signs a
command with the gateway's key and sends it to its agent through the local broker (a
technician on site, without the coordinator);
``python -m edge_agent replay site.toml READINGS`` replays a recorded night through the
site's rules and prints the breaker timeline."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from edge_agent.config import AgentConfig, load_config
from edge_agent.errors import ConfigError, EdgeError
from protocols.cli import add_version


def summary(config: AgentConfig) -> str:
    a = config.agent
    lines = [
        f"agent {a.agent_id} for warehouse {a.warehouse_id}",
        f"  state db:   {config.state_db_path}",
        f"  local MQTT: {config.local_mqtt.url}",
        f"  uplink:     {', '.join(config.uplink_mqtt.broker_urls)}"
        f" (root {config.uplink_mqtt.topic_root!r})",
        f"  sensors:    {len(config.sensors)} in zones "
        + ", ".join(sorted({s.zone for s in config.sensors})),
    ]
    for rule in config.rules:
        limit = f"> {rule.above}" if rule.above is not None else f"< {rule.below}"
        silence = (
            f", silence trips after {rule.silence_trips_after_s:g}s"
            if rule.silence_trips_after_s is not None
            else ""
        )
        combine = rule.combine if rule.at_least is None else f"at least {rule.at_least}"
        lines.append(
            f"  rule {rule.id}: {rule.zone} {rule.metric} {limit} for {rule.for_s:g}s"
            f" (>= {rule.min_readings} readings, {combine} sensor(s))"
            f" -> breaker {rule.breaker}{silence}"
        )
    lines.append("  breakers:   " + ", ".join(b.name for b in config.breakers))
    key = config.command_key_path
    lines.append(
        f"  commands:   signed, key file {key}" if key is not None
        else "  commands:   signed if BREAKWATER_COMMAND_KEY is set, else NOT authenticated"
    )
    return "\n".join(lines)


def _load(path: str) -> AgentConfig | None:
    """The config, or None after saying on stderr what is wrong with it (exit code 2)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return None


def check(path: str) -> int:
    config = _load(path)
    if config is None:
        return 2
    print(f"ok: {path}")
    print(summary(config))
    return 0


def new_incarnation(path: str) -> int:
    from edge_agent.store import open_store

    config = _load(path)
    if config is None:
        return 2
    try:
        store = open_store(config)
    except EdgeError as exc:
        print(f"cannot open the state database: {exc}", file=sys.stderr)
        return 1
    try:
        old = store.incarnation
        created = store.new_incarnation()
    except EdgeError as exc:
        print(f"cannot change the incarnation: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"{config.state_db_path}: incarnation {old} -> {created} "
          f"(seq {store.seq}, session_seq {store.session_seq} continue from there)")
    return 0


def add_command_arguments(parser: argparse.ArgumentParser) -> None:
    from protocols import CommandKind

    parser.add_argument("site", metavar="CONFIG", help="the gateway's TOML file")
    parser.add_argument("breaker", help="the breaker to command (as in the config)")
    parser.add_argument("kind", choices=[k.value for k in CommandKind], help="what to do")
    parser.add_argument("--actor", required=True, help="who acts (audited as local:NAME)")
    parser.add_argument("--reason", required=True, help="why (audited)")
    parser.add_argument("--minutes", type=float, help="how long an override lasts")
    parser.add_argument("--uplink", action="store_true",
                        help="send through the uplink broker instead of the local one")


def command(opts: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from edge_agent.local_command import local_command, publish_command
    from protocols import CommandKind

    config = _load(opts.site)
    if config is None:
        return 2
    try:
        cmd = local_command(config, opts.breaker, CommandKind(opts.kind), actor=opts.actor,
                            reason=opts.reason, now=datetime.now(UTC), minutes=opts.minutes)
        topic = asyncio.run(publish_command(config, opts.breaker, cmd, via_uplink=opts.uplink))
    except ValueError as exc:  # includes CommandKeyError and pydantic's ValidationError
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # aiomqtt.MqttError, OSError: the broker cannot be reached
        print(f"not sent: {exc}", file=sys.stderr)
        return 1
    print(f"sent {cmd.command_id} ({cmd.command.value} on {opts.breaker}) to {topic}; "
          "the agent's audit record says whether it was applied")
    return 0


async def _serve(config: AgentConfig) -> None:
    from edge_agent.agent import EdgeAgent

    agent = EdgeAgent(config)
    task = asyncio.create_task(agent.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def build_parser() -> argparse.ArgumentParser:
    from edge_agent import replay

    parser = argparse.ArgumentParser(prog="python -m edge_agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(parser)
    parser.add_argument("--config", metavar="FILE",
                        help="the gateway's TOML file: run the agent with it")
    parser.add_argument("--log-level", default="INFO",
                        help="DEBUG, INFO (default), WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check_cmd = sub.add_parser("check", help="validate a config; exit 2 naming the field")
    check_cmd.add_argument("site", metavar="CONFIG", help="the gateway's TOML file")
    fresh = sub.add_parser("new-incarnation",
                           help="new incarnation for a restored state database (agent stopped)")
    fresh.add_argument("site", metavar="CONFIG", help="the gateway's TOML file")
    add_command_arguments(sub.add_parser(
        "command", help="sign a breaker command and send it through the local broker"))
    replay.add_arguments(sub.add_parser("replay", help="replay a recorded night through the "
                                        "site's rules", description=replay.DESCRIPTION))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    opts = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if opts.command == "check":
        return check(opts.site)
    if opts.command == "new-incarnation":
        return new_incarnation(opts.site)
    if opts.command == "command":
        return command(opts)
    if opts.command == "replay":
        from edge_agent import replay

        return replay.run(opts)
    if opts.config is None:
        parser.error("--config FILE is required to run the agent (or give a COMMAND)")
    logging.basicConfig(
        level=opts.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = _load(opts.config)
    if config is None:
        return 2
    try:
        asyncio.run(_serve(config))
    except EdgeError as exc:
        print(f"edge agent stopped: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
