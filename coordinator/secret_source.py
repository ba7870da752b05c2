"""Secrets from the environment or from files (containers mount secrets as files), so
they need not sit in the settings file. ``$NAME`` wins, then the file named by
``$NAME_FILE``; errors name the variable or file, never the secret."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from coordinator.errors import ConfigError

# environment variable -> the setting it fills, for the ops side
OPS_SECRETS = {
    "BREAKWATER_WECOM_URL": ("notify", "wecom", "url"),
    "BREAKWATER_SMS_API_KEY": ("notify", "sms", "api_key"),
    "BREAKWATER_MQTT_PASSWORD": ("mqtt", "password"),
}


def secret_from(env: Mapping[str, str], name: str, file: str | None = None) -> str | None:
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


def with_secrets(section: Mapping[str, object], env: Mapping[str, str],
                 wanted: Mapping[str, tuple[str, ...]]) -> dict[str, object]:
    """A settings table with the secrets the environment provides filled in."""
    out: dict[str, object] = dict(section)
    for name, path in wanted.items():
        value = secret_from(env, name)
        if value is None:
            continue
        target = out
        for key in path[:-1]:
            inner = target.get(key)
            target[key] = dict(inner) if isinstance(inner, Mapping) else {}
            target = target[key]  # type: ignore[assignment]
        target[path[-1]] = value
    return out
