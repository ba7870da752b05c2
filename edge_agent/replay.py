"""``python -m edge_agent replay site.toml READINGS``: a recorded night through the site's
rules, in event time, printing the breaker timeline (pending, tripped, cleared, and why).

Operators tune a rule on last month's data before changing it on the gateway: the replay
drives the agent's own pure core (:mod:`edge_agent.core`), so what it prints is what the
gateway would have done. Nothing is published and no state file is touched.

READINGS is either
- a data logger's CSV export: a header with a time column (``time``/``timestamp``/``ts``,
  ISO 8601; a time without offset is in ``--tz``), a sensor column (``sensor_id``/``sensor``,
  the ids of the site config), and value columns ``temperature_c`` (or ``temperature``)
  and/or ``humidity_pct`` (or ``humidity``), in °C and %RH, empty when absent; or
- JSON lines of MQTT messages as received: ``{"received_at": ..., "topic": ...,
  "payload": ...}`` (payload a string, or a JSON object), fed through the sensor parsers
  exactly as the agent would (formats, units, sentinels, dead letters).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge_agent.config import AgentConfig, load_config
from edge_agent.core import AgentCore
from edge_agent.core_io import Output, Saved
from edge_agent.errors import ConfigError
from edge_agent.readings import Metric
from edge_agent.rule_types import Transition
from protocols import Topics

TIME_COLUMNS = ("time", "timestamp", "ts")
SENSOR_COLUMNS = ("sensor_id", "sensor")
VALUE_COLUMNS: dict[str, Metric] = {
    "temperature_c": "temperature_c",
    "temperature": "temperature_c",
    "humidity_pct": "humidity_pct",
    "humidity": "humidity_pct",
}


class ReplayError(ValueError):
    """A recorded log that cannot be read; names the line and the field."""


@dataclass(frozen=True, slots=True)
class LoggedValue:
    sensor_id: str
    metric: Metric
    value: float


@dataclass(frozen=True, slots=True)
class Step:
    """One recorded input: a logged value (CSV) or a raw MQTT message (JSONL)."""

    at: datetime
    value: LoggedValue | None = None
    topic: str = ""
    payload: bytes = b""


@dataclass(slots=True)
class Replay:
    transitions: list[Transition] = field(default_factory=list)
    readings: int = 0
    dead_letters: list[str] = field(default_factory=list)  # the errors, naming the field


def read_steps(path: Path, tz: tzinfo) -> Iterator[Step]:
    """The recorded inputs of ``path`` (CSV or JSONL by content), in file order."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        first = file.readline()
        file.seek(0)
        if first.lstrip().startswith("{"):
            yield from _jsonl(file, tz)
        else:
            yield from _csv(file, tz)


def _time(text: str, tz: tzinfo, where: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReplayError(f"{where}: {text!r} is not an ISO 8601 time") from None
    return (value.replace(tzinfo=tz) if value.tzinfo is None else value).astimezone(UTC)


def _column(header: list[str], names: tuple[str, ...], what: str) -> str:
    for name in names:
        if name in header:
            return name
    raise ReplayError(f"line 1: no {what} column (one of {', '.join(names)})")


def _csv(file: Any, tz: tzinfo) -> Iterator[Step]:
    rows = csv.DictReader(file)
    header = [h.strip() for h in rows.fieldnames or []]
    rows.fieldnames = header
    time_col = _column(header, TIME_COLUMNS, "time")
    sensor_col = _column(header, SENSOR_COLUMNS, "sensor")
    values = [(c, m) for c, m in VALUE_COLUMNS.items() if c in header]
    if not values:
        raise ReplayError(f"line 1: no value column (one of {', '.join(VALUE_COLUMNS)})")
    for line, row in enumerate(rows, start=2):
        at = _time(row.get(time_col) or "", tz, f"line {line}.{time_col}")
        sensor = (row.get(sensor_col) or "").strip()
        for column, metric in values:
            text = (row.get(column) or "").strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                raise ReplayError(f"line {line}.{column}: {text!r} is not a number") from None
            yield Step(at, LoggedValue(sensor, metric, value))


def _jsonl(file: Any, tz: tzinfo) -> Iterator[Step]:
    for line, text in enumerate(file, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ReplayError(f"line {line}: not JSON: {exc}") from None
        if not isinstance(data, dict) or "topic" not in data or "received_at" not in data:
            raise ReplayError(f"line {line}: needs received_at, topic and payload")
        payload = data.get("payload", "")
        raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        at = _time(str(data["received_at"]), tz, f"line {line}.received_at")
        yield Step(at, topic=str(data["topic"]), payload=raw)


def replay(config: AgentConfig, steps: Iterator[Step]) -> Replay:
    """Feed ``steps`` to a fresh core in event time, ticking between them."""
    core = AgentCore(config, Topics(config.uplink_mqtt.topic_root))
    tick = timedelta(seconds=max(1.0, config.agent.tick_interval_s))
    result = Replay()
    now: datetime | None = None
    for step in steps:
        if now is None:
            now = step.at
            _collect(result, core.start(now, Saved({}, {}, None, 0, 0, None)))
        while now + tick <= step.at:  # deadlines (silence, dips, expiry) in event time
            now += tick
            _collect(result, core.tick(now))
        now = max(now, step.at)
        if step.value is not None:
            logged = step.value
            _collect(result, core.feed_value(logged.sensor_id, logged.metric, logged.value,
                                             step.at))
        else:
            _collect(result, core.ingest(step.topic, step.payload, step.at))
        result.readings += 1
    if now is not None:
        _collect(result, core.tick(now + tick))
    return result


def _collect(result: Replay, out: Output) -> None:
    result.transitions.extend(out.transitions)
    result.dead_letters += [f"{d.sensor_id or d.source_topic}: {d.error}" for d in out.deadletters]


def timeline(result: Replay, tz: tzinfo) -> list[str]:
    lines = []
    for t in result.transitions:
        at = t.event_time.astimezone(tz).isoformat()
        why = f"{t.reason}" + (f" ({t.detail})" if t.detail else "")
        lines.append(f"{at}  {t.zone}/{t.rule} -> {t.breaker}: "
                     f"{t.previous.value} -> {t.state.value}  {why}")
    return lines


DESCRIPTION = __doc__.split("\n\n")[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("site", metavar="CONFIG", help="the site's TOML file")
    parser.add_argument("readings", help="a data logger CSV or JSONL of MQTT messages")
    parser.add_argument("--tz", default="UTC",
                        help="time zone for times without offset and for the output")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_agent replay", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(opts: argparse.Namespace) -> int:
    try:
        tz = ZoneInfo(opts.tz)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"invalid: --tz: unknown time zone {opts.tz!r}", file=sys.stderr)
        return 2
    try:
        config = load_config(opts.site)
        result = replay(config, read_steps(Path(opts.readings), tz))
    except (ConfigError, ReplayError) as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"invalid: {opts.readings}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for line in timeline(result, tz):
        print(line)
    print(f"{result.readings} values, {len(result.transitions)} transitions, "
          f"{len(result.dead_letters)} dead letters")
    counts: dict[str, int] = {}
    for error in result.dead_letters:
        counts[error] = counts.get(error, 0) + 1
    for error, count in sorted(counts.items(), key=lambda c: -c[1])[:20]:
        print(f"  {count} x {error}")
    return 0
