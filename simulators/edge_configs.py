"""Edge agent configs (TOML) for simulated sites, and reading them back for routing.

The shape is the edge agent's (issue 2)::

    [agent]     agent_id, warehouse_id
    [[sensors]] id, zone, topic, format ("native"|"zigbee2mqtt"|"tasmota"|"plain"),
                metric (plain only), tasmota_sensor (tasmota only), max_gap_s
    [[rules]]   id, zone, breaker, metric, above, for_s, min_readings, clear_below,
                clear_for_s, silence_trips_after_s (optional)
    [[breakers]] name

The sensor simulator publishes each sensor on the topic and in the format its agent's
config names, so the demo and the tests exercise exactly what a gateway would see.
Zones named ``cold_room*`` get the cold-chain temperature rule on breaker ``cold_chain``;
zones named ``dry*`` get the humidity rule on breaker ``dry_goods``; other zones
(``ambient``) are monitored without a rule.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols.topics import Topics
from simulators.scenario import Metric, SensorFormat, SensorSpec
from simulators.sites import Site

COLD_BREAKER = "cold_chain"
DRY_BREAKER = "dry_goods"


class EdgeConfigError(ValueError):
    """An edge config the simulator cannot route by; names the file and field."""


@dataclass(frozen=True, slots=True)
class RuleTemplate:
    breaker: str
    metric: Metric
    above: float
    for_s: float
    min_readings: int
    clear_below: float
    clear_for_s: float
    silence_trips_after_s: float | None


COLD_ROOM_RULE = RuleTemplate(COLD_BREAKER, "temperature_c", 8.0, 300, 3, 7.5, 120, 600)
DRY_STORE_RULE = RuleTemplate(DRY_BREAKER, "humidity_pct", 75.0, 600, 3, 70.0, 300, None)


def rule_for_zone(zone: str) -> RuleTemplate | None:
    if zone.startswith("cold_room"):
        return COLD_ROOM_RULE
    if zone.startswith("dry"):
        return DRY_STORE_RULE
    return None


class SensorRoute(BaseModel):
    """Where and how one sensor (one metric, for plain sensors) is published."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    zone: str
    topic: str = Field(min_length=1)
    format: SensorFormat
    metric: Metric | None = None
    tasmota_sensor: str | None = None
    max_gap_s: float = 120


class _Agent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    agent_id: str
    warehouse_id: str


