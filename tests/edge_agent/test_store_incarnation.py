"""The state store's incarnation: one per database lifetime."""

from __future__ import annotations

import re
from pathlib import Path

from edge_agent.store import Store
from protocols.models import INCARNATION_PATTERN


def open_store(path: Path) -> Store:
    return Store(path, outbox_max_bytes=1_000_000, readings_keep=10)


def test_incarnation_persists_across_reopen_and_changes_after_wipe(tmp_path: Path) -> None:
    path = tmp_path / "edge.sqlite"
    store = open_store(path)
    first = store.incarnation
    assert re.fullmatch(INCARNATION_PATTERN, first)
    store.bump_session()
    store.close()
    reopened = open_store(path)
    assert reopened.incarnation == first
    assert reopened.session_seq == 1
    reopened.close()
    # The gateway's state is wiped (or the gateway replaced): a new lifetime.
    for leftover in tmp_path.glob("edge.sqlite*"):
        leftover.unlink()
    wiped = open_store(path)
    assert wiped.incarnation != first
    assert re.fullmatch(INCARNATION_PATTERN, wiped.incarnation)
    assert (wiped.seq, wiped.session_seq) == (0, 0)
    wiped.close()


def test_two_gateways_never_share_an_incarnation(tmp_path: Path) -> None:
    a, b = open_store(tmp_path / "a.sqlite"), open_store(tmp_path / "b.sqlite")
    try:
        assert a.incarnation != b.incarnation
    finally:
        a.close()
        b.close()
