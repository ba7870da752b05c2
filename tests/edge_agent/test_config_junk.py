"""Config boundary with junk: any file is either a valid config or a ConfigError naming
the file and a field; never another exception."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.config import config_from_dict, load_config
from edge_agent.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edge" / "cold-chain.toml"
BASE: dict[str, Any] = tomllib.loads(EXAMPLE.read_text())

toml_values = st.recursive(
    st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=6,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            out.append((*prefix, key))
            out += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += _paths(value, (*prefix, i))
    return out


PATHS = _paths(BASE)


def _mutated(path: tuple[Any, ...], value: Any, delete: bool) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads(EXAMPLE.read_text())
    node: Any = data
    for step in path[:-1]:
        node = node[step]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PATHS), toml_values, st.booleans())
def test_any_mutated_config_is_valid_or_refused_naming_a_field(
        path: tuple[Any, ...], value: Any, delete: bool) -> None:
    try:
        config_from_dict(_mutated(path, value, delete), source="site.toml")
    except ConfigError as exc:
        assert exc.field and str(exc).startswith("site.toml: ")


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_as_a_config_file_are_refused_cleanly(tmp_path: Path, raw: bytes) -> None:
    file = tmp_path / "junk.toml"
    file.write_bytes(raw)
    try:
        load_config(file)
    except ConfigError as exc:
        assert str(file) in str(exc)
