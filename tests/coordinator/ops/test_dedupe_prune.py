"""ops_processed_events stays bounded: the ops service prunes it per agent lifetime on a
periodic task, and dedupe still refuses a recent repeat afterwards (a real SQLite file
and a real PostgreSQL database)."""

from __future__ import annotations

from pathlib import Path

from coordinator.ops.runner import OpsService
from protocols import Topics
from tests.coordinator.ops.factories import breaker_event
from tests.coordinator.ops.helpers import (
    counter,
    ops_config,
    read,
    register_gateways,
    settings_for,
    wait_for,
)

KEEP = 20
INCARNATION = "5f0c9a7e2b3d4c1a8e6f7a9b0c1d2e3f"


def rows(path: str) -> dict[tuple[str, str], int]:
    found = read(path, "SELECT agent_id, incarnation, count(*) FROM ops_processed_events "
                       "GROUP BY agent_id, incarnation")
    return {(r[0], r[1]): int(r[2]) for r in found}


async def test_processed_events_stay_bounded_and_recent_repeats_are_still_dropped(
        tmp_path: Path, db_target: str) -> None:
    path = db_target
    settings = settings_for(path, "mqtt://127.0.0.1:1", Topics("bwprune"))
    config = ops_config(tmp_path).model_copy(update={
        "subscribe_mqtt": False, "dedupe_keep_per_agent": KEEP,
        "dedupe_prune_interval_s": 0.05})
    register_gateways(path, {"gw-a": "wh-cc-2", "gw-b": "wh-cc-2"})
    async with OpsService(settings, config) as ops:
        for seq in range(1, 301):
            await ops.handle(breaker_event(seq=seq, open=False, agent="gw-a",
                                           incarnation=INCARNATION))
            await ops.handle(breaker_event(seq=seq, open=False, agent="gw-b",
                                           breaker="humidity"))
        # The periodic task runs while events keep coming; wait for one after the last.
        await wait_for(lambda: all(n <= KEEP for n in rows(path).values()),
                       what="the prune task")
        assert rows(path) == {("gw-a", INCARNATION): KEEP, ("gw-b", ""): KEEP}
        assert len(await ops.call(lambda core: core.tracker.state.processed)) == 2 * KEEP
        assert counter(path, "processed_events_pruned") == 2 * (300 - KEEP)
        before = counter(path, "duplicates_dropped")
        await ops.handle(breaker_event(seq=299, open=False, agent="gw-a",
                                       incarnation=INCARNATION))
        await ops.handle(breaker_event(seq=300, open=False, agent="gw-b", breaker="humidity"))
        assert counter(path, "duplicates_dropped") == before + 2
        # Long pruned: an older repeat is stale by its breaker's seq, never applied.
        stale = counter(path, "breaker_events_stale")
        await ops.handle(breaker_event(seq=5, episode="ep-old", agent="gw-a",
                                       incarnation=INCARNATION))
        assert counter(path, "breaker_events_stale") == stale + 1
        await ops.prune_dedupe()
        assert rows(path)[("gw-a", INCARNATION)] == KEEP
