"""``python -m coordinator token ...`` and ``user ...``: credentials from the command line
(the first admin, scripts, break-glass). Secrets are printed once and never stored."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable

from coordinator.auth import store
from coordinator.auth.roles import Role, Scope
from coordinator.db import open_database
from coordinator.errors import ConfigError
from coordinator.settings import Settings
from protocols.clock import SystemClock

ROLES = [r.value for r in Role]


def _scope(args: argparse.Namespace) -> Scope:
    return Scope.of(args.store or None, args.warehouse or None)


def _token(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings.db_path)
    now = SystemClock().now()
    if args.action == "create":
        info, secret = store.issue_token(db, name=args.name, role=Role(args.role),
                                         scope=_scope(args), now=now, created_by="cli")
        print(f"token {info.id} ({info.name}, {info.role.value}) created; it is shown once:")
        print(secret)
    elif args.action == "revoke":
        info = store.revoke_token(db, args.name, now)
        print(f"token {info.id} ({info.name}) revoked at {info.revoked_at}")
    else:
        for t in store.list_tokens(db):
            state = f"revoked {t.revoked_at}" if t.revoked_at else "active"
            print(f"{t.id}  {t.name}  {t.role.value}  {t.scope.as_json()}  {state}")
    return 0


def _password(args: argparse.Namespace) -> str:
    # from a variable or the terminal, never an argument (visible in ps and shell history)
    password = os.environ.get("BREAKWATER_PASSWORD") or getpass.getpass(
        f"password for {args.name}: ")
    if len(password) < 12:
        raise ConfigError("password: at least 12 characters")
    return password


def _user(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings.db_path)
    now = SystemClock().now()
    if args.action == "add":
        user = store.add_user(db, username=args.name, password=_password(args),
                              role=Role(args.role), scope=_scope(args), now=now)
        print(f"user {user.username} ({user.role.value}) added")
    elif args.action == "password":
        store.set_password(db, args.name, _password(args))
        print(f"password of {args.name} changed; their sessions ended")
    elif args.action == "disable":
        store.disable_user(db, args.name, now)
        print(f"user {args.name} disabled; their sessions ended")
    else:
        for u in store.list_users(db):
            print(f"{u.username}  {u.role.value}  {u.scope.as_json()}  "
                  f"{'disabled' if u.disabled_at else 'active'}")
    return 0


SettingsOf = Callable[[argparse.Namespace], Settings]
Command = Callable[[argparse.Namespace, Settings], int]


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 settings_of: SettingsOf) -> None:
    """Adds ``token`` and ``user`` to the coordinator's CLI."""
    token = sub.add_parser("token", help="API tokens: create NAME --role R, list, revoke ID")
    token.add_argument("action", choices=["create", "list", "revoke"], help="what to do")
    token.add_argument("name", nargs="?", default="", help="token name (create) or id (revoke)")
    user = sub.add_parser("user", help="logins: add NAME --role R, list, password, disable")
    user.add_argument("action", choices=["add", "list", "password", "disable"],
                      help="what to do")
    user.add_argument("name", nargs="?", default="", help="the person's login name")
    for parser, run in ((token, _token), (user, _user)):
        parser.add_argument("--role", choices=ROLES, default="viewer",
                            help="what the credential may do (default viewer)")
        parser.add_argument("--store", action="append", help="limit to this store (repeat)")
        parser.add_argument("--warehouse", action="append",
                            help="limit to this warehouse (repeat)")
        parser.add_argument("--db", help="SQLite path (default: settings)")
        parser.set_defaults(run=_bound(run, settings_of))


def _bound(run: Command, settings_of: SettingsOf) -> Callable[[argparse.Namespace], int]:
    return lambda args: _checked(args, run, settings_of)


def _checked(args: argparse.Namespace, run: Command, settings_of: SettingsOf) -> int:
    needs_name = args.action in ("create", "revoke", "add", "password", "disable")
    if needs_name and not args.name:
        print(f"error: {args.action} needs a name", file=sys.stderr)
        return 2
    return run(args, settings_of(args))
