"""``python -m simulators``: sensors, orders, scenario check, edge-configs, demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from protocols import Topics
from protocols.cli import add_version
from protocols.clock import ManualClock
from simulators.edge_configs import EdgeConfigError, load_edge_configs, routing_table, write_configs
from simulators.event_stream import events, summary
from simulators.region import Region, RegionError, default_region, load_region
from simulators.scenario import Scenario
from simulators.scenario_files import ScenarioError, load_scenario, shipped_scenarios
from simulators.sites import sites

EXIT_INVALID = 2


def _region(path: str | None) -> Region:
    return load_region(path) if path else default_region()


def _add_region(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--region",
        help="region JSON file or directory (default: the coordinator's sample region, "
        "else the built-in one)",
    )


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.file)
        region = _region(args.region)
    except (ScenarioError, RegionError) as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(summary(scenario, region))
    return 0


def _cmd_list(_: argparse.Namespace) -> int:
    for name in shipped_scenarios():
        print(name)
    return 0


def _cmd_edge_configs(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
        region = _region(args.region)
    except (ScenarioError, RegionError) as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_INVALID
    paths = write_configs(
        sites(scenario, region),
        args.out,
        Topics(args.root),
        external_prefix=args.external_prefix,
        mqtt_url=args.mqtt_url,
    )
    for path in paths:
        print(path)
    return 0


def _cmd_logger_csv(args: argparse.Namespace) -> int:
    from simulators.logger_export import write_logger_csv

    try:
        scenario = load_scenario(args.scenario)
        region = _region(args.region)
    except (ScenarioError, RegionError) as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_INVALID
    with args.out.open("w", encoding="utf-8", newline="") as out:
        rows = write_logger_csv(events(scenario, region), args.warehouse, out)
    print(f"{args.out}: {rows} readings of {args.warehouse}")
    return 0


async def _run_sensors(args: argparse.Namespace, scenario: Scenario, region: Region) -> int:
    from simulators.sensors import MqttPublisher, Replayer, parse_speed

    routes = routing_table(load_edge_configs(args.edge_config)) if args.edge_config else None
    async with MqttPublisher(args.url, client_id=args.client_id) as publisher:
        replayer = Replayer(
            scenario,
            publisher,
            ManualClock(scenario.start),
            parse_speed(args.speed),
            region=region,
            seed=args.seed,
            topics=Topics(args.root),
            routes=routes,
            external_prefix=args.external_prefix,
            junk_every=args.junk_every,
            qos=args.qos,
        )
        stats = await replayer.run()
    formats = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_format.items()))
    print(
        f"{scenario.name}: {stats.events} events, {stats.messages} sensor messages ({formats}),"
        f" {stats.tracking} tracking updates, {stats.junk} junk, in {stats.wall_s:.2f} s"
    )
    return 0


def _cmd_sensors(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
        region = _region(args.region)
    except (ScenarioError, RegionError, EdgeConfigError) as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return asyncio.run(_run_sensors(args, scenario, region))


def _cmd_orders(args: argparse.Namespace) -> int:
    from simulators.orders import OrderPostError, order_stream, post_orders, write_jsonl

    try:
        region = _region(args.region)
    except RegionError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_INVALID
    start = datetime.fromisoformat(args.start)
    if start.tzinfo is None:
        print("invalid: --start needs a UTC offset", file=sys.stderr)
        return EXIT_INVALID
    orders = order_stream(region, args.count, seed=args.seed, start=start, per_day=args.per_day)
    if args.out:
        written = write_jsonl(orders, args.out)
        print(f"wrote {written} orders to {args.out}")
        return 0
    try:
        # the credential from the environment, never a command-line argument (ps shows those)
        token = os.environ.get("BREAKWATER_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        stats = asyncio.run(post_orders(orders, args.url, batch=args.batch, rate=args.rate,
                                        headers=headers))
    except OrderPostError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(
        f"posted {stats.sent} orders in {stats.batches} requests in {stats.wall_s:.2f} s;"
        f" statuses {dict(sorted(stats.status_counts.items()))}"
    )
    for error in stats.errors:
        print(f"  {error}", file=sys.stderr)
    return 0 if stats.accepted == stats.batches else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from simulators.demo import run_demo

    return run_demo(
        scenario=args.scenario,
        speed=args.speed,
        workdir=args.workdir,
        port=args.port,
        hold=args.hold,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__)
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scenario = sub.add_parser("scenario", help="scenario files")
    scenario_sub = scenario.add_subparsers(dest="scenario_command", required=True)
    check = scenario_sub.add_parser("check", help="validate a scenario and print a summary")
    check.add_argument("file", help="a scenario file, or the name of a shipped one")
    _add_region(check)
    check.set_defaults(func=_cmd_check)
    listing = scenario_sub.add_parser("list", help="names of the shipped scenarios")
    listing.set_defaults(func=_cmd_list)

    sensors = sub.add_parser("sensors", help="replay a scenario's sensors onto MQTT")
    sensors.add_argument("--scenario", required=True,
                         help="a scenario file, or the name of a shipped one")
    sensors.add_argument("--url", default="mqtt://127.0.0.1:1883", help="broker URL")
    sensors.add_argument("--speed", default="60", help="1, 60, ... or max")
    sensors.add_argument("--seed", type=int, default=None, help="override the file's seed")
    sensors.add_argument("--root", default="breakwater", help="contract topic root")
    sensors.add_argument(
        "--edge-config",
        action="append",
        default=[],
        help="agent config TOML (or a directory of them) giving topics and formats; repeatable",
    )
    sensors.add_argument("--external-prefix", default="", help="prefix for non-native topics")
    sensors.add_argument("--junk-every", type=int, default=0, help="a bad payload every N messages")
    sensors.add_argument("--qos", type=int, choices=(0, 1), default=0,
                         help="QoS of the published readings")
    sensors.add_argument("--client-id", default=None, help="MQTT client id (default: random)")
    _add_region(sensors)
    sensors.set_defaults(func=_cmd_sensors)

    orders = sub.add_parser("orders", help="generate orders; POST them or write JSONL")
    orders.add_argument("--url", default="http://127.0.0.1:8000", help="coordinator base URL")
    orders.add_argument("--count", type=int, default=1000, help="how many orders")
    orders.add_argument("--rate", type=float, default=None, help="orders per second")
    orders.add_argument("--batch", type=int, default=100, help="orders per request (1 = single)")
    orders.add_argument("--per-day", type=int, default=14_000,
                        help="daily volume the arrival times follow")
    orders.add_argument("--seed", type=int, default=1, help="random seed (same seed, same orders)")
    orders.add_argument("--start", default="2026-01-15T00:00:00+08:00",
                        help="first order's time (ISO 8601 with offset)")
    orders.add_argument("--out", default=None, help="write JSONL here instead of posting")
    _add_region(orders)
    orders.set_defaults(func=_cmd_orders)

    configs = sub.add_parser("edge-configs", help="write one edge agent config per warehouse")
    configs.add_argument("--scenario", default="freezing_rain_night",
                         help="a scenario file, or the name of a shipped one")
    configs.add_argument("--out", type=Path, default=Path("edge-configs"),
                         help="directory for the TOML files")
    configs.add_argument("--root", default="breakwater", help="contract topic root")
    configs.add_argument("--external-prefix", default="", help="prefix for non-native topics")
    configs.add_argument(
        "--mqtt-url", default=None, help="add local_mqtt/uplink_mqtt sections for this broker"
    )
    _add_region(configs)
    configs.set_defaults(func=_cmd_edge_configs)

    logger = sub.add_parser(
        "logger-csv", help="one warehouse's readings as a data logger's CSV export"
    )
    logger.add_argument("--scenario", default="freezing_rain_night",
                        help="a scenario file, or the name of a shipped one")
    logger.add_argument("--warehouse", required=True, help="whose readings, e.g. WH-02")
    logger.add_argument("--out", type=Path, required=True, help="the CSV file to write")
    _add_region(logger)
    logger.set_defaults(func=_cmd_logger_csv)

    demo = sub.add_parser("demo", help="the freezing-rain night, end to end")
    demo.add_argument("--scenario", default="freezing_rain_night",
                      help="a scenario file, or the name of a shipped one")
    demo.add_argument("--speed", default="max", help="replay speed: 1, 60, ... or max")
    demo.add_argument("--workdir", type=Path, default=None,
                      help="where the database, configs and notices go (default: a temp dir)")
    demo.add_argument(
        "--port",
        type=int,
        default=None,
        help="dashboard/API port on 127.0.0.1 (default $BREAKWATER_DEMO_PORT or 8000;"
        " a free port when taken)",
    )
    demo.add_argument(
        "--hold",
        action="store_true",
        help="keep the coordinator and dashboard serving after the report, until Ctrl-C",
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
