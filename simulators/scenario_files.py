"""Reading scenario files: YAML validated with line numbers, and the shipped scenarios.

:func:`load_scenario` validates a file with pydantic and raises :class:`ScenarioError`
naming the file, the line and the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from simulators.scenario import Scenario, Window


class ScenarioError(ValueError):
    """A scenario file that is not valid. ``line`` is 1-based (0 when unknown)."""

    def __init__(self, message: str, *, file: str, line: int = 0, field: str = "") -> None:
        self.file = file
        self.line = line
        self.field = field
        where = f"{file}:{line}" if line else file
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(text)


# -- loading with line numbers --------------------------------------------------------
Path_ = tuple[str | int, ...]


def _marks(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            out[(*path, key)] = key_node.start_mark.line + 1
            _marks(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _marks(item, (*path, index), out)


_STEP_KINDS = {"set", "ramp", "excursion", "silence"}


def _line_for(loc: Sequence[str | int], marks: dict[Path_, int]) -> tuple[int, str]:
    """The deepest location in the file that the error path reaches, and its dotted name."""
    path: Path_ = ()
    shown: list[str] = []
    for index, part in enumerate(loc):
        candidate = (*path, part)
        if candidate in marks:
            path = candidate
        elif part in _STEP_KINDS and index >= 2 and loc[index - 2] == "timeline":
            continue  # pydantic's union tag, not a key of the file
        shown.append(str(part))
    return marks.get(path, 0), ".".join(shown) or "$"


def parse_scenario(text: str, *, file: str = "<scenario>") -> Scenario:
    """Validate scenario YAML text; raise :class:`ScenarioError` with line and field."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 0
        message = f"not valid YAML: {exc.problem}"
        raise ScenarioError(message, file=file, line=line) from exc
    except yaml.YAMLError as exc:
        message = f"not valid YAML: {exc}"
        raise ScenarioError(message, file=file) from exc
    if not isinstance(data, dict):
        raise ScenarioError("the file must be a mapping (name:, start:, ...)", file=file, line=1)
    marks: dict[Path_, int] = {}
    if node is not None:
        _marks(node, (), marks)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        line, field = _line_for(first["loc"], marks)
        message = first["msg"].removeprefix("Value error, ")
        raise ScenarioError(message, file=file, line=line, field=field) from exc
    _check_times(scenario, file, marks)
    return scenario


def _check_times(scenario: Scenario, file: str, marks: dict[Path_, int]) -> None:
    """Cross-field time checks pydantic cannot place: everything inside start..end."""

    def fail(path: Path_, message: str) -> None:
        line, field = _line_for(path, marks)
        raise ScenarioError(message, file=file, line=line, field=field)

    start, end = scenario.start, scenario.end_at
    if end <= start:
        fail(("end",), "end must be after start")
    if end - start > timedelta(days=7):
        fail(("end",), "a scenario spans at most 7 days")

    def inside(path: Path_, ref: str | datetime) -> datetime:
        when = scenario.at(ref)
        if not start <= when <= end:
            fail(path, f"{when.isoformat()} is outside the scenario ({start} .. {end})")
        return when

    def window(path: Path_, w: Window) -> None:
        if inside((*path, "from"), w.start) >= inside((*path, "to"), w.end):
            fail((*path, "to"), "to must be after from")

    for wi, wh in enumerate(scenario.warehouses):
        for key, windows in (("power_cuts", wh.power_cuts), ("uplink_outages", wh.uplink_outages)):
            for i, w in enumerate(windows):
                window(("warehouses", wi, key, i), w)
        for si, sensor in enumerate(wh.sensors or []):
            for ti, step in enumerate(sensor.timeline):
                inside(("warehouses", wi, "sensors", si, "timeline", ti, "at"), step.at)
    for ci, courier in enumerate(scenario.couriers):
        for i, w in enumerate(courier.silent):
            window(("couriers", ci, "silent", i), w)
    for mi, marker in enumerate(scenario.markers):
        inside(("markers", mi, "at"), marker.at)
    for ti, trip in enumerate(scenario.expect.trips):
        if trip.at is not None:
            inside(("expect", "trips", ti, "at"), trip.at)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (or a shipped scenario's name)."""
    source = Path(path)
    if not source.exists() and not source.suffix:
        source = shipped_path(str(path))
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        message = f"cannot read: {exc.strerror or exc}"
        raise ScenarioError(message, file=str(source)) from exc
    return parse_scenario(text, file=str(source))


def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``simulators/scenarios/``."""
    folder = resources.files("simulators") / "scenarios"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def shipped_path(name: str) -> Path:
    return Path(str(resources.files("simulators") / "scenarios" / f"{name}.yaml"))
