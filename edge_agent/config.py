"""One TOML file per gateway, validated by pydantic. Errors name the file and the field.

``load_config(path)`` reads a file (``state_db`` is resolved relative to it);
``AgentConfig.model_validate(dict)`` builds the same model from a dict (``state_db`` is then
relative to the current directory unless absolute).
"""

from __future__ import annotations

import ssl
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge_agent.errors import ConfigError
from edge_agent.readings import Metric
from edge_agent.rule_types import Combine
from protocols.mqtt_url import (
    MqttAddress,
    TlsField,
    check_tls_setting,
    client_tls_context,
    parse_mqtt_url,
)
from protocols.reconnect import BackoffPolicy
from protocols.topics import DEFAULT_ROOT, validate_level

SensorFormat = Literal["native", "zigbee2mqtt", "tasmota", "plain"]


def _level(value: str) -> str:
    return validate_level(value, "identifier")


Ident = Annotated[str, AfterValidator(_level)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Section(BaseModel):
    # Unknown keys are errors: a typo in a safety limit must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AgentSection(_Section):
    agent_id: Ident
    warehouse_id: Ident
    state_db: str = "edge-state.sqlite"
    outage_tolerance_s: Seconds = 900
    max_skew_s: PositiveSeconds = 30
    tick_interval_s: PositiveSeconds = 1.0
    # Re-publish the online status this often (clock time, checked on each tick) so the
    # coordinator notices an agent that goes silent without a last will. 0 = off.
    heartbeat_s: Seconds = Field(default=30, le=86_400)
    outbox_max_bytes: int = Field(default=5_000_000, ge=10_000)
    telemetry_window_s: PositiveSeconds = 60
    readings_log_per_sensor: int = Field(default=100, ge=1, le=100_000)
    deadletter_queue_max: int = Field(default=1000, ge=1)
    log_interval_s: Seconds = 60
    # Signed commands (protocols/command_auth.py): the agent's own key, from this file
    # (relative to the config file) or else from the environment variable
    # BREAKWATER_COMMAND_KEY. Never logged. With neither, every command is refused
    # (audited as unsigned) unless unsigned_commands is set: a test bench's choice, never
    # a warehouse's (anyone who can publish on the cmd topic could then hold a breaker).
    command_key_file: str | None = None
    unsigned_commands: bool = False
    # Longest a command may be valid (and an override last) from when it was issued.
    command_max_ttl_s: PositiveSeconds = Field(default=43_200, le=7 * 86_400)
    # Health and Prometheus metrics on http://metrics_host:metrics_port/ (0 = off).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65_535)


class MqttSection(_Section):
    # ``url`` comes first: the TLS file validators read it from the already-validated data.
    # One broker URL, or several of one cluster (a TOML list, or comma-separated): the
    # agent moves to the next on failure with jittered backoff (protocols/reconnect.py).
    # ``url`` is then the first of them and ``urls`` all of them, in order.
    url: str = "mqtt://127.0.0.1:1883"
    urls: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    topic_root: str = DEFAULT_ROOT
    keepalive_s: int = Field(default=30, ge=2, le=3600)
    qos: Literal[0, 1] = 0
    reconnect_min_s: PositiveSeconds = 0.2
    reconnect_max_s: PositiveSeconds = 10.0
    # a connection that stayed up this long was a session: the backoff starts small again
    reconnect_stable_s: Seconds = 10.0
    # TLS (mqtts:// only). Relative paths are resolved against the config file's folder.
    # No CA file = the system trust store; the broker's certificate is always verified.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = Field(default=None, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _broker_list(cls, data: Any) -> Any:
        """``url`` may be a list (or comma-separated): the first becomes ``url``."""
        if not isinstance(data, dict) or "url" not in data:
            return data
        value = data["url"]
        if isinstance(value, str) and "," in value:
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("url: at least one broker URL is needed")
            data = {**data, "url": value[0], "urls": tuple(value)}
        return data

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parse_mqtt_url(value)  # MqttUrlError is a ValueError: pydantic reports it
        return value

    @field_validator("urls")
    @classmethod
    def _mqtt_urls(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        first = info.data.get("url")
        tls = None if first is None else parse_mqtt_url(first).tls
        for index, url in enumerate(value):
            try:
                address = parse_mqtt_url(url)
            except ValueError as exc:
                raise ValueError(f"URL {index + 1} of {len(value)}: {exc}") from exc
            if tls is not None and address.tls != tls:
                raise ValueError(f"URL {index + 1} of {len(value)}: all brokers of one "
                                 "connection use the same scheme (mqtt:// or mqtts://)")
        return value

    @property
    def broker_urls(self) -> tuple[str, ...]:
        """Every broker of this connection, in order (one when ``url`` is a single URL)."""
        return self.urls or (self.url,)

    def backoff(self) -> BackoffPolicy:
        return BackoffPolicy(
            base_s=self.reconnect_min_s,
            cap_s=max(self.reconnect_max_s, self.reconnect_min_s),
            stable_after_s=self.reconnect_stable_s,
        )

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _tls_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        field = cast(TlsField, info.field_name)
        url = info.data.get("url")
        if value is not None and url is not None and not parse_mqtt_url(url).tls:
            message = f"only for mqtts:// URLs (url is {url!r})"
            raise ValueError(message)
        if value is not None:
            base = (info.context or {}).get("base_dir")
            path = Path(value).expanduser()
            if base is not None and not path.is_absolute():
                path = Path(base) / path
            value = str(path)
        return check_tls_setting(field, value, info.data)

    @field_validator("topic_root")
    @classmethod
    def _root(cls, value: str) -> str:
        for part in value.split("/"):
            validate_level(part, "topic root level")
        return value

    @property
    def address(self) -> MqttAddress:
        return parse_mqtt_url(self.url)

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port

    @property
    def tls(self) -> bool:
        return self.address.tls

    def tls_context(self) -> ssl.SSLContext | None:
        """A fresh client context for an mqtts:// URL (None for plain mqtt://)."""
        if not self.tls:
            return None
        return client_tls_context(self.ca_file, self.cert_file, self.key_file)


class LocalMqttSection(MqttSection):
    # Off by default: a gateway's sensors publish at QoS 0 and the broker drops them for an
    # absent clean-session subscriber. On, readings published while the agent restarts are
    # queued by the broker (it needs ``queue_qos0_messages`` for QoS 0) and delivered when
    # the agent returns; event time puts them in order.
    persistent_session: bool = False


class SensorConfig(_Section):
    id: Ident
    zone: Ident
    topic: str | None = None
    format: SensorFormat = "native"
    metric: Metric | None = None
    tasmota_sensor: str | None = None
    max_gap_s: PositiveSeconds = 120
    # The unit the sensor reports temperature in, whatever its format (a Zigbee2MQTT or
    # native probe set to °F is otherwise read as °C). Tasmota's own TempUnit wins.
    unit: Literal["C", "F"] | None = None

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is not None and (not value or "#" in value[:-1] or "\x00" in value):
            raise ValueError("must be an MQTT topic or filter ('#' only as the last level)")
        return value

    @model_validator(mode="after")
    def _format_fields(self) -> SensorConfig:
        if self.format == "plain" and self.metric is None:
            raise ValueError("metric is required for a plain sensor")
        if self.format != "plain" and self.metric is not None:
            raise ValueError("metric is only for plain sensors")
        if self.format != "tasmota" and self.tasmota_sensor is not None:
            raise ValueError("tasmota_sensor is only for tasmota sensors")
        if self.format != "native" and self.topic is None:
            raise ValueError(f"topic is required for a {self.format} sensor")
        if self.unit is not None and self.format == "plain" and self.metric != "temperature_c":
            raise ValueError("unit is only for sensors that report temperature")
        return self


class RuleConfig(_Section):
    id: Ident
    zone: Ident
    breaker: Ident
    metric: Metric
    above: float | None = None
    below: float | None = None
    for_s: Seconds = 300
    min_readings: int = Field(default=3, ge=1, le=10_000)
    dip_grace_s: Seconds = 0
    clear_below: float | None = None
    clear_above: float | None = None
    clear_for_s: Seconds = 120
    min_tripped_s: Seconds = 0
    silence_trips_after_s: PositiveSeconds | None = None
    # How the zone's sensors combine: ``any`` one of them beyond the limit (safety first:
    # one faulty probe can close the warehouse, and the event names it), ``all`` live
    # sensors, or ``at_least`` N (with ``at_least = N``). See docs/edge.md.
    combine: Combine = "any"
    at_least: int | None = Field(default=None, ge=1, le=10_000)

    @model_validator(mode="after")
    def _combine(self) -> RuleConfig:
        if self.combine == "at_least" and self.at_least is None:
            raise ValueError("at_least: required when combine = 'at_least'")
        if self.combine != "at_least" and self.at_least is not None:
            raise ValueError("at_least: only with combine = 'at_least'")
        return self

    @model_validator(mode="after")
    def _one_direction(self) -> RuleConfig:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above or below")
        if self.above is not None:
            if self.clear_above is not None:
                raise ValueError("clear_above goes with below, not above")
            if self.clear_below is not None and self.clear_below > self.above:
                raise ValueError("clear_below must be at or below above")
        if self.below is not None:
            if self.clear_below is not None:
                raise ValueError("clear_below goes with above, not below")
            if self.clear_above is not None and self.clear_above < self.below:
                raise ValueError("clear_above must be at or above below")
        return self


class BreakerConfig(_Section):
    name: Ident
    description: str = ""


class AgentConfig(_Section):
    agent: AgentSection
    local_mqtt: LocalMqttSection = Field(default_factory=LocalMqttSection)
    uplink_mqtt: MqttSection = Field(default_factory=MqttSection)
    sensors: list[SensorConfig] = Field(min_length=1)
    rules: list[RuleConfig] = Field(default_factory=list)
    breakers: list[BreakerConfig] = Field(min_length=1)

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @model_validator(mode="after")
    def _references(self) -> AgentConfig:
        _unique("sensors", [s.id for s in self.sensors])
        _unique("rules", [f"{r.zone}/{r.id}" for r in self.rules])
        _unique("breakers", [b.name for b in self.breakers])
        breaker_names = {b.name for b in self.breakers}
        for i, rule in enumerate(self.rules):
            if rule.breaker not in breaker_names:
                raise ValueError(f"rules[{i}].breaker: no breaker named {rule.breaker!r}")
            measuring = [
                s for s in self.sensors if s.zone == rule.zone and _measures(s, rule.metric)
            ]
            if not measuring:
                raise ValueError(
                    f"rules[{i}].zone: no sensor in zone {rule.zone!r} measures {rule.metric}"
                )
            if rule.at_least is not None and rule.at_least > len(measuring):
                raise ValueError(
                    f"rules[{i}].at_least: {rule.at_least} sensors needed but zone "
                    f"{rule.zone!r} has {len(measuring)} measuring {rule.metric}"
                )
        return self

    @property
    def state_db_path(self) -> Path:
        path = Path(self.agent.state_db)
        return path if path.is_absolute() else self._base_dir / path

    @property
    def command_key_path(self) -> Path | None:
        if self.agent.command_key_file is None:
            return None
        path = Path(self.agent.command_key_file).expanduser()
        return path if path.is_absolute() else self._base_dir / path

    def with_base_dir(self, base_dir: Path) -> AgentConfig:
        self._base_dir = base_dir
        return self


def _measures(sensor: SensorConfig, metric: str) -> bool:
    return sensor.format != "plain" or sensor.metric == metric


def _unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i, ident in enumerate(ids):
        if ident in seen:
            raise ValueError(f"{what}[{i}]: duplicate id {ident!r}")
        seen.add(ident)


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "$"


def config_from_dict(
    data: dict[str, object], *, source: str = "<dict>", base_dir: Path | None = None
) -> AgentConfig:
    """Validate ``data``; raise :class:`ConfigError` naming the field and ``source``.

    ``base_dir`` resolves relative TLS file paths (default: the current directory)."""
    context = {"base_dir": base_dir} if base_dir is not None else None
    try:
        return AgentConfig.model_validate(data, context=context)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = _location(tuple(first["loc"]))
        msg = str(first["msg"]).removeprefix("Value error, ")
        if field == "$" and ":" in msg.split(" ")[0]:
            # cross-reference errors name their own field ("rules[0].breaker: ...")
            field = msg.split(":", 1)[0]
        message = f"{source}: {field}: {msg}"
        raise ConfigError(message, field=field, path=source) from exc


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate one gateway's TOML config file."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        message = f"{file}: cannot read config: {exc.strerror or exc}"
        raise ConfigError(message, path=str(file)) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        message = f"{file}: not valid TOML: {exc}"
        raise ConfigError(message, path=str(file)) from exc
    base_dir = file.resolve().parent
    config = config_from_dict(data, source=str(file), base_dir=base_dir)
    return config.with_base_dir(base_dir)
