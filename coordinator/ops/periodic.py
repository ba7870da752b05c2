"""The ops service's periodic work: ticks (courier silence, agent liveness, placed-order
notices, escalations), the dedupe and inbox pruner, telemetry maintenance. With several
instances only the leader runs them. A mixin of :class:`coordinator.ops.runner.OpsService`
(the loops need its ops thread, clock, leadership and announcements, nothing else)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from coordinator.db import write_transaction
from coordinator.errors import StoreError
from coordinator.observability import Metrics
from coordinator.ops import escalation_store, inbox_store, telemetry, tracker_store
from coordinator.ops.config import OpsConfig
from coordinator.ops.escalation import Escalate
from coordinator.ops.handler import HandleResult, OpsCore
from coordinator.ops.leadership import Leadership
from coordinator.ops.lease_store import LeaseLost
from coordinator.ops.notify.dispatcher import Dispatcher
from coordinator.reconnect import OutageLog
from protocols.clock import Clock

log = logging.getLogger(__name__)
T = TypeVar("T")


class Periodic:
    config: OpsConfig
    clock: Clock
    metrics: Metrics | None
    roster: escalation_store.RosterLookup
    leadership: Leadership | None
    dispatcher: Dispatcher

    # provided by the service
    def leading(self) -> bool:
        raise NotImplementedError

    async def call(self, fn: Callable[[OpsCore], T]) -> T:
        raise NotImplementedError

    def _after(self, result: HandleResult) -> None:
        raise NotImplementedError

    def _announce(self, *topics: str) -> None:
        raise NotImplementedError

    # -- loops -------------------------------------------------------------------------
    @staticmethod
    async def _round(outage: OutageLog, work: Callable[[], Awaitable[object]]) -> None:
        """One round of a loop: a failure never ends the loop. The database away is
        logged once per outage (a line per round would flood the log for its length)."""
        try:
            await work()
        except LeaseLost as exc:  # deposed between the check and the round: no outage
            log.warning("%s: %s", outage.what, exc)
        except StoreError as exc:
            outage.failed(exc)
        except Exception:
            log.exception("%s failed", outage.what)
        else:
            outage.succeeded()

    async def _ticker(self) -> None:
        outage = OutageLog("ops tick")
        while True:
            await asyncio.sleep(self.config.tick_interval_s)
            if not self.leading():
                continue
            await self._round(outage, self._tick_once)

    async def _tick_once(self) -> None:
        result = await self.call(lambda core: core.tick(self.clock.now()))
        self._after(result)
        await self.escalate()

    async def escalate(self) -> list[Escalate]:
        """Queue the escalations due now (see coordinator.ops.escalation)."""
        cfg = self.config.escalation
        if not cfg.enabled:
            return []
        now = self.clock.now()
        queued = await self.call(lambda core: escalation_store.run(
            core.db, cfg.policy, self.config.notify, now, self.roster))
        if queued:
            self.dispatcher.wake()
            self._announce("incidents", "notifications")
        return queued

    async def _pruner(self) -> None:
        # Its own loop: a prune scans the dedupe table, far too often at the tick rate.
        outage = OutageLog("ops dedupe prune")
        while True:
            await asyncio.sleep(self.config.dedupe_prune_interval_s)
            if not self.leading():
                continue
            await self._round(outage, self.prune_dedupe)

    async def prune_dedupe(self) -> int:
        """Drop the dedupe keys no agent lifetime needs any more; return how many rows."""
        keep = self.config.dedupe_keep_per_agent

        def prune(core: OpsCore) -> int:
            with write_transaction(core.db):
                pruned = tracker_store.prune_processed(core.db, core.tracker, keep)
            if self.leadership is not None:
                keep_inbox = timedelta(seconds=self.config.cluster.inbox_keep_s)
                pruned += inbox_store.prune(core.db, self.clock.now(), keep_inbox)
            return pruned

        return await self.call(prune)

    async def _telemetry_maintainer(self) -> None:
        outage = OutageLog("telemetry maintenance")
        while True:
            await asyncio.sleep(self.config.telemetry.maintenance_interval_s)
            if not self.leading():
                continue  # one instance merges and prunes for all
            await self._round(outage, self.maintain_telemetry)

    async def maintain_telemetry(self) -> telemetry.Maintenance:
        """Downsample old telemetry and drop what is past retention (see ops.telemetry)."""
        cfg = self.config.telemetry
        now = self.clock.now()
        done = await self.call(lambda core: telemetry.maintain(
            core.db, now, raw_keep=cfg.raw_keep, bucket_s=cfg.bucket_s,
            retention=cfg.retention))
        if self.metrics is not None:
            self.metrics.telemetry_maintenance.labels("merged").inc(done.merged)
            self.metrics.telemetry_maintenance.labels("pruned").inc(done.pruned)
        return done
