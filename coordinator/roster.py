"""The staff roster: who works at which warehouse, their role, phone and on-duty hours.

Imported like the catalogue (CSV with a header row or JSON, all rows or none; see
:mod:`coordinator.catalog`), kept by :mod:`coordinator.roster_store`. On-duty hours are
wall-clock ranges in the region's time zone, e.g. ``08:00-22:00`` or ``22:00-06:00``
(past midnight), several separated by commas; ``00:00-24:00`` is all day. Who is on duty
is a pure function of the roster and an instant (time is an input).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from coordinator.catalog import Flag, Ident
from coordinator.personal import PhoneNumber

DEFAULT_TIMEZONE = "Asia/Shanghai"
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-(([01]\d|2[0-3]):([0-5]\d)|24:00)$")

Minutes = tuple[int, int]  # [start, end) minutes after local midnight; end may pass 1440


def parse_hours(text: str) -> tuple[Minutes, ...]:
    """``"08:00-12:00,14:00-22:00"`` -> ranges in minutes; ``ValueError`` names the bad part."""
    ranges: list[Minutes] = []
    for part in (p.strip() for p in text.split(",")):
        match = _RANGE.match(part)
        if match is None:
            message = f"{part!r} is not HH:MM-HH:MM (e.g. 08:00-22:00, 22:00-06:00)"
            raise ValueError(message)
        start = int(match[1]) * 60 + int(match[2])
        end = 1440 if match[3] == "24:00" else int(match[4]) * 60 + int(match[5])
        if end == start:
            message = f"{part!r} is empty (use 00:00-24:00 for all day)"
            raise ValueError(message)
        # a range past midnight ends the next day
        ranges.append((start, end if end > start else end + 1440))
    return tuple(ranges)


class StaffIn(BaseModel):
    """One roster row as imported (``POST /staff``, ``python -m coordinator import staff.csv``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: Ident
    warehouse_id: Ident
    name: str = Field(min_length=1, max_length=100)
    role: str = Field(min_length=1, max_length=64, description="e.g. 仓管, 店长, manager")
    phone: PhoneNumber
    on_duty: str = Field(default="00:00-24:00", max_length=200,
                         description="local wall-clock ranges: 08:00-22:00[,22:00-06:00]")
    active: Flag = True

    @field_validator("on_duty")
    @classmethod
    def _hours(cls, value: str) -> str:
        parse_hours(value)
        return value


@dataclass(frozen=True, slots=True)
class StaffMember:
    id: str
    warehouse_id: str
    name: str
    role: str
    phone: str
    on_duty: str
    active: bool

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> StaffMember:
        return cls(id=row["id"], warehouse_id=row["warehouse_id"], name=row["name"],
                   role=row["role"], phone=row["phone"], on_duty=row["on_duty"],
                   active=bool(row["active"]))

    def on_duty_at(self, at: datetime, tz: ZoneInfo) -> bool:
        """Active and ``at`` (aware) falls in one of the hours, in ``tz``'s wall clock."""
        if not self.active:
            return False
        local = at.astimezone(tz).time()
        return minutes_in(parse_hours(self.on_duty), local)


def minutes_in(ranges: tuple[Minutes, ...], local: time) -> bool:
    minute = local.hour * 60 + local.minute
    # a range past midnight also covers the early minutes of the next day
    return any(start <= m < end for start, end in ranges for m in (minute, minute + 1440))
