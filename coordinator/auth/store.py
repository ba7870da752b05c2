"""The SQL of API tokens, people's logins and sessions (tables of ``auth.schema``).

Secrets are created here and leave only once, as the return value of :func:`issue_token`
or :func:`open_session`: the database keeps SHA-256 hashes of tokens and session ids
(both are 256-bit random, so a fast hash is enough) and argon2id hashes of passwords
(chosen by people, so a slow, salted hash). Sessions live in the database so any
coordinator instance accepts them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from coordinator.auth.roles import Identity, Role, Scope
from coordinator.db import Database, write_transaction
from coordinator.errors import Conflict, NotFound
from protocols.timestamps import parse_stamp, stamp

TOKEN_PREFIX = "bw_"
_hasher = PasswordHasher()
# verified against when the user does not exist, so a login takes as long either way
# and the answer time does not tell which usernames exist
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _scope_columns(scope: Scope) -> dict[str, str | None]:
    data = scope.as_json()
    return {key: None if value is None else json.dumps(value) for key, value in data.items()}


def _scope_of(stores: str | None, warehouses: str | None) -> Scope:
    return Scope.of(None if stores is None else json.loads(stores),
                    None if warehouses is None else json.loads(warehouses))


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: Role
    scope: Scope
    created_at: str
    created_by: str
    revoked_at: str | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role.value,
                "scope": self.scope.as_json(), "created_at": self.created_at,
                "created_by": self.created_by, "revoked_at": self.revoked_at}


_TOKEN_COLUMNS = "id, name, role, stores, warehouses, created_at, created_by, revoked_at"


def _token(row: Any) -> TokenInfo:
    return TokenInfo(id=row[0], name=row[1], role=Role(row[2]), scope=_scope_of(row[3], row[4]),
                     created_at=row[5], created_by=row[6], revoked_at=row[7])


def issue_token(db: Database, *, name: str, role: Role, scope: Scope, now: datetime,
                created_by: str, secret: str | None = None) -> tuple[TokenInfo, str]:
    """A new token and its secret (returned once, never stored). ``secret`` is for the
    bootstrap admin token an operator provides through the environment; everything else
    gets a fresh random one."""
    value = secret if secret is not None else TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = "tok_" + uuid.uuid4().hex[:12]
    with write_transaction(db):
        db.execute(
            "INSERT INTO auth_tokens (id, name, role, stores, warehouses, token_hash, "
            "created_at, created_by) VALUES (:id, :name, :role, :stores, :warehouses, "
            ":hash, :now, :by)",
            {"id": token_id, "name": name, "role": role.value, **_scope_columns(scope),
             "hash": digest(value), "now": stamp(now), "by": created_by})
    return get_token(db, token_id), value


def get_token(db: Database, token_id: str) -> TokenInfo:
    row = db.execute(f"SELECT {_TOKEN_COLUMNS} FROM auth_tokens WHERE id = :id",
                     {"id": token_id}).fetchone()
    if row is None:
        raise NotFound("token", token_id)
    return _token(row)


def list_tokens(db: Database) -> list[TokenInfo]:
    rows = db.execute(f"SELECT {_TOKEN_COLUMNS} FROM auth_tokens ORDER BY created_at, id")
    return [_token(r) for r in rows.fetchall()]


def revoke_token(db: Database, token_id: str, now: datetime) -> TokenInfo:
    with write_transaction(db):
        found = get_token(db, token_id)
        if found.revoked_at is None:
            db.execute("UPDATE auth_tokens SET revoked_at = :now WHERE id = :id",
                       {"now": stamp(now), "id": token_id})
    return get_token(db, token_id)


def ensure_bootstrap_token(db: Database, secret: str, now: datetime) -> TokenInfo:
    """The admin token given through the environment: issued when its hash is unknown,
    and any other bootstrap token revoked, so changing the variable rotates it."""
    hashed = digest(secret)
    with write_transaction(db):
        row = db.execute("SELECT id FROM auth_tokens WHERE token_hash = :h AND revoked_at "
                         "IS NULL", {"h": hashed}).fetchone()
        if row is not None:
            return get_token(db, row[0])
        db.execute("UPDATE auth_tokens SET revoked_at = :now WHERE created_by = 'environment' "
                   "AND revoked_at IS NULL", {"now": stamp(now)})
        info, _ = issue_token(db, name="bootstrap-admin", role=Role.ADMIN, scope=Scope(),
                              now=now, created_by="environment", secret=secret)
    return info


def identify_token(db: Database, secret: str) -> Identity | None:
    row = db.execute(f"SELECT {_TOKEN_COLUMNS} FROM auth_tokens WHERE token_hash = :h "
                     "AND revoked_at IS NULL", {"h": digest(secret)}).fetchone()
    if row is None:
        return None
    info = _token(row)
    return Identity(kind="token", name=info.name, role=info.role, scope=info.scope,
                    credential_id=info.id)


# -- people ---------------------------------------------------------------------------
@dataclass(frozen=True)
class UserInfo:
    username: str
    role: Role
    scope: Scope
    created_at: str
    disabled_at: str | None

    def as_json(self) -> dict[str, Any]:
        return {"username": self.username, "role": self.role.value,
                "scope": self.scope.as_json(), "created_at": self.created_at,
                "disabled_at": self.disabled_at}


def _user(row: Any) -> UserInfo:
    return UserInfo(username=row[0], role=Role(row[1]), scope=_scope_of(row[2], row[3]),
                    created_at=row[4], disabled_at=row[5])


_USER_COLUMNS = "username, role, stores, warehouses, created_at, disabled_at"


def add_user(db: Database, *, username: str, password: str, role: Role, scope: Scope,
             now: datetime) -> UserInfo:
    with write_transaction(db):
        if db.execute("SELECT 1 FROM auth_users WHERE username = :u",
                      {"u": username}).fetchone() is not None:
            message = f"user {username!r} already exists"
            raise Conflict(message)
        db.execute("INSERT INTO auth_users (username, password_hash, role, stores, warehouses, "
                   "created_at) VALUES (:u, :hash, :role, :stores, :warehouses, :now)",
                   {"u": username, "hash": _hasher.hash(password), "role": role.value,
                    **_scope_columns(scope), "now": stamp(now)})
    return get_user(db, username)


def get_user(db: Database, username: str) -> UserInfo:
    row = db.execute(f"SELECT {_USER_COLUMNS} FROM auth_users WHERE username = :u",
                     {"u": username}).fetchone()
    if row is None:
        raise NotFound("user", username)
    return _user(row)


def list_users(db: Database) -> list[UserInfo]:
    rows = db.execute(f"SELECT {_USER_COLUMNS} FROM auth_users ORDER BY username")
    return [_user(r) for r in rows.fetchall()]


def set_password(db: Database, username: str, password: str) -> None:
    """A new password ends every session of that user."""
    with write_transaction(db):
        get_user(db, username)
        db.execute("UPDATE auth_users SET password_hash = :h WHERE username = :u",
                   {"h": _hasher.hash(password), "u": username})
        db.execute("DELETE FROM auth_sessions WHERE username = :u", {"u": username})


def disable_user(db: Database, username: str, now: datetime) -> UserInfo:
    with write_transaction(db):
        get_user(db, username)
        db.execute("UPDATE auth_users SET disabled_at = :now WHERE username = :u "
                   "AND disabled_at IS NULL", {"now": stamp(now), "u": username})
        db.execute("DELETE FROM auth_sessions WHERE username = :u", {"u": username})
    return get_user(db, username)


def check_password(db: Database, username: str, password: str) -> UserInfo | None:
    """The user when the password is right and the account enabled, else ``None``."""
    row = db.execute("SELECT password_hash FROM auth_users WHERE username = :u "
                     "AND disabled_at IS NULL", {"u": username}).fetchone()
    try:
        _hasher.verify(row[0] if row is not None else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return get_user(db, username) if row is not None else None


# -- sessions -------------------------------------------------------------------------
@dataclass(frozen=True)
class NewSession:
    session_id: str  # the cookie's value: returned once, stored hashed
    csrf_token: str
    expires_at: datetime


def open_session(db: Database, username: str, now: datetime, ttl: timedelta) -> NewSession:
    session = NewSession(secrets.token_urlsafe(32), secrets.token_urlsafe(24), now + ttl)
    with write_transaction(db):
        # expired sessions go when someone logs in: the table stays small without a sweeper
        db.execute("DELETE FROM auth_sessions WHERE expires_at <= :now",
                   {"now": stamp(now)})
        db.execute("INSERT INTO auth_sessions (id_hash, username, csrf_token, created_at, "
                   "expires_at) VALUES (:h, :u, :csrf, :now, :exp)",
                   {"h": digest(session.session_id), "u": username,
                    "csrf": session.csrf_token, "now": stamp(now),
                    "exp": stamp(session.expires_at)})
    return session


def identify_session(db: Database, session_id: str, now: datetime
                     ) -> tuple[Identity, str] | None:
    """The session's user and its CSRF token, when the session is live."""
    row = db.execute(
        "SELECT u.username, u.role, u.stores, u.warehouses, s.csrf_token, s.expires_at "
        "FROM auth_sessions s JOIN auth_users u ON u.username = s.username "
        "WHERE s.id_hash = :h AND u.disabled_at IS NULL",
        {"h": digest(session_id)}).fetchone()
    if row is None or parse_stamp(row[5]) <= now:
        return None
    identity = Identity(kind="user", name=row[0], role=Role(row[1]),
                        scope=_scope_of(row[2], row[3]))
    return identity, row[4]


def close_session(db: Database, session_id: str) -> None:
    with write_transaction(db):
        db.execute("DELETE FROM auth_sessions WHERE id_hash = :h", {"h": digest(session_id)})
