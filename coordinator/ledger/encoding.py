"""Decisions as the ledger stores them: the candidate trace's JSON, the warehouse of each
line of a (split) decision, and the one JSON encoder."""

from __future__ import annotations

import json
from _json import make_encoder  # CPython's C encoder, the one JSONEncoder.encode uses
from collections.abc import Callable, Sequence
from typing import Any

from coordinator.allocation_model import CandidateTrace, Decision, Line

# one encoder built once: json.dumps with options builds a new encoder on every call
to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _values_encoder() -> Callable[[Any], str]:
    """``to_json`` for a decision's candidates and numbers, without its per-call set-up.

    Why: ``JSONEncoder.encode`` builds a new C encoder on every call, a large part of
    encoding three candidate rows, and a reroute encodes one trace per order. The C
    encoder built once here has ``to_json``'s options and gives the same text; no
    circular check (a trace is tuples of numbers and strings)."""
    encode = make_encoder(None, json.JSONEncoder().default, json.encoder.encode_basestring,
                          None, ":", ",", False, False, True)
    join = "".join

    def values_json(value: Any) -> str:
        return join(encode(value, 0))

    return values_json


_values_json = _values_encoder()

TRACE_COLUMNS = CandidateTrace._fields


# the column names are the same in every trace: encoded once, not once per decision
_TRACE_HEAD = '{"columns":' + to_json(TRACE_COLUMNS) + ',"rows":'


def trace_json(decision: Decision) -> str:
    """The candidate trace as stored: one JSON row per candidate, columns in TRACE_COLUMNS.

    ``{"columns", "rows", "examined", "farthest_examined_km", "omitted"}``, the same text
    ``to_json`` gives for that dict, built without re-encoding the constant column names.
    """
    return (f"{_TRACE_HEAD}{_values_json(decision.candidates)},"
            f"\"examined\":{decision.examined:d},"
            f"\"farthest_examined_km\":{_values_json(decision.farthest_examined_km)},"
            f"\"omitted\":{decision.omitted:d}}}")


def trace_candidates(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Stored trace rows back to one dict per candidate."""
    columns = trace.get("columns", TRACE_COLUMNS)
    return [dict(zip(columns, row, strict=True)) for row in trace.get("rows", [])]


def line_warehouses(decision: Decision, lines: Sequence[Line]) -> list[str | None]:
    """The warehouse each of ``lines`` is taken from (None: not allocated). A split puts
    each line where its part says; parts hold the very ``Line`` objects of the request."""
    if len(decision.parts) == 1:
        return [decision.parts[0].warehouse_id] * len(lines)
    placed: list[str | None] = [None] * len(lines)
    for part in decision.parts:
        for line in part.lines:
            for no, own in enumerate(lines):
                if own is line and placed[no] is None:
                    placed[no] = part.warehouse_id
                    break
    return placed
