"""The state store's incarnation: one per database lifetime."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_agent.__main__ import main as edge_main
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


def test_restored_backup_gets_a_new_incarnation_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.toml"
    config.write_text(
        '[agent]\nagent_id = "gw-wh-02"\nwarehouse_id = "WH-02"\nstate_db = "state.sqlite"\n'
        '[[sensors]]\nid = "t1"\nzone = "cold_room_1"\ntopic = "sensors/t1"\n'
        '[[rules]]\nid = "cold"\nzone = "cold_room_1"\nmetric = "temperature_c"\n'
        'above = 8.0\nfor_s = 300\nbreaker = "cold_chain"\n'
        '[[breakers]]\nname = "cold_chain"\n', encoding="utf-8")
    store = open_store(tmp_path / "state.sqlite")
    store.next_seq()
    store.bump_session()
    before = store.incarnation
    store.close()

    assert edge_main(["new-incarnation", str(config)]) == 0

    restored = open_store(tmp_path / "state.sqlite")
    try:
        assert restored.incarnation != before
        assert re.fullmatch(INCARNATION_PATTERN, restored.incarnation)
        assert restored.session_seq == 1  # the counters go on; receivers compare anew
    finally:
        restored.close()
    assert f"{before} -> {restored.incarnation}" in capsys.readouterr().out
    assert edge_main(["new-incarnation", str(tmp_path / "missing.toml")]) == 2
