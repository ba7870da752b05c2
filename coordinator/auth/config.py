"""Settings of authentication (the ``[auth]`` table) and secrets read from the
environment or from files (containers mount secrets as files)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from coordinator.errors import ConfigError
from coordinator.settings import Settings


def secret_from(env: Mapping[str, str], name: str, file: str | None = None) -> str | None:
    """``$NAME``, else the text of the file ``$NAME_FILE`` (or ``file``), stripped.
    The error names the variable or file, never the secret."""
    if env.get(name):
        return env[name].strip()
    path = env.get(f"{name}_FILE") or file
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        message = f"cannot read secret file {path} ({name}_FILE): {exc.strerror}"
        raise ConfigError(message) from exc


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    session_ttl_s: float = Field(default=12 * 3600, gt=0, le=30 * 86400,
                                 description="a login lasts this long")
    cookie_secure: bool = Field(
        default=False, description="send session cookies only over HTTPS (set it behind TLS)")
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
