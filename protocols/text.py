"""NUL characters in JSON text: refused at every boundary (HTTP bodies and wire payloads).

PostgreSQL's text types cannot hold U+0000, so a name or id carrying one failed deep in a
store with a driver error; SQLite stores it, so the same input behaved differently on the
two backends. JSON can only carry a NUL as the escape ``\\u0000`` (a raw NUL byte is not
valid JSON), so a payload whose bytes lack the escape needs no further look: the check
costs one substring search on the hot path.
"""

from __future__ import annotations

import json
from typing import Any

NUL = "\x00"
NUL_ESCAPE = b"\\u0000"
MESSAGE = "text must not contain NUL (U+0000) characters"


def may_hold_nul(raw: bytes | bytearray | str) -> bool:
    """Whether a JSON text could decode to a string holding a NUL (cheap pre-check)."""
    if isinstance(raw, str):
        return NUL_ESCAPE.decode() in raw
    return NUL_ESCAPE in raw


def nul_path(value: Any, where: str = "") -> str | None:
    """The dotted path (``0.name``; ``""`` for the value itself) of the first string, object
    key or value, holding a NUL in decoded JSON, or None."""
    if isinstance(value, str):
        return where if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{key}" if where else str(key)
            if NUL in key:
                return inner.replace(NUL, "?")
            found = nul_path(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, f"{where}.{index}" if where else str(index))
            if found is not None:
                return found
    return None


def nul_in_json(raw: bytes | bytearray | str) -> str | None:
    """The path of a NUL inside the JSON text ``raw``, if any (None for invalid JSON: its
    parser reports that)."""
    if not may_hold_nul(raw):
        return None
    try:
        decoded = json.loads(raw)
    except ValueError:
        return None
    return nul_path(decoded)
