"""Settings of authentication (the ``[auth]`` table); the bootstrap admin token comes
from the environment or a file, never the settings file."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from coordinator.errors import ConfigError
from coordinator.secret_source import secret_from
from coordinator.settings import Settings


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    session_ttl_s: float = Field(default=12 * 3600, gt=0, le=30 * 86400,
                                 description="a login lasts this long")
    token_cache_s: float = Field(
        default=2.0, ge=0, le=60,
        description="a token's identity is reused this long (a revocation elsewhere takes "
                    "effect within it); 0: read the database on every request")
    cookie_secure: bool = Field(
        default=False, description="send session cookies only over HTTPS (set it behind TLS)")
    login_max_failures_per_user: int = Field(
        default=5, ge=1, le=1000,
        description="failed logins of one username within the window that lock it out")
    login_max_failures_per_address: int = Field(
        default=20, ge=1, le=100_000,
        description="failed logins from one source address within the window that lock it out")
    login_failure_window_s: float = Field(
        default=900, gt=0, le=86_400, description="failures older than this are forgotten")
    login_lockout_s: float = Field(
        default=900, gt=0, le=86_400, description="how long a lockout lasts")
    admin_token_file: str | None = Field(
        default=None, description="file holding the bootstrap admin token")
    admin_token: SecretStr | None = Field(
        default=None, description="from $BREAKWATER_ADMIN_TOKEN or the file, never the TOML")


def auth_config_of(settings: Settings, env: Mapping[str, str] | None = None) -> AuthConfig:
    environ = os.environ if env is None else env
    raw = dict(settings.section("auth"))
    if "admin_token" in raw:
        raise ConfigError("invalid setting auth.admin_token: secrets are not read from the "
                          "settings file; use $BREAKWATER_ADMIN_TOKEN or admin_token_file")
    try:
        config = AuthConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"invalid setting auth.{where}: {first['msg']}"
        raise ConfigError(message) from exc
    token = secret_from(environ, "BREAKWATER_ADMIN_TOKEN", config.admin_token_file)
    if token is not None and len(token) < 24:
        raise ConfigError("invalid setting BREAKWATER_ADMIN_TOKEN: at least 24 characters")
    return config.model_copy(update={"admin_token": SecretStr(token) if token else None})
