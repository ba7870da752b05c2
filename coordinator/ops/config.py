"""Configuration of the operations side (nested as ``ops`` in the coordinator settings)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from coordinator.errors import ConfigError
from coordinator.ops.escalation import Policy
from coordinator.secret_source import OPS_SECRETS, with_secrets
from coordinator.settings import Settings
from protocols.mqtt_url import TlsField, check_tls_setting
from protocols.reconnect import BackoffPolicy


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(_Config):
    """The ops subscription; broker addresses and topic root are the coordinator's
    ``mqtt_url`` (one URL or several) and ``topic_root``. The TLS files are only for
    ``mqtts://`` URLs (the watcher refuses them with a plain one); relative paths are
    resolved against the current directory."""

    # A client id stable per instance + clean_session=False: QoS 1 messages published while
    # the instance is down wait at the broker. None: ``breakwater-coordinator-ops-<instance>``
    # (see ``Settings.instance``), so two coordinators never share one (they would take
    # the session from each other in a loop). Set it only with one id per instance.
    client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    username: str | None = "breakwater-coordinator"
    password: str | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # Full-jitter backoff (protocols/reconnect.py): the first wait after a lost session is
    # uniform in [0, reconnect_min_s], doubling per failure up to reconnect_max_s; a
    # connection that stayed up reconnect_stable_s starts small again.
    reconnect_min_s: float = Field(default=0.2, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)
    reconnect_stable_s: float = Field(default=10.0, ge=0)
    # A message whose handling raises (e.g. the database is locked) is retried in order,
    # with doubling waits, before it is dropped and counted: the broker already has our
    # PUBACK, so a drop loses it until the retained state comes again.
    handle_attempts: int = Field(default=3, ge=1, le=20)
    handle_retry_s: float = Field(default=0.1, gt=0, le=10)
    # No CA file = the system trust store; the broker's certificate is always verified.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = Field(default=None, validate_default=True)

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _tls_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        field = cast(TlsField, info.field_name)
        if value is not None:
            value = str(Path(value).expanduser())
        return check_tls_setting(field, value, info.data)

    @model_validator(mode="after")
    def _backoff_order(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            message = f"reconnect_max_s: must be >= reconnect_min_s ({self.reconnect_min_s})"
            raise ValueError(message)
        return self

    def client_id_for(self, instance: str) -> str:
        """The MQTT client id of the instance named ``instance``."""
        return self.client_id or f"breakwater-coordinator-ops-{instance}"

    def backoff(self) -> BackoffPolicy:
        return BackoffPolicy(base_s=self.reconnect_min_s, cap_s=self.reconnect_max_s,
                             stable_after_s=self.reconnect_stable_s)

    @property
    def tls_files(self) -> dict[str, str]:
        """The TLS options that are set, by name."""
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file,
                 "key_file": self.key_file}
        return {name: path for name, path in files.items() if path is not None}


class FranchiseeConfig(_Config):
    """Where per-order franchisee notices go: a JSONL file (demo) or a JSON webhook."""

    sink: Literal["jsonl", "webhook"] = "jsonl"
    jsonl_path: Path = Path("notifications/franchisee.jsonl")
    webhook_url: str | None = None
    coupon_prefix: str = Field(default="BW", pattern=r"^[A-Z0-9]{1,8}$")
    coupon_value_yuan: float = Field(default=10.0, ge=0)
    # a store's compensation coupon for an incident can be used this long
    coupon_valid_days: int = Field(default=30, ge=1, le=3650)

    @model_validator(mode="after")
    def _url_for_webhook(self) -> FranchiseeConfig:
        if self.sink == "webhook" and not self.webhook_url:
            raise ValueError("webhook_url is required when sink is 'webhook'")
        return self


class WecomConfig(_Config):
    """WeCom (企业微信) group robot: ``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...``."""

    enabled: bool = False
    url: str | None = None
    msgtype: Literal["markdown", "text"] = "markdown"
    mentioned_mobile_list: list[str] = Field(default_factory=list)
    # The robot accepts about 20 messages a minute; one message per incident plus a
    # token bucket keeps us under it.
    per_minute: int = Field(default=20, ge=1, le=60)

    @model_validator(mode="after")
    def _url_when_enabled(self) -> WecomConfig:
        if self.enabled and not self.url:
            raise ValueError("url is required when WeCom alerts are enabled")
        return self


class SmsConfig(_Config):
    """An HTTP SMS gateway: POST JSON with phone numbers, signature, template, params."""

    enabled: bool = False
    url: str | None = None
    api_key: str | None = None
    signature: str = Field(default="Breakwater", min_length=1, max_length=32)
    template_code: str = "BW_INCIDENT"
    # Rendered with str.format over the incident's fields (incident_ref, warehouse_name,
    # zone, reading, reason_zh, at_local, moved, stuck, link ...).
    template: str = (
        "【{signature}】{warehouse_name}停止接单：{reason_zh} {reading}，{at_local}。"
        "已改派{moved}单，{stuck}单待处理。{incident_ref} {link}"
    )
    phone_numbers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _url_when_enabled(self) -> SmsConfig:
        if self.enabled and not self.url:
            raise ValueError("url is required when SMS alerts are enabled")
        if self.enabled and not self.phone_numbers:
            raise ValueError("phone_numbers is required when SMS alerts are enabled")
        return self


class WebhookConfig(_Config):
    """A generic JSON webhook that receives every incident as structured JSON."""

    enabled: bool = False
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _url_when_enabled(self) -> WebhookConfig:
        if self.enabled and not self.url:
            raise ValueError("url is required when the webhook is enabled")
        return self


class DispatcherConfig(_Config):
    poll_interval_s: float = Field(default=0.5, gt=0)
    batch_size: int = Field(default=100, ge=1)
    max_attempts: int = Field(default=6, ge=1)
    backoff_base_s: float = Field(default=2.0, gt=0)
    backoff_max_s: float = Field(default=600.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)
    # PostgreSQL: how long a claimed batch is this dispatcher's before another instance
    # may take it again. Renewed every quarter of it while the batch is out, and no
    # attempt starts with less than a quarter left (coordinator.ops.notify.claims): a
    # killed dispatcher's batch goes out again within this; a quarter of it should
    # exceed timeout_s, so an attempt started as renewals fail ends before it runs out
    claim_lease_s: float = Field(default=20.0, gt=0)


class NotifyConfig(_Config):
    franchisee: FranchiseeConfig = FranchiseeConfig()
    wecom: WecomConfig = WecomConfig()
    sms: SmsConfig = SmsConfig()
    webhook: WebhookConfig = WebhookConfig()
    dispatcher: DispatcherConfig = DispatcherConfig()
    # People read WeCom and SMS texts in their own wall-clock time; JSON payloads (webhook,
    # franchisee notices) keep ISO 8601 UTC.
    timezone: str = Field(default="Asia/Shanghai", min_length=1, max_length=64)
    # where people open an incident from a WeCom or SMS message (the coordinator's public
    # base URL, e.g. https://ops.example.cn); no link when unset
    dashboard_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$",
                                      max_length=200)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            message = f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)"
            raise ValueError(message) from exc
        return value


class TelemetryConfig(_Config):
    """Agents' per-zone summaries kept at head office (see coordinator.ops.telemetry)."""

    store: bool = True
    # minute windows are kept this long, then merged into bucket_s buckets
    raw_keep_h: float = Field(default=48.0, gt=0)
    bucket_s: int = Field(default=900, ge=60, le=86_400)
    retention_days: float = Field(default=90.0, gt=0)
    maintenance_interval_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _raw_within_retention(self) -> TelemetryConfig:
        if self.raw_keep_h > self.retention_days * 24:
            raise ValueError("raw_keep_h must not exceed retention_days")
        return self

    @property
    def raw_keep(self) -> timedelta:
        return timedelta(hours=self.raw_keep_h)

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)


