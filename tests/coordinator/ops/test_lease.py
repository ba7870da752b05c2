"""The ops lease, decided purely: one leader at a time, epochs that only grow, a paused
leader that cannot write after resuming, a standby that takes over within a TTL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.ops.lease import Follow, LeaseKeeper, LeaseRow, Renew, Take

T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
TTL = 6.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Table:
    """The lease row and what a write transaction does with it (read, decide, write)."""

    def __init__(self) -> None:
        self.row: LeaseRow | None = None

    def step(self, keeper: LeaseKeeper, now: datetime) -> None:
        action = keeper.tick(now, self.row)
        if isinstance(action, Take | Renew):
            self.row = LeaseRow(keeper.instance, action.epoch, action.expires_at)
        keeper.written(action)

    def check(self, keeper: LeaseKeeper, now: datetime) -> bool:
        """What every ops transaction checks before it writes."""
        row = self.row
        return (row is not None and row.holder == keeper.instance
                and row.epoch == keeper.epoch and row.expires_at > now)


def test_the_first_instance_takes_epoch_one_and_the_second_follows() -> None:
    table, a, b = Table(), LeaseKeeper("a", TTL), LeaseKeeper("b", TTL)
    table.step(a, at(0))
    table.step(b, at(0.1))
    assert (a.epoch, b.epoch) == (1, None)
    assert a.leading(at(1)) and not b.leading(at(1))
    assert b.tick(at(0.2), table.row) == Follow("a")


def test_the_leader_renews_after_half_the_ttl_and_keeps_its_epoch() -> None:
    table, a = Table(), LeaseKeeper("a", TTL)
    table.step(a, at(0))
    assert a.tick(at(1), table.row) == Follow(None)
    assert a.tick(at(3.5), table.row) == Renew(1, at(3.5 + TTL))


def test_a_standby_takes_over_once_the_dead_leaders_lease_expired() -> None:
    table, a, b = Table(), LeaseKeeper("a", TTL), LeaseKeeper("b", TTL)
    table.step(a, at(0))  # then a dies: it never ticks again
    for second in range(1, 6):
        table.step(b, at(second))
        assert b.epoch is None
    table.step(b, at(6.5))
    assert b.epoch == 2 and table.check(b, at(6.5))


def test_a_leader_paused_past_its_lease_cannot_write_when_it_resumes() -> None:
    table, a, b = Table(), LeaseKeeper("a", TTL), LeaseKeeper("b", TTL)
    table.step(a, at(0))
    table.step(b, at(7))  # a is stopped (SIGSTOP); b takes over
    # a resumes still believing in epoch 1: the check inside its transaction refuses
    assert a.epoch == 1
    assert not table.check(a, at(7.1))
    table.step(a, at(7.2))
    assert a.epoch is None and not a.leading(at(7.2))


def test_an_instance_that_finds_its_own_expired_lease_takes_a_new_epoch() -> None:
    table, a = Table(), LeaseKeeper("a", TTL)
    table.step(a, at(0))
    table.step(a, at(20))
    assert a.epoch == 2  # what epoch 1 still had in flight is refused


def test_a_restarted_instance_waits_for_its_old_lease_to_expire() -> None:
    table = Table()
    table.step(LeaseKeeper("a", TTL), at(0))
    again = LeaseKeeper("a", TTL)  # same name, new process: it does not know epoch 1
    table.step(again, at(1))
    assert again.epoch is None
    table.step(again, at(6.1))
    assert again.epoch == 2


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from("abc"), st.floats(0.01, 5.0)),
                      min_size=1, max_size=80))
def test_at_most_one_instance_passes_the_check_and_epochs_only_grow(
    steps: list[tuple[str, float]]
) -> None:
    table = Table()
    keepers = {name: LeaseKeeper(name, TTL) for name in "abc"}
    now, last_epoch = 0.0, 0
    for name, gap in steps:
        now += gap
        table.step(keepers[name], at(now))
        assert table.row is not None
        assert table.row.epoch >= last_epoch
        last_epoch = table.row.epoch
        passing = [k for k in keepers.values() if table.check(k, at(now))]
        assert len(passing) <= 1


@given(gap=st.floats(0.01, 2.9))
def test_a_leader_ticking_in_time_is_never_replaced(gap: float) -> None:
    table, a, b = Table(), LeaseKeeper("a", TTL), LeaseKeeper("b", TTL)
    now = 0.0
    for _ in range(30):
        table.step(a, at(now))
        table.step(b, at(now + gap / 2))
        now += gap
    assert table.row is not None and table.row.holder == "a" and table.row.epoch == 1


def test_a_zero_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        LeaseKeeper("a", 0)


def test_take_of_an_empty_table() -> None:
    assert LeaseKeeper("a", TTL).tick(at(0), None) == Take(1, at(TTL))
