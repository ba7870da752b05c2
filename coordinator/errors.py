"""The coordinator's one exception tree. Library errors are translated at the boundary."""

from __future__ import annotations


class CoordinatorError(Exception):
    """Base of every error the coordinator raises on purpose."""


class ConfigError(CoordinatorError):
    """Settings or an import file that cannot be used; the message names the field."""


class ImportFileError(ConfigError):
    """An import file (CSV/JSON) with a bad row; ``field`` is ``row N.field`` or ``file``."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class StoreError(CoordinatorError):
    """The database refused or failed an operation."""


class ConnectionLost(StoreError):
    """The database ended the connection (a restart, a failover, a session ended by an
    administrator or a timeout): what ran on it is rolled back, and the connection is
    replaced on its next use (:func:`coordinator.db.connection_lost`)."""


class WriteLockBusy(StoreError):
    """The write lock was not free within the wait a caller allowed (a bounded
    :func:`coordinator.db.write_transaction`): nothing was written."""


class NotFound(CoordinatorError):
    """A referenced entity (order, warehouse, SKU, store) does not exist."""

    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"unknown {kind} {ident!r}")


class Conflict(CoordinatorError):
    """A request that contradicts the current state (e.g. an impossible transition)."""


class AllocationError(CoordinatorError):
    """The allocation engine was given an inconsistent snapshot."""


class NotificationError(CoordinatorError):
    """A notification could not be delivered (retried by the outbox)."""
