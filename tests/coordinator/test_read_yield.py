"""Reads give way to a warehouse's transition, at most ``max_wait_s``, and at most
``max_active`` are computed at once; no sequence of arrivals, cancellations and answers
loses or invents a slot."""

from __future__ import annotations

import asyncio
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.read_yield import ReadYield


async def _pending(task: asyncio.Task[None]) -> bool:
    await asyncio.sleep(0.05)
    return not task.done()


async def test_a_read_arriving_during_a_transition_waits_until_the_ops_thread_releases_it(
) -> None:
    gate = ReadYield(max_wait_s=5.0, max_active=8)
    ops = threading.Thread(target=gate.hold)  # the ops thread, as in production
    ops.start()
    ops.join()
    read = asyncio.ensure_future(gate.admit())
    assert await _pending(read)
    await asyncio.to_thread(gate.release)
    await asyncio.wait_for(read, 1)
    gate.leave()
    assert gate.stats.deferred == 1 and gate.stats.timed_out == 0
    assert gate.stats.transitions == 1 and not gate.held


async def test_a_transition_longer_than_max_wait_no_longer_holds_reads() -> None:
    gate = ReadYield(max_wait_s=0.05, max_active=8)
    gate.hold()
    await asyncio.wait_for(gate.admit(), 1)  # answered although the transition goes on
    gate.leave()
    assert gate.stats.timed_out == 1 and gate.stats.waited_s >= 0.05
    gate.release()  # nothing left to wake
    assert await asyncio.wait_for(gate.admit(), 1) is None and gate.stats.deferred == 1


async def test_with_max_wait_zero_reads_never_wait_for_a_transition() -> None:
    gate = ReadYield(max_wait_s=0, max_active=0)
    gate.hold()
    await asyncio.wait_for(gate.admit(), 0.5)
    assert gate.stats.deferred == 0 and gate.stats.transitions == 0 and not gate.held


async def test_reads_beyond_max_active_are_admitted_in_arrival_order() -> None:
    gate = ReadYield(max_wait_s=1.0, max_active=2)
    await gate.admit()
    await gate.admit()
    order: list[int] = []

    async def read(n: int) -> None:
        await gate.admit()
        order.append(n)

    queued = [asyncio.ensure_future(read(n)) for n in range(3)]
    await asyncio.sleep(0.02)
    assert order == [] and gate.stats.queued == 3
    for _ in range(3):
        gate.leave()
        await asyncio.sleep(0.02)
    await asyncio.gather(*queued)
    assert order == [0, 1, 2]


async def test_a_read_queued_before_a_transition_does_not_start_during_it() -> None:
    gate = ReadYield(max_wait_s=5.0, max_active=1)
    await gate.admit()
    queued = asyncio.ensure_future(gate.admit())
    assert await _pending(queued)
    gate.hold()
    gate.leave()  # its slot is free now, but a transition is under way
    assert await _pending(queued)
    gate.release()
    await asyncio.wait_for(queued, 1)


async def test_a_client_gone_while_queued_hands_its_slot_on() -> None:
    gate = ReadYield(max_wait_s=1.0, max_active=1)
    await gate.admit()
    gone = asyncio.ensure_future(gate.admit())
    nxt = asyncio.ensure_future(gate.admit())
    await asyncio.sleep(0.02)
    gone.cancel()
    gate.leave()
    await asyncio.wait_for(nxt, 1)  # the slot went past the cancelled one
    gate.leave()
    await asyncio.wait_for(gate.admit(), 1)  # and one slot is still there


# a step: admit a new read, cancel the n-th waiting one, answer the n-th admitted one,
# or let the event loop run (wakes are delivered through it)
STEPS = st.lists(st.one_of(st.just(("admit", 0)), st.tuples(st.just("cancel"),
                                                             st.integers(0, 5)),
                           st.tuples(st.just("leave"), st.integers(0, 5)),
                           st.just(("run", 0))), max_size=40)


@settings(max_examples=150, deadline=None)
@given(STEPS, st.integers(1, 3))
def test_no_sequence_of_reads_cancellations_and_answers_loses_a_slot(
        steps: list[tuple[str, int]], slots: int) -> None:
    async def scenario() -> None:
        gate = ReadYield(max_wait_s=1.0, max_active=slots)
        waiting: list[asyncio.Task[None]] = []
        admitted = 0
        for action, n in steps:
            if action == "admit":
                waiting.append(asyncio.ensure_future(gate.admit()))
            elif action == "cancel" and waiting:
                waiting[n % len(waiting)].cancel()
            elif action == "leave" and admitted:
                gate.leave()
                admitted -= 1
            await asyncio.sleep(0)
            for task in [t for t in waiting if t.done()]:
                waiting.remove(task)
                admitted += 0 if task.cancelled() else 1
            assert admitted <= slots  # never more reads computed than slots
        # answer every admitted read and every queued one as it gets in: all get in
        for _ in range(200):
            if not waiting and not admitted:
                break
            if admitted:
                gate.leave()
                admitted -= 1
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            for task in [t for t in waiting if t.done()]:
                waiting.remove(task)
                admitted += 0 if task.cancelled() else 1
        assert not waiting and not admitted
        for _ in range(slots):  # every slot is free again
            await asyncio.wait_for(gate.admit(), 0.5)

    asyncio.run(scenario())
