"""Reads give way to a warehouse's transition, at most ``max_wait_s``, and at most
``max_active`` are computed at once; no sequence of arrivals, cancellations and answers
loses or invents a slot."""

from __future__ import annotations

import asyncio
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.read_yield import ReadYield, _wake


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


async def test_with_max_wait_zero_reads_never_wait_for_a_transition_nor_a_slot() -> None:
    gate = ReadYield(max_wait_s=0, max_active=2)
    gate.hold()
    for _ in range(5):  # no slot limit either: nothing would ever give a slot back
        await asyncio.wait_for(gate.admit(), 0.5)
    assert gate.stats.deferred == 0 and gate.stats.transitions == 0 and not gate.held


async def test_during_a_long_transition_no_read_waits_much_past_max_wait_s() -> None:
    # 12 reads, 2 slots, a transition that outlasts them all: the reads must not go
    # through in waves of 2, each wave waiting max_wait_s more (3 s for the last)
    gate = ReadYield(max_wait_s=0.5, max_active=2)
    gate.hold()
    started = time.monotonic()
    admitted: list[float] = []

    async def read() -> None:
        await gate.admit()
        admitted.append(time.monotonic() - started)

    await asyncio.wait_for(asyncio.gather(*(read() for _ in range(12))), 5)
    assert max(admitted) < 1.0  # 0.5 s and the event loop's own delays
    assert gate.stats.timed_out == 12 and gate.held
    gate.release()
    for _ in range(12):  # they went ahead over the limit; each gives its slot back
        gate.leave()
    await asyncio.wait_for(gate.admit(), 0.5)
    await asyncio.wait_for(gate.admit(), 0.5)  # two slots again, no more, no fewer
    third = asyncio.ensure_future(gate.admit())
    assert await _pending(third)
    gate.leave()
    await asyncio.wait_for(third, 1)


async def test_a_read_queued_for_a_slot_goes_ahead_at_max_wait_s() -> None:
    gate = ReadYield(max_wait_s=0.2, max_active=1)
    await gate.admit()  # a slow read holds the only slot
    await asyncio.wait_for(gate.admit(), 1)  # the next waits 0.2 s, then goes ahead
    assert gate.stats.queued == 1 and gate.stats.timed_out == 1
    assert gate.stats.queued_s >= 0.2
    gate.leave()
    gate.leave()
    await asyncio.wait_for(gate.admit(), 0.5)  # the slot is free again


async def test_a_client_gone_while_waiting_for_a_transition_keeps_no_slot() -> None:
    gate = ReadYield(max_wait_s=5.0, max_active=1)
    gate.hold()
    gone = asyncio.ensure_future(gate.admit())
    assert await _pending(gone)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    gate.release()
    await asyncio.wait_for(gate.admit(), 0.5)  # the one slot is free


def test_waking_a_read_whose_event_loop_has_closed_reports_it() -> None:
    loop = asyncio.new_event_loop()
    future: asyncio.Future[None] = loop.create_future()
    loop.close()
    assert not _wake((loop, future))


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


# a step: admit a new read, cancel the n-th waiting one, answer an admitted one, begin or
# end a transition (from another thread, as the ops thread does), or let the event loop
# run (wakes are delivered through it)
STEPS = st.lists(st.one_of(st.just(("admit", 0)), st.tuples(st.just("cancel"),
                                                             st.integers(0, 5)),
                           st.tuples(st.just("leave"), st.integers(0, 5)),
                           st.just(("hold", 0)), st.just(("release", 0)),
                           st.just(("run", 0))), max_size=40)


@settings(max_examples=150, deadline=None)
@given(STEPS, st.integers(1, 3))
def test_no_sequence_of_reads_cancellations_and_answers_loses_a_slot(
        steps: list[tuple[str, int]], slots: int) -> None:
    async def scenario() -> None:
        gate = ReadYield(max_wait_s=30.0, max_active=slots)
        waiting: list[asyncio.Task[None]] = []
        admitted = holds = 0
        for action, n in steps:
            if action == "admit":
                waiting.append(asyncio.ensure_future(gate.admit()))
            elif action == "cancel" and waiting:
                waiting[n % len(waiting)].cancel()
            elif action == "leave" and admitted:
                gate.leave()
                admitted -= 1
            elif action == "hold":
                await asyncio.to_thread(gate.hold)
                holds += 1
            elif action == "release" and holds:
                await asyncio.to_thread(gate.release)
                holds -= 1
            await asyncio.sleep(0)
            for task in [t for t in waiting if t.done()]:
                waiting.remove(task)
                admitted += 0 if task.cancelled() else 1
            assert admitted <= slots  # never more reads computed than slots
        for _ in range(holds):  # the transitions end
            await asyncio.to_thread(gate.release)
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
        assert not gate.held and gate.stats.timed_out == 0
        for _ in range(slots):  # every slot is free again
            await asyncio.wait_for(gate.admit(), 0.5)

    asyncio.run(scenario())


async def test_a_live_recompute_gives_way_to_a_transition_but_needs_no_slot() -> None:
    gate = ReadYield(max_wait_s=5.0, max_active=1)
    await gate.admit()  # every slot taken
    await asyncio.wait_for(gate.give_way(), 0.5)  # no transition: at once, slot or not
    gate.hold()
    recompute = asyncio.ensure_future(gate.give_way())
    assert await _pending(recompute)
    await asyncio.to_thread(gate.release)
    await asyncio.wait_for(recompute, 1)
    assert gate.stats.deferred == 1
