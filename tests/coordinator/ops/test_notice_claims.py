"""A dispatcher's claim on its batch (PostgreSQL, where any instance delivers): renewed
while the batch is out, so a slow receiver or a replaced connection never lets another
instance send it again; given up by a dispatcher frozen past it, which then sends
nothing more. Real HTTP receiver on loopback, a private PostgreSQL, two dispatchers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from coordinator.db import Database, open_database
from coordinator.ops.config import DispatcherConfig, NotifyConfig, WebhookConfig
from coordinator.ops.notify import outbox
from coordinator.ops.notify.dispatcher import Dispatcher
from coordinator.ops.notify.outbox import OutgoingNotice
from protocols.clock import ManualClock, SystemClock
from simulators.receiver import Received, Receiver
from tests.coordinator.ops.factories import T0
from tests.coordinator.pg_sessions import end_sessions

NOTICES = 10


@pytest.fixture
def queued(postgres_url: str) -> Iterator[Database]:
    """Ten webhook notices due at T0; the connection checks the outcome."""
    db = open_database(postgres_url)
    with db.atomic():
        outbox.queue(db, [OutgoingNotice("webhook", f"hook:{i}", {"n": i})
                          for i in range(NOTICES)], T0)
    try:
        yield db
    finally:
        db.conn.close()


def _config(receiver: Receiver, lease_s: float) -> NotifyConfig:
    return NotifyConfig(webhook=WebhookConfig(enabled=True, url=receiver.url + "/hook"),
                        dispatcher=DispatcherConfig(claim_lease_s=lease_s, batch_size=100))


def _slow(seconds: float, then: Callable[[], None] = lambda: None
          ) -> Callable[[Received], Any]:
    def answer(_: Received) -> Any:
        then()
        time.sleep(seconds)
        return {"errcode": 0}
    return answer


def _delivered(receiver: Receiver) -> list[int]:
    return sorted(r.body["n"] for r in receiver.on("/hook"))


async def _first_sends_while_second_polls(first: Dispatcher, second: Dispatcher) -> None:
    """The first claims the batch and sends it; the second polls all along."""
    out = asyncio.create_task(first.run_once())
    await asyncio.sleep(0)  # the first claims the batch, then sends
    await _poll(second, out.done, 30)
    assert await out == NOTICES
    await first.aclose()
    await second.aclose()


async def _poll(dispatcher: Dispatcher, until: Callable[[], bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not until():
        assert time.monotonic() < deadline, "the outbox was not delivered in time"
        await dispatcher.run_once()
        await asyncio.sleep(0.05)


async def test_a_slow_receiver_never_lets_another_dispatcher_send_a_batch_in_hand(
        queued: Database, postgres_url: str) -> None:
    # ten notices at 0.4 s each, two at a time: about 2 s out, against a 0.6 s lease;
    # a second dispatcher polls all along and finds nothing due
    clock = SystemClock()  # the claim is renewed as time passes (the notices were due)
    with Receiver(respond=_slow(0.4)) as receiver:
        cfg = _config(receiver, 0.6)
        first = Dispatcher(lambda: open_database(postgres_url), cfg, clock,
                           concurrency=2)
        second = Dispatcher(lambda: open_database(postgres_url), cfg, clock)
        await _first_sends_while_second_polls(first, second)
    assert _delivered(receiver) == list(range(NOTICES))  # each once
    assert first.stats.claim_renewals >= 2
    assert second.stats.sent == 0
    assert outbox.counts(queued) == {("webhook", "sent"): NOTICES}


async def test_a_dispatcher_whose_session_the_server_ended_keeps_its_batch(
        queued: Database, postgres_url: str) -> None:
    # the server ends the first dispatcher's session while its batch is out (a restart,
    # a takeover ending an old holder's ops sessions): it renews on a new connection
    clock = SystemClock()
    ended: list[int] = []
    once = threading.Lock()  # two attempts run at once, each in a receiver thread

    def end_once() -> None:
        with once:
            if not ended:
                ended.append(end_sessions(postgres_url, "application_name = 'first'"))

    with Receiver(respond=_slow(0.4, then=end_once)) as receiver:
        cfg = _config(receiver, 0.8)
        first = Dispatcher(
            lambda: open_database(f"{postgres_url}?application_name=first", migrate=False),
            cfg, clock, concurrency=2)
        second = Dispatcher(lambda: open_database(postgres_url), cfg, clock)
        await _first_sends_while_second_polls(first, second)
    assert ended == [1]
    assert _delivered(receiver) == list(range(NOTICES))
    assert second.stats.sent == 0
    assert outbox.counts(queued) == {("webhook", "sent"): NOTICES}


async def test_a_dispatcher_frozen_past_its_claim_sends_nothing_more_when_it_resumes(
        queued: Database, postgres_url: str) -> None:
    # one attempt at a time; during the first, the dispatcher "freezes" for 2 s (its
    # clock jumps past its 1 s claim) and another instance claims the batch meanwhile
    clock = ManualClock(T0)
    taken: list[int] = []
    other = open_database(postgres_url)

    def freeze_once() -> None:
        if not taken:
            clock.advance(2)
            taken.extend(n.id for n in outbox.claim(other, clock.now(), 100,
                                                     timedelta(seconds=30)))

    try:
        with Receiver(respond=_slow(0.05, then=freeze_once)) as receiver:
            first = Dispatcher(lambda: open_database(postgres_url), _config(receiver, 1.0),
                               clock, concurrency=1)
            assert await first.run_once() == NOTICES
            await first.aclose()
    finally:
        other.conn.close()
    assert len(taken) == NOTICES  # the claim had run out: the other took all of them
    # the attempt under way when it froze went out; none started after it resumed
    assert len(receiver.on("/hook")) == 1
    assert first.stats.sent == 1 and first.stats.claims_run_low == NOTICES - 1
    # the other's claim stands: nothing handed back, nothing due before it runs out
    assert outbox.claim(queued, clock.now(), 100, timedelta(seconds=30)) == []


async def test_a_renewal_given_up_on_a_lock_wait_loses_no_outcome(
        queued: Database, postgres_url: str) -> None:
    # the dispatcher's session bounds its lock waits (as fence_session does in a cluster);
    # another session holds a claimed row while a renewal comes: the renewal fails with
    # the driver's lock timeout, not a StoreError. Before, that ended the renewals and
    # was raised again at the end of the batch: nothing it had delivered was marked, and
    # every notice went out again once the claim ran out
    def fenced() -> Database:
        db = open_database(postgres_url, migrate=False)
        db.execute("SET lock_timeout = 100")
        return db

    holder = open_database(postgres_url, migrate=False)
    clock = SystemClock()
    with Receiver(respond=_slow(0.1)) as receiver:
        first = Dispatcher(fenced, _config(receiver, 0.8), clock, concurrency=1)
        out = asyncio.create_task(first.run_once())
        await asyncio.sleep(0.05)  # claimed, the first attempt out
        holder.execute("BEGIN")
        holder.execute("SELECT id FROM ops_notifications ORDER BY id LIMIT 1 FOR UPDATE")
        await asyncio.sleep(0.3)  # the renewal (every 0.2 s) waits past lock_timeout
        holder.execute("ROLLBACK")
        try:
            await out
            await _poll(first, lambda: len(receiver.on("/hook")) >= NOTICES, 30)
        finally:
            await first.aclose()
            holder.conn.close()
        await asyncio.sleep(1.0)  # past the claim: anything unmarked would be due again
        second = Dispatcher(lambda: open_database(postgres_url), _config(receiver, 0.8),
                            clock)
        await second.run_once()
        await second.aclose()
    assert _delivered(receiver) == list(range(NOTICES))  # each once
    assert outbox.counts(queued) == {("webhook", "sent"): NOTICES}
