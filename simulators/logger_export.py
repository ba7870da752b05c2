"""A scenario's readings for one warehouse as a data logger would export them (CSV).

Columns ``time,sensor_id,temperature_c,humidity_pct``: ISO 8601 times in the scenario's
own offset (loggers record local time), values in °C and %RH, empty when the sensor does
not measure that metric. ``python -m edge_agent replay`` reads this format.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import TextIO

from simulators.events import Event, ScenarioReading

COLUMNS = ("time", "sensor_id", "temperature_c", "humidity_pct")


def write_logger_csv(events: Iterable[Event], warehouse: str, out: TextIO) -> int:
    """Write ``warehouse``'s readings; return how many rows were written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    rows = 0
    for event in events:
        if not isinstance(event, ScenarioReading) or event.warehouse != warehouse:
            continue
        temperature, humidity = event.value("temperature_c"), event.value("humidity_pct")
        writer.writerow([
            event.at.isoformat(),
            event.sensor,
            "" if temperature is None else f"{temperature:.2f}",
            "" if humidity is None else f"{humidity:.1f}",
        ])
        rows += 1
    return rows
