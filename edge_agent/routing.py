"""Which configured sensors a local MQTT topic belongs to, and what to subscribe to."""

from __future__ import annotations

from paho.mqtt.client import topic_matches_sub

from edge_agent.config import AgentConfig
from edge_agent.sensors import SensorParser
from protocols import Topics


class SensorRouter:
    """Exact topics by dict lookup (the hot path), filters by matching."""

    def __init__(self, config: AgentConfig, topics: Topics) -> None:
        warehouse = config.agent.warehouse_id
        self._exact: dict[str, list[SensorParser]] = {}
        self._by_id: dict[str, SensorParser] = {}
        self._wild: list[tuple[str, SensorParser]] = []
        self.subscriptions: list[str] = []
        default_topics: list[str] = []
        max_skew = config.agent.max_skew_s
        for sensor in config.sensors:
            parser = SensorParser(sensor, max_skew)
            self._by_id[sensor.id] = parser
            topic = sensor.topic or topics.sensor(warehouse, sensor.id)
            if "+" in topic or "#" in topic:
                self._wild.append((topic, parser))
            else:
                self._exact.setdefault(topic, []).append(parser)
            if sensor.topic is None:
                default_topics.append(topic)
            elif topic not in self.subscriptions:
                self.subscriptions.append(topic)
        if len(default_topics) > 1:
            # One wildcard instead of thousands of SUBSCRIBEs; strangers are counted.
            self.subscriptions.append(topics.sensor_filter(warehouse))
        else:
            self.subscriptions.extend(default_topics)

    def parsers(self, topic: str) -> list[SensorParser]:
        """The parsers of the sensors publishing on ``topic`` (empty: a stranger)."""
        parsers = self._exact.get(topic)
        if parsers is None:
            parsers = [p for flt, p in self._wild if topic_matches_sub(flt, topic)]
        return parsers

    def parser_for(self, sensor_id: str) -> SensorParser | None:
        """The parser of a configured sensor, by its id."""
        return self._by_id.get(sensor_id)
