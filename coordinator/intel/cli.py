"""The intel commands of ``python -m coordinator``:

    python -m coordinator orders import FILE.xlsx|csv|json|jsonl [--mapping MAP.json|toml]
    python -m coordinator report health [--out report.html] [--json] [--days 30] [--until T]
    python -m coordinator returns retrain
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from coordinator.db import open_database
from coordinator.errors import ConfigError
from coordinator.imports import detect_format
from coordinator.intel import history, report, report_html, returns
from coordinator.intel.config import IntelConfig
from coordinator.settings import Settings
from protocols.clock import SystemClock

SettingsOf = Callable[[argparse.Namespace], Settings]


def _orders_import(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    settings = settings_of(args)
    db = open_database(settings.db_path)
    mapping = history.load_mapping(Path(args.mapping)) if args.mapping else None
    code = 0
    for name in args.files:
        path = Path(name)
        fmt = detect_format(name=path.name, explicit=args.format)
        _, result = history.import_history(db, path, fmt=fmt, mapping=mapping)
        print(f"{name}: {result.rows_written} rows imported into the order history, "
              f"{result.rows_rejected} rejected")
        for error in result.errors:
            print(f"  row {error.row}, column {error.column}: {error.message}",
                  file=sys.stderr)
        if result.rows_rejected:
            code = 1
    return code


def _report_health(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    settings = settings_of(args)
    config = IntelConfig.of(settings).report
    db = open_database(settings.db_path)
    until = None
    if args.until:
        try:
            until = datetime.fromisoformat(args.until)
        except ValueError as exc:
            raise ConfigError(f"--until: not an ISO time: {args.until!r}") from exc
        if until.tzinfo is None:
            until = until.replace(tzinfo=history.CHINA)
    built = report.build(db, config, until=until, days=args.days)
    if args.json:
        print(json.dumps(built.as_dict(), ensure_ascii=False, indent=2))
    else:
        for axis, value in built.radar.items():
            print(f"{axis:>13}: {'-' if value is None else f'{value * 100:.1f}%'}")
        share = built.near_store["share"]
        print(f"within {config.near_store_km:g} km of a store: "
              f"{'-' if share is None else f'{share * 100:.1f}%'}")
        for channel, delay in built.entry_delay_min.items():
            print(f"entry delay {channel}: p50 {delay['p50']:.1f} min")
        for cycle in built.cycles:
            print(f"fixed cycle {cycle.store}: every {cycle.period_days:g} days "
                  f"(spread {cycle.spread_days:g})")
    if args.out:
        Path(args.out).write_text(report_html.render(built), encoding="utf-8")
        print(f"report written to {args.out}", file=sys.stderr)
    return 0


def _returns_retrain(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    settings = settings_of(args)
    db = open_database(settings.db_path)
    model = returns.retrain(db, SystemClock().now(), trigger="cli")
    print(f"return-reason model version {model.version} trained on {model.examples} examples")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 settings_of: SettingsOf) -> None:
    orders = sub.add_parser("orders", help="order history").add_subparsers(
        dest="orders_command", required=True)
    imp = orders.add_parser("import", help="import past orders (xlsx, csv, json, jsonl) into "
                            "the history tables; bad rows are listed, good rows kept")
    imp.add_argument("files", nargs="+", help="order history exports")
    imp.add_argument("--mapping", help="JSON/TOML file: export header -> field")
    imp.add_argument("--format", choices=["csv", "json", "jsonl", "xlsx"],
                     help="file format (default: from the file name)")
    imp.add_argument("--db", help="SQLite path (default: settings)")
    imp.set_defaults(run=lambda a: _orders_import(a, settings_of))
    rep = sub.add_parser("report", help="reports").add_subparsers(
        dest="report_command", required=True)
    health = rep.add_parser("health", help="the order health radar from the history")
    health.add_argument("--out", help="write the self-contained HTML report here")
    health.add_argument("--json", action="store_true", help="print the figures as JSON")
    health.add_argument("--days", type=int, help="length of the window in days")
    health.add_argument("--until", help="end of the window (ISO; default: latest order)")
    health.add_argument("--db", help="SQLite path (default: settings)")
    health.set_defaults(run=lambda a: _report_health(a, settings_of))
    ret = sub.add_parser("returns", help="return reasons").add_subparsers(
        dest="returns_command", required=True)
    retrain = ret.add_parser("retrain", help="retrain the classifier with corrections now")
    retrain.add_argument("--db", help="SQLite path (default: settings)")
    retrain.set_defaults(run=lambda a: _returns_retrain(a, settings_of))
