"""Coordinator settings: defaults, then an optional TOML file, then environment variables.

Environment variables (each overrides the file):

- ``BREAKWATER_CONFIG``: path of a TOML file (same shape as :class:`Settings`)
- ``BREAKWATER_DB``: the database: a SQLite path (or ``sqlite:///path``), or
  ``postgresql://user@host:port/dbname`` (PostgreSQL 15+)
- ``BREAKWATER_HOST`` / ``BREAKWATER_PORT``: HTTP bind address
- ``MQTT_URL``: broker URL, e.g. ``mqtt://127.0.0.1:1883`` or ``mqtts://mq.example.com`` (TLS);
  several, comma-separated, for a broker cluster (the coordinator moves to the next on failure)
- ``BREAKWATER_INSTANCE``: this instance's name (MQTT client id, lease holder); default
  ``<hostname>-<port>``
- ``BREAKWATER_TOPIC_ROOT``: MQTT topic root
- ``BREAKWATER_SKEW_THRESHOLD_S``: client clock skew that flags an order

Other modules keep their own table in the same file (``[ops]``): unknown top-level tables
land in ``Settings.sections`` raw, and ``settings.section("ops")`` hands the module its
table to validate with its own model.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from coordinator.errors import ConfigError
from protocols.mqtt_url import MqttUrlError, parse_mqtt_url


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelRule(_Section):
    """How a sales channel changes fulfilment: ``tier_shift`` -1 means one tier faster."""

    tier_shift: int = Field(default=0, ge=-5, le=5)
    force_cold_chain: bool = False


class TierPromise(_Section):
    """What a tier promises: warehouse handling minutes before the courier leaves."""

    name: str
    handling_minutes: float = Field(ge=0, le=7 * 24 * 60)


def _default_tiers() -> dict[int, TierPromise]:
    return {
        1: TierPromise(name="express", handling_minutes=30),
        2: TierPromise(name="standard", handling_minutes=120),
        3: TierPromise(name="economy", handling_minutes=480),
    }


def _default_channel_rules() -> dict[str, ChannelRule]:
    return {"meituan": ChannelRule(tier_shift=-1, force_cold_chain=True)}


class AllocationConfig(_Section):
    """The rule set of the three-layer engine. Its :attr:`version` is recorded per decision."""

    rule_set_name: str = Field(default="breakwater-rules-1", min_length=1, max_length=64)
    nearest: int = Field(default=3, ge=1, le=50, description="geofence keeps this many")
    reservation_threshold: float = Field(
        default=0.85, gt=0, le=1, description="drop a warehouse above this reservation rate"
    )
    # per_sku: the rate of the order's SKUs at the warehouse (worst line);
    # warehouse: the rate of everything the warehouse holds (docs/coordinator.md)
    reservation_scope: Literal["per_sku", "warehouse"] = Field(
        default="per_sku", description="what the reservation rate is measured over"
    )
    weight_distance: float = Field(default=0.6, ge=0, le=1)
    weight_depth: float = Field(default=0.4, ge=0, le=1)
    default_tier: int = Field(default=2, ge=1)
    tiers: dict[int, TierPromise] = Field(default_factory=_default_tiers)
    channel_rules: dict[str, ChannelRule] = Field(default_factory=_default_channel_rules)
    split_shipments: bool = False
    max_parts: int = Field(default=2, ge=1, le=10)
    courier_speed_kmh: float = Field(default=30.0, gt=0, le=200)
    trace_limit: int = Field(
        default=40, ge=3, le=1000, description="most dropped candidates kept in one trace"
    )

    @model_validator(mode="after")
    def _consistent(self) -> AllocationConfig:
        if self.default_tier not in self.tiers:
            message = f"default_tier {self.default_tier} is not one of tiers {sorted(self.tiers)}"
            raise ValueError(message)
        if self.weight_distance + self.weight_depth <= 0:
            raise ValueError("weight_distance + weight_depth must be positive")
        return self

    @cached_property
    def version(self) -> str:
        """``name+hash``: two configs with the same name but other numbers differ."""
        dumped = self.model_dump(mode="json")
        if dumped["reservation_scope"] == "per_sku":
            # the behaviour before the setting existed: the same rules keep their version
            del dumped["reservation_scope"]
        body = json.dumps(dumped, sort_keys=True)
        digest = hashlib.sha256(body.encode()).hexdigest()[:8]
        return f"{self.rule_set_name}+{digest}"

    @cached_property
    def tier_order(self) -> tuple[int, ...]:
        return tuple(sorted(self.tiers))

    def tier_for(self, channel: str) -> int:
        """The default tier moved by the channel's rule, clamped to the configured tiers."""
        rule = self.channel_rules.get(channel)
        order = self.tier_order
        index = order.index(self.default_tier) + (rule.tier_shift if rule else 0)
        return order[max(0, min(len(order) - 1, index))]

    def forces_cold_chain(self, channel: str) -> bool:
        rule = self.channel_rules.get(channel)
        return rule is not None and rule.force_cold_chain


class IntakeConfig(_Section):
    skew_threshold_s: float = Field(default=3.0, gt=0, le=86_400)
    max_batch: int = Field(default=1000, ge=1, le=100_000)
    retry_on_change: bool = Field(
        default=True, description="retry waiting orders after stock or warehouses change"
    )
    retry_limit: int = Field(default=1000, ge=1, le=100_000,
                             description="most waiting orders one retry pass tries")


class LimitsConfig(_Section):
    """Request body limits (413 beyond them, see coordinator/body_limits.py)."""

    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=1_073_741_824,
                                description="any request body (orders, catalog rows, ...)")
    max_import_bytes: int = Field(default=512 * 1_048_576, ge=1024, le=8 * 1_073_741_824,
                                  description="bulk import bodies (paths under /import)")