class EdgeSiteConfig(BaseModel):
    """The parts of an agent config the simulator needs (other sections are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    agent: _Agent
    sensors: list[SensorRoute] = Field(default_factory=list)


def agent_id_for(warehouse_id: str) -> str:
    return f"agent-{warehouse_id}"


def _external_name(warehouse_id: str, sensor_id: str) -> str:
    # One shared demo broker serves every site, so device names carry the warehouse.
    return f"{warehouse_id}_{sensor_id}"


def default_routes(
    warehouse_id: str, sensor: SensorSpec, topics: Topics, external_prefix: str = ""
) -> list[SensorRoute]:
    """Routes for a sensor: native on the contract topic, others on their usual topics.

    ``external_prefix`` (e.g. ``"test-1a2b/"``) keeps third-party topics of concurrent
    test runs apart; the contract topic is already scoped by ``topics``' root.
    """
    name = _external_name(warehouse_id, sensor.id)
    max_gap = max(3 * sensor.interval_s, 90.0)
    base: dict[str, Any] = {"id": sensor.id, "zone": sensor.zone, "max_gap_s": max_gap}
    match sensor.format:
        case "native":
            return [
                SensorRoute(**base, topic=topics.sensor(warehouse_id, sensor.id), format="native")
            ]
        case "zigbee2mqtt":
            return [
                SensorRoute(
                    **base, topic=f"{external_prefix}zigbee2mqtt/{name}", format="zigbee2mqtt"
                )
            ]
        case "tasmota":
            return [
                SensorRoute(
                    **base,
                    topic=f"{external_prefix}tele/{name}/SENSOR",
                    format="tasmota",
                    tasmota_sensor=sensor.tasmota_sensor,
                )
            ]
        case "plain":
            metric = sensor.metrics[0]
            short = "temperature" if metric == "temperature_c" else "humidity"
            return [
                SensorRoute(
                    **base,
                    topic=f"{external_prefix}sensors/{name}/{short}",
                    format="plain",
                    metric=metric,
                )
            ]
    raise ValueError(f"unknown format {sensor.format}")


def site_routes(site: Site, topics: Topics, external_prefix: str = "") -> list[SensorRoute]:
    return [
        r
        for s in site.sensors
        for r in default_routes(site.warehouse_id, s, topics, external_prefix)
    ]


def mqtt_sections(
    url: str, agent_id: str, topics: Topics, uplink: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """``local_mqtt`` and ``uplink_mqtt`` for an agent on one broker (the demo's layout).

    ``uplink`` overrides keys of ``uplink_mqtt`` (replays point the uplink of a site with
    uplink outages at a :class:`simulators.uplink_relay.UplinkRelay` to cut it). Each
    connection logs in with a username: the embedded amqtt broker keeps the persistent
    session's queue only for clients that have one.
    """
    return {
        "local_mqtt": {"url": url, "username": agent_id, "topic_root": topics.root},
        "uplink_mqtt": {
            "url": url, "username": agent_id, "topic_root": topics.root, **(uplink or {}),
        },
    }  # fmt: skip


def site_config(
    site: Site,
    topics: Topics,
    *,
    external_prefix: str = "",
    mqtt_url: str | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    uplink: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The agent config for one simulated site, as a TOML-ready dict.

    ``mqtt_url`` adds ``local_mqtt``/``uplink_mqtt`` sections (``uplink`` overrides keys of
    the latter); ``extra`` adds or replaces whole sections (e.g. ``{"agent": {...}}`` keys
    are merged into ``[agent]``).
    """
    zones = sorted({s.zone for s in site.sensors})
    rules: list[dict[str, Any]] = []
    breakers: list[str] = []
    for zone in zones:
        template = rule_for_zone(zone)
        if template is None:
            continue
        measured = any(template.metric in s.metrics for s in site.sensors if s.zone == zone)
        if not measured:
            continue
        rule: dict[str, Any] = {
            "id": f"{zone}_{'temp' if template.metric == 'temperature_c' else 'humidity'}_high",
            "zone": zone,
            "breaker": template.breaker,
            "metric": template.metric,
            "above": template.above,
            "for_s": template.for_s,
            "min_readings": template.min_readings,
            "clear_below": template.clear_below,
            "clear_for_s": template.clear_for_s,
        }
        if template.silence_trips_after_s is not None:
            rule["silence_trips_after_s"] = template.silence_trips_after_s
        rules.append(rule)
        if template.breaker not in breakers:
            breakers.append(template.breaker)
    agent_id = agent_id_for(site.warehouse_id)
    config: dict[str, Any] = {
        "agent": {
            "agent_id": agent_id,
            "warehouse_id": site.warehouse_id,
            # one state file per agent: configs of a region share a directory
            "state_db": f"state-{site.warehouse_id}.sqlite",
        },
    }
    if mqtt_url is not None:
        config.update(mqtt_sections(mqtt_url, agent_id, topics, uplink))
    for section, values in (extra or {}).items():
        if section == "agent":
            config["agent"].update(values)
        else:
            config[section] = dict(values)
    config["sensors"] = [
        r.model_dump(exclude_none=True) for r in site_routes(site, topics, external_prefix)
    ]
    config["rules"] = rules
    config["breakers"] = [{"name": b} for b in breakers]
    return config


def to_toml(config: Mapping[str, Any]) -> str:
    """The config as TOML text (tomli-w: the writer paired with the stdlib's tomllib)."""
    return tomli_w.dumps(config)


def write_configs(
    site_list: Iterable[Site],
    folder: str | Path,
    topics: Topics,
    *,
    external_prefix: str = "",
    mqtt_url: str | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    uplinks: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Write ``<warehouse>.toml`` per site; return the paths.

    ``uplinks``: ``uplink_mqtt`` overrides by warehouse id (with ``mqtt_url`` only).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for site in site_list:
        path = out / f"{site.warehouse_id}.toml"
        header = f"# Edge agent for {site.warehouse_id} (python -m simulators edge-configs)\n"
        config = site_config(
            site, topics, external_prefix=external_prefix, mqtt_url=mqtt_url, extra=extra,
            uplink=(uplinks or {}).get(site.warehouse_id),
        )  # fmt: skip
        body = to_toml(config)
        path.write_text(header + body, encoding="utf-8")
        written.append(path)
    return written


def load_edge_config(path: str | Path) -> EdgeSiteConfig:
    source = Path(path)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        message = f"{source}: cannot read edge config: {exc}"
        raise EdgeConfigError(message) from exc
    try:
        return EdgeSiteConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        message = f"{source}: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        raise EdgeConfigError(message) from exc


def load_edge_configs(paths: Iterable[str | Path]) -> dict[str, EdgeSiteConfig]:
    """Configs by warehouse id; a directory stands for every ``*.toml`` in it."""
    found: dict[str, EdgeSiteConfig] = {}
    for entry in paths:
        path = Path(entry)
        files = sorted(path.glob("*.toml")) if path.is_dir() else [path]
        for file in files:
            config = load_edge_config(file)
            found[config.agent.warehouse_id] = config
    return found


RouteKey = tuple[str, str]  # (warehouse, sensor)
Format = Literal["native", "zigbee2mqtt", "tasmota", "plain"]


def routing_table(configs: Mapping[str, EdgeSiteConfig]) -> dict[RouteKey, list[SensorRoute]]:
    table: dict[RouteKey, list[SensorRoute]] = {}
    for warehouse, config in configs.items():
        for route in config.sensors:
            table.setdefault((warehouse, route.id), []).append(route)
    return table