class EscalationConfig(_Config):
    """An open incident nobody acknowledged re-notifies: WeCom first, then SMS to the next
    people on call, every ``repeat_after_min``, up to ``max_levels`` times."""

    enabled: bool = True
    first_after_min: float = Field(default=10.0, gt=0)
    repeat_after_min: float = Field(default=10.0, gt=0)
    max_levels: int = Field(default=3, ge=1, le=10)

    @property
    def policy(self) -> Policy:
        return Policy(first_after=timedelta(minutes=self.first_after_min),
                      repeat_after=timedelta(minutes=self.repeat_after_min),
                      max_levels=self.max_levels)

class ClusterConfig(_Config):
    """Several coordinator instances on one database: one leader runs the ops loop under
    a lease; every instance feeds the shared inbox (docs/scaling.md)."""

    enabled: bool = False
    # A standby takes over at most lease_ttl_s after the leader's last renewal; the TTL
    # must also exceed the clock skew between instances by a wide margin.
    lease_ttl_s: float = Field(default=4.0, gt=0, le=600)
    renew_interval_s: float = Field(default=0.5, gt=0, le=60)
    apply_interval_s: float = Field(default=0.05, gt=0, le=10)
    # messages per apply transaction: inbox rows, or a single instance's burst
    apply_batch: int = Field(default=200, ge=1, le=10_000)
    # one apply transaction holds the write lock at most about this long (intake waits);
    # both also bound a single instance's batches (cluster off)
    apply_budget_s: float = Field(default=0.2, gt=0, le=10)
    inbox_keep_s: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _renew_in_time(self) -> ClusterConfig:
        if self.renew_interval_s >= self.lease_ttl_s / 2:
            message = (f"renew_interval_s: must be below half of lease_ttl_s "
                       f"({self.lease_ttl_s / 2:g}) so a live leader renews in time")
            raise ValueError(message)
        return self


