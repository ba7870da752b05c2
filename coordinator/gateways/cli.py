"""``python -m coordinator gateway ...``: the registry from the command line.

    gateway register AGENT WAREHOUSE | list | retire AGENT --reason TEXT
    gateway import gateways.csv
    gateway key AGENT --out FILE        # the gateway's command key file (mode 0600)
    gateway rotate-key AGENT --out FILE

Confirming a replaced gateway's new incarnation goes through the running coordinator
(``POST /gateways/{agent}/confirm-incarnation``): it applies what the gateway held back.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from coordinator.db import open_database
from coordinator.gateways import store
from coordinator.gateways.broker_auth import broker_auth, write_files
from coordinator.settings import Settings
from protocols import Topics
from protocols.clock import SystemClock

SettingsOf = Callable[[argparse.Namespace], Settings]
ACTOR = "cli:" + os.environ.get("USER", "operator")


def write_key_file(path: Path, key: str) -> None:
    """Written readable by its owner only: it is the gateway's signing secret."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")


def _run(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings.db_path)
    now = SystemClock().now()
    action = args.action
    if action == "list":
        for g in store.list_gateways(db):
            pending = f" pending {g.pending_incarnation}" if g.pending_incarnation else ""
            print(f"{g.agent_id}  {g.warehouse_id}  incarnation {g.incarnation}{pending}")
        return 0
    if action == "import":
        rows = store.parse_gateways(Path(args.target).read_text(encoding="utf-8-sig"))
        print(f"{store.import_gateways(db, rows, actor=ACTOR, now=now)} gateways imported")
        return 0
    if not args.target:
        print(f"error: {action} needs an agent id", file=sys.stderr)
        return 2
    if action == "register":
        if not args.warehouse:
            print("error: register needs a warehouse id", file=sys.stderr)
            return 2
        info = store.register(db, args.target, args.warehouse, actor=ACTOR, now=now)
        print(f"{info.agent_id} registered for {info.warehouse_id}")
    elif action == "retire":
        store.retire(db, args.target, actor=ACTOR, reason=args.reason or "retired", now=now)
        print(f"{args.target} retired: run mqtt-auth again to drop its broker account")
    elif action in ("key", "rotate-key"):
        if not args.out:
            print("error: --out FILE is required (a key is never printed)", file=sys.stderr)
            return 2
        key = (store.rotate_key(db, args.target, actor=ACTOR, now=now) if action == "rotate-key"
               else store.command_key(db, args.target))
        write_key_file(Path(args.out), key)
        print(f"command key of {args.target} written to {args.out}")
    return 0


def _mqtt_auth(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings.db_path)
    auth = broker_auth(store.list_gateways(db), Topics(settings.topic_root))
    out = Path(args.out)
    write_files(auth, out, rotate=args.rotate or ())
    print(f"{len(auth.accounts)} broker accounts ({len(auth.accounts) - 2} gateways) written "
          f"to {out}: mosquitto.passwd, mosquitto.acl, nats-auth.conf, credentials/")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 settings_of: SettingsOf) -> None:
    mqtt = sub.add_parser("mqtt-auth", help="broker password file and ACL (Mosquitto) and "
                                            "authorization (NATS) from the gateway registry")
    mqtt.add_argument("--out", required=True, help="directory to write")
    mqtt.add_argument("--rotate", action="append", help="issue a new password for USER")
    mqtt.add_argument("--db", help="SQLite path (default: settings)")
    mqtt.set_defaults(run=lambda args: _mqtt_auth(args, settings_of(args)))
    parser = sub.add_parser("gateway", help="the gateway registry: register, list, retire, "
                                            "import, key, rotate-key")
    parser.add_argument("action", choices=["register", "list", "retire", "import", "key",
                                           "rotate-key"], help="what to do")
    parser.add_argument("target", nargs="?", default="", help="agent id (import: the CSV)")
    parser.add_argument("warehouse", nargs="?", default="", help="register: warehouse id")
    parser.add_argument("--reason", help="why (audited; retire)")
    parser.add_argument("--out", help="key file to write")
    parser.add_argument("--db", help="SQLite path (default: settings)")
    parser.set_defaults(run=lambda args: _run(args, settings_of(args)))
