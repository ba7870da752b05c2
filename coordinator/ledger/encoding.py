"""Decisions as the ledger stores them: the candidate trace's JSON, the warehouse of each
line of a (split) decision, and the one JSON encoder."""

from __future__ import annotations

import json
import math
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

# Texts of the floats and strings of recent traces. Why: the C encoder spells each float
# with repr, most of a trace's cost, and a reroute's traces repeat the same distances,
# rates, depths and reasons order after order. Keys are values of one type each (a float
# never meets an int or a bool equal to it there, see _rows_json); zeros are not kept
# (0.0 == -0.0). Cleared when full: memory stays bounded in a long-running service.
_FLOATS: dict[float, str] = {}
_TEXTS: dict[str, str] = {}
_KEPT = 50_000
_NUMBER = frozenset({float, type(None)})
_TEXT = frozenset({str, type(None)})


def _float_json(value: float) -> str:
    if value == 0.0:
        return "0.0" if math.copysign(1.0, value) > 0 else "-0.0"
    if len(_FLOATS) >= _KEPT:
        _FLOATS.clear()
    # finite: repr, as the C encoder spells it (NaN and infinities: its own words)
    text = _FLOATS[value] = repr(value) if value - value == 0.0 else _values_json(value)
    return text


def _text_json(value: str) -> str:
    if len(_TEXTS) >= _KEPT:
        _TEXTS.clear()
    text = _TEXTS[value] = _values_json(value)
    return text


def _rows_json(rows: tuple[CandidateTrace, ...]) -> str:
    """``to_json(rows)``, the same text, with the spelling of repeated values looked up."""
    floats, texts, number, text = _FLOATS, _TEXTS, _NUMBER, _TEXT
    out = []
    for row in rows:
        wid, dist, rate, depth, score, chosen, by, why = row
        if (type(wid) is not str or type(dist) is not float or type(rate) not in number
                or type(depth) not in number or type(score) not in number
                or type(chosen) is not bool or type(by) not in text
                or type(why) not in text):
            out.append(_values_json(row))  # not the declared types: the plain encoder
            continue
        out.append(
            f"[{texts.get(wid) or _text_json(wid)},"
            f"{floats.get(dist) or _float_json(dist)},"
            f"{'null' if rate is None else floats.get(rate) or _float_json(rate)},"
            f"{'null' if depth is None else floats.get(depth) or _float_json(depth)},"
            f"{'null' if score is None else floats.get(score) or _float_json(score)},"
            f"{'true' if chosen else 'false'},"
            f"{'null' if by is None else texts.get(by) or _text_json(by)},"
            f"{'null' if why is None else texts.get(why) or _text_json(why)}]")
    return f"[{','.join(out)}]"

TRACE_COLUMNS = CandidateTrace._fields


# the column names are the same in every trace: encoded once, not once per decision
_TRACE_HEAD = '{"columns":' + to_json(TRACE_COLUMNS) + ',"rows":'


def trace_json(decision: Decision) -> str:
    """The candidate trace as stored: one JSON row per candidate, columns in TRACE_COLUMNS.

    ``{"columns", "rows", "examined", "farthest_examined_km", "omitted"}``, the same text
    ``to_json`` gives for that dict, built without re-encoding the constant column names.
    """
    return (f"{_TRACE_HEAD}{_rows_json(decision.candidates)},"
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
