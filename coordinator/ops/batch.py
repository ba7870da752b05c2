"""What one ops transaction reads once and writes at its end (:class:`OpsBatch`): the
gateway registry and warehouse flags of the warehouses its messages name, their names
and places for notices, and the records (:class:`~coordinator.ops.tracker_writes.Deferred`)
flushed set-based before commit. Used by :class:`coordinator.ops.handler.OpsCore`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from coordinator.catalog import WarehouseFlags, warehouse_flags
from coordinator.db import Database
from coordinator.gateways import gate
from coordinator.gateways import store as gateway_store
from coordinator.ops import incident_store
from coordinator.ops.notify.messages import WarehouseInfo
from coordinator.ops.tracker_writes import Deferred
from protocols import AgentStatus, BreakerEvent, TrackingUpdate

CoreMessage = BreakerEvent | AgentStatus | TrackingUpdate


@dataclass
class OpsBatch:
    """What one ops transaction reads once (the gateway registry and warehouse flags of
    the warehouses its messages name) and the records it writes at its end."""

    registry: gate.Registry
    flags: dict[str, WarehouseFlags | None]
    infos: dict[str, WarehouseInfo] = field(default_factory=dict)
    deferred: Deferred = field(default_factory=Deferred)

    @classmethod
    def read(cls, db: Database, messages: Sequence[CoreMessage]) -> OpsBatch:
        agents = sorted({m.agent_id for m in messages if not isinstance(m, TrackingUpdate)})
        warehouses = sorted({m.warehouse_id for m in messages
                             if not isinstance(m, TrackingUpdate)})
        found = warehouse_flags(db, warehouses) if warehouses else {}
        registry = gate.Registry(
            dict(gateway_store.get_gateways(db, agents)) if agents else {},
            {w: w in found for w in warehouses})
        for agent in agents:
            registry.gateways.setdefault(agent, None)
        infos = incident_store.warehouse_infos(db, warehouses) if warehouses else {}
        return cls(registry, {w: found.get(w) for w in warehouses}, infos)

    def flags_of(self, db: Database, warehouse_id: str) -> WarehouseFlags | None:
        if warehouse_id not in self.flags:
            self.flags[warehouse_id] = warehouse_flags(db, [warehouse_id]).get(warehouse_id)
        return self.flags[warehouse_id]
