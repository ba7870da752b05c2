"""The one timestamp format stored and compared as text: ISO-8601 UTC, milliseconds, ``Z``.

``2026-11-30T04:27:56.123Z``: fixed width, so text order is time order (SQL ``ORDER BY``,
``<`` on columns, ``max()``) on every backend. Every stored time is written with
:func:`stamp` and read back with :func:`parse_stamp`; microseconds and ``+00:00`` were
both written once, which sort wrongly against each other (see the ``m002`` migrations).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

# strftime pattern of SQLite that yields the same text from any ISO-8601 time
SQLITE_STAMP = "%Y-%m-%dT%H:%M:%fZ"


def stamp(moment: datetime) -> str:
    """``moment`` (timezone-aware) as stored: UTC, milliseconds (truncated), ``Z``."""
    utc = moment.astimezone(UTC)
    # the year by hand: strftime's %Y does not pad years before 1000 ("3-03-01T..."),
    # which broke both the fixed width and parsing it back (seen from a fuzzed API body)
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def stamp_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else stamp(moment)


def parse_stamp(text: str) -> datetime:
    """A stored time back to an aware datetime (any ISO-8601 text with an offset or ``Z``)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:  # stored times are UTC by definition
        moment = moment.replace(tzinfo=UTC)
    return moment


def parse_stamp_or_none(text: str | None) -> datetime | None:
    return None if text is None else parse_stamp(text)


def utc_day(moment: datetime) -> str:
    """The UTC calendar day of ``moment`` (``YYYY-MM-DD``), e.g. for daily capacity."""
    day: date = moment.astimezone(UTC).date()
    return day.isoformat()
