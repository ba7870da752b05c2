"""A published outbox row a full disk kept (``_undeleted``) and that a later delete then
removed (a new uplink session's delete of the current states, or the outbox budget
making room) must not take the next event with it: the outbox's ids are SQLite rowids, reused
once the largest is gone. The disk is full for real: the child process's file size limit
(``RLIMIT_FSIZE``) makes the kernel refuse the writes, as a full disk does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import resource, signal, sys
from datetime import UTC, datetime
from edge_agent.messages import OutgoingMessage
from edge_agent.store import Store

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
NOW = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)

def event(seq, kind="breaker"):
    return OutgoingMessage(kind, f"t/{seq}", f'{{"seq": {seq}}}', 1, True, seq,
                           "cold" if kind == "breaker" else None)

session = sys.argv[2] == "session"
# the budget holds one row: the next event makes room by dropping the oldest telemetry
store = Store(sys.argv[1], outbox_max_bytes=1_000_000 if session else 15, readings_keep=10)
store.commit(NOW, outgoing=[event(1, "breaker" if session else "telemetry")])
[row] = store.outbox_rows()
resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))  # disk full
store.delete_outbox(row.id)  # published, acknowledged, not deleted: kept aside
resource.setrlimit(resource.RLIMIT_FSIZE,
                   (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # space again
if session:  # a new uplink session re-sends the current states and deletes them
    store.delete_outbox_seqs(r.seq for r in store.current_rows())
store.commit(NOW, outgoing=[event(2)])  # the next breaker event
print([r.seq for r in store.outbox_rows()], store.outbox_count)
"""


@pytest.mark.parametrize("deleted_by", ["session", "budget"])
def test_a_row_kept_aside_then_deleted_does_not_take_the_next_event_with_it(
        tmp_path: Path, deleted_by: str) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "state.db"),
                           deleted_by],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[2] 1"  # the event is queued, to be published
