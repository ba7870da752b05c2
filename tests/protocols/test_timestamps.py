"""The one stored time format: fixed width, UTC, milliseconds, text order is time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from protocols.timestamps import parse_stamp, stamp, utc_day

# every year: years before 1000 once came out unpadded ("3-03-01T...")
moments = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31),
                       timezones=st.just(UTC))


def test_a_stamp_is_utc_with_milliseconds_and_z_whatever_the_offset() -> None:
    local = datetime(2026, 11, 24, 10, 17, 0, 123456, tzinfo=timezone(timedelta(hours=8)))
    assert stamp(local) == "2026-11-24T02:17:00.123Z"
    assert utc_day(local) == "2026-11-24"
    assert stamp(datetime(3, 3, 1, 20, 59, 57, tzinfo=UTC)) == "0003-03-01T20:59:57.000Z"


@given(moments, moments)
def test_text_order_of_stamps_is_time_order(a: datetime, b: datetime) -> None:
    ta, tb = stamp(a), stamp(b)
    assert len(ta) == len(tb) == 24
    if ta < tb:
        assert a < b
    assert abs(parse_stamp(ta) - a) < timedelta(milliseconds=1)
