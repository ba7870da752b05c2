"""On SQLite the ops service's connections never fold the WAL back inside their commits
(a 10,000-order reroute's commit paid ~0.06 s for it): a checkpointer thread does, the
service's own, or the host app's when it runs one (a real SQLite file)."""

from __future__ import annotations

from pathlib import Path

from coordinator.db import WalCheckpointer
from coordinator.ops.runner import OpsService
from protocols import Topics
from tests.coordinator.ops.helpers import ops_config, settings_for, wait_for


def _autocheckpoint(ops: OpsService) -> object:
    return ops.call(lambda core: core.db.conn.execute("PRAGMA wal_autocheckpoint"
                                                      ).fetchone()[0])


async def test_ops_commits_leave_the_checkpoint_to_the_services_thread(tmp_path: Path) -> None:
    path = tmp_path / "ops.sqlite"
    settings = settings_for(path, "mqtt://127.0.0.1:1", Topics("bwwal"))
    config = ops_config(tmp_path).model_copy(update={"subscribe_mqtt": False})
    async with OpsService(settings, config) as ops:
        assert await _autocheckpoint(ops) == 0
        checkpointer = ops.checkpointer
        assert checkpointer is not None
        await wait_for(lambda: checkpointer.checkpoints > 0, what="a WAL checkpoint")
        assert checkpointer.failures == 0
    assert not checkpointer.alive  # stopped with the service


async def test_a_host_apps_checkpointer_is_the_only_one(tmp_path: Path) -> None:
    path = tmp_path / "ops.sqlite"
    settings = settings_for(path, "mqtt://127.0.0.1:1", Topics("bwwal"))
    config = ops_config(tmp_path).model_copy(update={"subscribe_mqtt": False})
    with WalCheckpointer(path) as host:
        async with OpsService(settings, config, checkpointer=host) as ops:
            assert ops.checkpointer is None
            assert await _autocheckpoint(ops) == 0
            await wait_for(lambda: host.checkpoints > 0, what="the host's checkpoint")
