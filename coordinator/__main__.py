"""``python -m coordinator``: serve the API, import operator exports, load the sample region.

    python -m coordinator serve [--config FILE.toml] [--db PATH] [--host H] [--port P]
    python -m coordinator import FILE.csv|FILE.json [--kind warehouses|skus|stores|inventory|staff]
    python -m coordinator seed-sample [--db PATH]
    python -m coordinator migrate-db SRC.sqlite postgresql://user@host:port/db
    python -m coordinator token create NAME --role R [--store S] [--warehouse W] | list | revoke ID
    python -m coordinator user add NAME --role R | list | password NAME | disable NAME
    python -m coordinator gateway register AGENT WAREHOUSE | list | retire AGENT | import F.csv
    python -m coordinator orders import FILE.xlsx|csv|json|jsonl [--mapping MAP.json]
    python -m coordinator report health [--out report.html] [--json]
    python -m coordinator returns retrain
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from coordinator.auth import cli as auth_cli
from coordinator.catalog import Kind, import_file
from coordinator.db import Database, open_database
from coordinator.errors import CoordinatorError
from coordinator.gateways import cli as gateway_cli
from coordinator.gateways import store as gateway_store
from coordinator.intel import cli as intel_cli
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES, SAMPLE_GATEWAYS
from coordinator.roster_store import import_staff_file
from coordinator.settings import Settings
from protocols.cli import add_version, everywhere
from protocols.clock import SystemClock

STAFF = "staff"


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.load(args.config)
    updates: dict[str, object] = {}
    if getattr(args, "db", None):
        updates["db_path"] = args.db
    if getattr(args, "host", None):
        updates["host"] = args.host
    if getattr(args, "port", None) is not None:
        updates["port"] = args.port
    # validated like the file's values (model_copy would take a bad --db or --port as is)
    return Settings.parse({**settings.model_dump(), **updates}) if updates else settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from coordinator.ops.app import create_app_with_ops
    from coordinator.ops.lease_store import instance_session_name
    from coordinator.serving import SHUTDOWN_GRACE_S, proxy_options

    settings = _settings(args)
    # every PostgreSQL session of this instance carries its name (libpq reads PGAPPNAME):
    # a standby taking over an expired lease ends them all, whichever holds the write
    # lock (coordinator/ops/lease_store.py); the ops sessions name themselves apart
    os.environ.setdefault("PGAPPNAME", instance_session_name(settings.instance))
    # opened (and migrated) once before the server starts: a database that cannot be
    # opened is one line naming it (exit 2), not a server's start-up traceback
    open_database(settings.db_path).conn.close()
    app = create_app_with_ops(settings)
    # per-request access logging costs more than allocating the order: off unless asked
    uvicorn.run(app, host=settings.host, port=settings.port,
                log_level="info", access_log=args.access_log,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S, **proxy_options(app))
    return 0


def _import(args: argparse.Namespace) -> int:
    settings = _settings(args)
    db = open_database(settings.db_path)
    total = 0
    for name in args.files:
        path = Path(name)
        if path.stem == "gateways" and not args.kind:  # the registry rides along
            written = _import_gateways(db, path)
            print(f"{name}: {written} gateways registered in {settings.db_path}")
            continue
        # the staff roster is imported like the catalogue but kept by its own module
        if (args.kind or path.stem.lower()) == STAFF:
            written = import_staff_file(db, path, SystemClock().now())
            what = STAFF
        else:
            kind, written = import_file(db, path, SystemClock().now(),
                                        Kind(args.kind) if args.kind else None)
            what = kind.value
        print(f"{name}: {written} {what} imported into {settings.db_path}")
        total += written
    return 0


def _import_gateways(db: Database, path: Path) -> int:
    rows = gateway_store.parse_gateways(path.read_text(encoding="utf-8-sig"))
    return gateway_store.import_gateways(db, rows, actor="cli:import", now=SystemClock().now())


def _seed(args: argparse.Namespace) -> int:
    settings = _settings(args)
    db = open_database(settings.db_path)
    now = SystemClock().now()
    for name in SAMPLE_FILES:
        kind, written = import_file(db, SAMPLE_DIR / f"{name}.csv", now)
        print(f"sample {kind.value}: {written}")
    print(f"sample gateways: {_import_gateways(db, SAMPLE_GATEWAYS)}")
    print(f"sample staff: {import_staff_file(db, SAMPLE_DIR / 'staff.csv', now)}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from coordinator.migrate_db import migrate_db

    report = migrate_db(args.source, args.destination)
    for table, count in report.rows.items():
        print(f"{table}: {count} rows")
    print(f"verified: row counts match; reserved stock matches the held reservations on "
          f"{report.reservations_checked} stock rows")
    return 0


DB_HELP = "SQLite path or postgresql:// URL (default: settings db_path or $BREAKWATER_DB)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m coordinator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the HTTP API, the ops side and the dashboard")
    serve.add_argument("--db", help=DB_HELP)
    serve.add_argument("--host", help="address to listen on (default: settings host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: settings port, 8000)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(run=_serve)
    imp = sub.add_parser("import", help="import CSV/JSON exports (all rows or none)")
    imp.add_argument("files", nargs="+", help="CSV or JSON files (warehouses, skus, staff ...)")
    imp.add_argument("--kind", choices=[*(k.value for k in Kind), STAFF],
                     help="what the file holds (default: from its name)")
    imp.add_argument("--db", help=DB_HELP)
    imp.set_defaults(run=_import)
    seed = sub.add_parser("seed-sample", help="load the shipped Hangzhou sample region")
    seed.add_argument("--db", help=DB_HELP)
    seed.set_defaults(run=_seed)
    migrate = sub.add_parser("migrate-db", help="copy a SQLite database into PostgreSQL")
    migrate.add_argument("source", help="SQLite path (or sqlite:///path)")
    migrate.add_argument("destination", help="postgresql://user@host:port/db (empty)")
    migrate.set_defaults(run=_migrate)
    auth_cli.add_commands(sub, _settings)
    gateway_cli.add_commands(sub, _settings)
    intel_cli.add_commands(sub, _settings)
    # before or after the subcommand: `--config F serve` and `serve --config F` both work
    everywhere(parser, "--config", default=None, metavar="FILE",
               help="TOML settings file (default: $BREAKWATER_CONFIG)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except CoordinatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