class OpsConfig(_Config):
    mqtt: MqttConfig = MqttConfig()
    cluster: ClusterConfig = ClusterConfig()
    subscribe_mqtt: bool = True
    agent_offline_grace_s: float = Field(default=120.0, ge=0)
    courier_silence_min: float = Field(default=30.0, gt=0)
    tick_interval_s: float = Field(default=1.0, gt=0)
    # Dedupe keys (ops_processed_events) kept per agent lifetime; older ones are pruned
    # every dedupe_prune_interval_s. An older repeat is still refused: as stale, by its
    # breaker's seq.
    dedupe_keep_per_agent: int = Field(default=1000, ge=1, le=1_000_000)
    dedupe_prune_interval_s: float = Field(default=60.0, gt=0)
    # a gateway's event_time (status ts) further ahead of our clock than this is suspect:
    # a trip applies at receive time, flagged; a clear is refused naming the field
    max_event_skew_s: float = Field(default=300.0, gt=0, le=86_400)
    notify: NotifyConfig = NotifyConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    escalation: EscalationConfig = EscalationConfig()

    @property
    def agent_offline_grace(self) -> timedelta:
        return timedelta(seconds=self.agent_offline_grace_s)

    @property
    def max_event_skew(self) -> timedelta:
        return timedelta(seconds=self.max_event_skew_s)

    @property
    def courier_silence(self) -> timedelta:
        return timedelta(minutes=self.courier_silence_min)


def ops_config_of(settings: Settings, env: Mapping[str, str] | None = None) -> OpsConfig:
    """The ``[ops]`` table of the settings file, validated (defaults when absent), with
    the secrets the environment provides (``BREAKWATER_WECOM_URL``,
    ``BREAKWATER_SMS_API_KEY``, ``BREAKWATER_MQTT_PASSWORD``, each also as ``..._FILE``).

    Raises :class:`ConfigError` naming the field, e.g. ``ops.notify.wecom.url``."""
    raw = with_secrets(settings.section("ops"), os.environ if env is None else env,
                       OPS_SECRETS)
    try:
        return OpsConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in ("ops", *first["loc"]))
        message = f"invalid setting {where}: {first['msg']}"
        raise ConfigError(message) from exc