class ReadsConfig(_Section):
    """Reads during a warehouse's transition (see coordinator/read_yield.py)."""

    max_yield_s: float = Field(
        default=1.0, ge=0, le=30,
        description="longest a read (GET) waits, in all, while the ops loop applies a "
                    "warehouse going down or coming back and for a slot (max_active); "
                    "0: reads never wait")
    max_active: int = Field(
        default=8, ge=0, le=1000,
        description="reads (GETs) computed at once, the others queue in arrival order "
                    "(at most max_yield_s); 0: no limit")


class Settings(_Section):
    db_path: str = Field(
        default="breakwater.sqlite", min_length=1,
        description="a SQLite path or sqlite:///path, or a postgresql:// URL")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    mqtt_url: tuple[str, ...] = Field(
        default=("mqtt://127.0.0.1:1883",),
        description="one broker URL, or several (a list, or comma-separated) of one cluster",
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=("127.0.0.1",),
        description="addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For "
                    "names the client (login limits per address); '*' trusts any",
    )
    instance_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{1,40}$",
        description="names this instance (MQTT client id, lease); default <hostname>-<port>",
    )
    topic_root: str = "breakwater"
    allocation: AllocationConfig = Field(default_factory=AllocationConfig)
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    reads: ReadsConfig = Field(default_factory=ReadsConfig)
    sections: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="other modules' tables, e.g. [ops], kept raw for them to validate",
    )

    @model_validator(mode="before")
    @classmethod
    def _collect_sections(cls, data: Any) -> Any:
        """Unknown top-level *tables* belong to other modules (``[ops]``); an unknown
        scalar is still an error (most likely a typo)."""
        if not isinstance(data, Mapping):
            return data
        known = set(cls.model_fields)
        out = {k: v for k, v in data.items() if k in known or not isinstance(v, Mapping)}
        sections = dict(out.get("sections") or {})
        for key, value in data.items():
            if key not in known and isinstance(value, Mapping):
                sections[key] = dict(value)
        if sections:
            out["sections"] = sections
        return out

    @field_validator("db_path")
    @classmethod
    def _database_kind(cls, value: str) -> str:
        """A URL of any other kind (``mysql://``, ``POSTGRESQL://``) would be taken for
        a SQLite file name and fail later as 'unable to open database file'."""
        scheme, sep, _ = value.partition("://")
        if sep and scheme not in ("sqlite", "postgresql", "postgres", "postgresql+psycopg"):
            message = (f"unsupported database URL scheme {scheme!r}: use a SQLite path, "
                       "sqlite:///path or postgresql://user@host:port/db")
            raise ValueError(message)
        if scheme == "sqlite" and not (value.startswith("sqlite:///")
                                       and value.removeprefix("sqlite:///").strip("/")):
            raise ValueError("a SQLite URL is sqlite:///relative/path or sqlite:////abs/path")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: Any) -> Any:
        """Comma-separated in ``BREAKWATER_TRUSTED_PROXIES``; each one an address, a
        network or ``*``, checked here so a typo fails at start, not per request."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            for index, entry in enumerate(value):
                if str(entry) == "*":
                    continue
                try:
                    ipaddress.ip_network(str(entry), strict=False)
                except ValueError as exc:
                    message = f"entry {index + 1} ({entry!r}) is not an address or network"
                    raise ValueError(message) from exc
        return value

    @field_validator("mqtt_url", mode="before")
    @classmethod
    def _broker_urls(cls, value: Any) -> Any:
        """A string may hold several URLs separated by commas (handy in ``MQTT_URL``)."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("at least one broker URL is needed")
            for index, url in enumerate(value):
                try:
                    parse_mqtt_url(str(url))
                except MqttUrlError as exc:
                    message = f"URL {index + 1} of {len(value)}: {exc}"
                    raise ValueError(message) from exc
        return value

    @property
    def instance(self) -> str:
        """This instance's name: ``instance_id``, else ``<hostname>-<port>`` (stable across
        restarts, so a persistent MQTT session is picked up again; two instances on one
        host differ by port)."""
        if self.instance_id is not None:
            return self.instance_id
        host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:30] or "host"
        return f"{host}-{self.port}"

    def section(self, name: str) -> dict[str, Any]:
        """A module's raw settings table (empty when the file has none)."""
        return self.sections.get(name, {})

    @classmethod
    def load(
        cls, path: str | Path | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Defaults, then the TOML file (``path`` or ``$BREAKWATER_CONFIG``), then env vars."""
        environ = os.environ if env is None else env
        data: dict[str, Any] = {}
        file = path if path is not None else environ.get("BREAKWATER_CONFIG")
        if file:
            try:
                data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                message = f"cannot read settings file {file}: {exc}"
                raise ConfigError(message) from exc
        for var, key in _ENV.items():
            if var in environ:
                section, _, leaf = key.rpartition(".")
                target = data.setdefault(section, {}) if section else data
                target[leaf] = environ[var]
        return cls.parse(data)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Settings:
        """Validate a mapping; errors name the field path (``allocation.nearest``)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = f"invalid setting {where}: {first['msg']}"
            raise ConfigError(message) from exc


_ENV = {
    "BREAKWATER_DB": "db_path",
    "BREAKWATER_HOST": "host",
    "BREAKWATER_PORT": "port",
    "MQTT_URL": "mqtt_url",
    "BREAKWATER_INSTANCE": "instance_id",
    "BREAKWATER_TRUSTED_PROXIES": "trusted_proxies",
    "BREAKWATER_TOPIC_ROOT": "topic_root",
    "BREAKWATER_SKEW_THRESHOLD_S": "intake.skew_threshold_s",
}
