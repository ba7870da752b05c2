"""The edge agent's exception tree. Library errors are translated at the boundary."""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error raised by :mod:`edge_agent`."""


class ConfigError(EdgeError, ValueError):
    """A gateway config file that cannot be used; names the file and the field."""

    def __init__(self, message: str, *, field: str = "$", path: str | None = None) -> None:
        self.field = field
        self.path = path
        super().__init__(message)


class SensorPayloadError(EdgeError, ValueError):
    """A sensor payload the agent rejects; ``field`` names what was wrong, ``reason`` is
    the counter it is counted under (``json``, ``type``, ``range``, ``non_finite``,
    ``missing``, ``sensor_id``)."""

    def __init__(self, message: str, *, field: str = "$", reason: str = "invalid") -> None:
        self.field = field
        self.reason = reason
        super().__init__(message)


class StoreError(EdgeError):
    """The gateway's SQLite state store failed or holds unreadable state."""


class StoreCorrupt(StoreError):
    """The state store's file is not a readable SQLite database (cut short or overwritten,
    e.g. by a power cut): :func:`edge_agent.store.open_store` sets it aside."""
