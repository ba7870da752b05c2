"""The coordinator in this event loop: served by uvicorn on 127.0.0.1 on a SQLite file
with the sample region, an admin login and token, and a gateway per warehouse.

The demo and the end-to-end tests and benchmark run it on the replay's clock, so courier
silence and "received" times are in event time too. Without the coordinator installed
:func:`start_coordinator` returns None.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from protocols import Topics
from protocols.clock import ManualClock
from simulators.brokers import free_port
from simulators.edge_configs import agent_id_for

StopFn = Callable[[], Awaitable[None]]


@dataclass
class RunningCoordinator:
    url: str
    stop: StopFn
    wait: StopFn  # returns when the server stops (Ctrl-C while holding)
    app: Any  # the FastAPI app (``app.state.ops`` is the ops service while it runs)
    db_path: Path
    sink_path: Path | None  # the franchisee notice file sink (ops side only)
    headers: dict[str, str]  # the demo's own admin token (Authorization: Bearer)
    login: tuple[str, str]  # username and password of the demo's admin login

    def on_reroute(self, hook: Callable[[Any], None]) -> None:
        """Call ``hook(RerouteTiming)`` for each reroute the ops side commits."""
        ops = getattr(self.app.state, "ops", None)
        if ops is None:
            raise RuntimeError("the coordinator runs without the ops side")

        def seen(result: Any) -> None:
            for timing in result.rerouted:
                hook(timing)

        ops.on_result = seen


def _quiet_server_class() -> type[Any]:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without its own Ctrl-C handling: in the main thread it would swallow
        SIGINT to stop only itself while the replay went on. Here Ctrl-C reaches
        ``asyncio.run``, which cancels the demo; its ``finally`` stops the server."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


def port_or_free(port: int | None, host: str = "127.0.0.1") -> int:
    """``port`` if it can be bound on ``host`` now, else a free one (None or 0: a free one)."""
    if not port:
        return free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return free_port()
    return port


async def start_coordinator(
    workdir: Path,
    mqtt_url: str,
    topics: Topics,
    clock: ManualClock,
    *,
    port: int | None = None,
    alerts_url: str | None = None,
) -> RunningCoordinator | None:
    """The coordinator (with ops and dashboard when installed) served by uvicorn on
    127.0.0.1 in this event loop, or None if the coordinator is not installed.

    SQLite file and notification sink live in ``workdir``; the sample region is loaded;
    the coordinator shares the replay's clock, so courier silence and "received" times
    are in event time too. ``port``: that port if free, else (or when None) a free one.
    ``alerts_url``: an HTTP receiver (:class:`simulators.receiver.Receiver` with a
    journal) that gets the operations alerts on ``/wecom``, ``/sms`` and ``/webhook`` in
    their real formats.
    """
    try:
        import uvicorn

        catalog = importlib.import_module("coordinator.catalog")
        db_module = importlib.import_module("coordinator.db")
        region_module = importlib.import_module("coordinator.region")
        settings_module = importlib.import_module("coordinator.settings")
        app_module = importlib.import_module("coordinator.app")
        serving_module = importlib.import_module("coordinator.serving")
    except ImportError:
        return None
    ops_app: ModuleType | None
    ops_config: ModuleType | None
    try:
        ops_app = importlib.import_module("coordinator.ops.app")
        ops_config = importlib.import_module("coordinator.ops.config")
    except ImportError:
        ops_app = ops_config = None  # the coordinator without the ops side
    os.makedirs(workdir, exist_ok=True)
    db_path = workdir / "coordinator.sqlite"
    db = db_module.open_database(str(db_path))
    for name in region_module.SAMPLE_FILES:
        catalog.import_file(db, region_module.SAMPLE_DIR / f"{name}.csv", clock.now())
    headers, login = _demo_credentials(db, clock.now())
    _register_gateways(db, clock.now())
    db.conn.close()
    chosen = port_or_free(port)
    sections: dict[str, Any] = {}
    if alerts_url is not None:
        # customers of every channel are reached through the local inbox; of the status
        # nodes only "rerouted" is sent (the day's thousands of nodes would drown it)
        route = {"route": "webhook", "url": f"{alerts_url}/customer"}
        sections["customer"] = {"message_nodes": ["rerouted"], "channels": {
            c: route for c in ("wechat_mini", "meituan", "douyin")}}
    settings = settings_module.Settings(
        db_path=str(db_path), host="127.0.0.1", port=chosen, mqtt_url=mqtt_url,
        topic_root=topics.root, sections=sections,
    )  # fmt: skip
    sink: Path | None = None
    if ops_app is not None and ops_config is not None:
        sink = workdir / "notifications" / "franchisee.jsonl"
        notify: dict[str, Any] = {"franchisee": {"jsonl_path": str(sink)}}
        if alerts_url is not None:
            notify |= {
                "wecom": {"enabled": True, "url": f"{alerts_url}/wecom"},
                "sms": {"enabled": True, "url": f"{alerts_url}/sms",
                        "phone_numbers": ["13800000000"]},
                "webhook": {"enabled": True, "url": f"{alerts_url}/webhook"},
            }  # fmt: skip
        config = ops_config.OpsConfig.model_validate({"notify": notify})
        app = ops_app.create_app_with_ops(settings, clock=clock, config=config)
    else:
        app = app_module.create_app(settings, clock=clock)
    server = _quiet_server_class()(
        uvicorn.Config(app, host="127.0.0.1", port=chosen, log_level="warning", access_log=False,
                       timeout_graceful_shutdown=serving_module.SHUTDOWN_GRACE_S)
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the coordinator stopped while starting")
        if time.monotonic() > deadline:
            raise RuntimeError("the coordinator did not start within 30 s")
        await asyncio.sleep(0.02)

    async def stop() -> None:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 10)

    async def wait() -> None:
        await asyncio.shield(task)

    return RunningCoordinator(f"http://127.0.0.1:{chosen}", stop, wait, app, db_path, sink,
                              headers, login)


def _register_gateways(db: Any, now: datetime) -> None:
    """One gateway per warehouse, named as the replayed agents are: the coordinator
    refuses breaker events from agents it has not registered."""
    gateways = importlib.import_module("coordinator.gateways.store")
    for (warehouse_id,) in db.execute("SELECT id FROM warehouses").fetchall():
        gateways.register(db, agent_id_for(warehouse_id), warehouse_id, actor="demo", now=now)


def _demo_credentials(db: Any, now: datetime) -> tuple[dict[str, str], tuple[str, str]]:
    """An admin login for the person watching (a fresh random password, printed) and an
    admin token for the demo's own requests: every endpoint wants a credential."""
    auth_store = importlib.import_module("coordinator.auth.store")
    roles = importlib.import_module("coordinator.auth.roles")
    password = secrets.token_urlsafe(12)
    auth_store.add_user(db, username="admin", password=password, role=roles.Role.ADMIN,
                        scope=roles.Scope(), now=now)
    _, token = auth_store.issue_token(db, name="demo", role=roles.Role.ADMIN,
                                      scope=roles.Scope(), now=now, created_by="demo")
    return {"Authorization": f"Bearer {token}"}, ("admin", password)
