"""The protocol package's exception tree."""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error raised by :mod:`protocols`."""


class TopicError(ProtocolError, ValueError):
    """A topic or topic level that breaks the contract."""


class PayloadError(ProtocolError, ValueError):
    """A payload that is not valid JSON or does not match its model.

    ``field`` is the dotted path of the first offending field (``"$"`` for the whole
    payload), so callers can count and report errors per field.
    """

    def __init__(self, message: str, *, field: str = "$", model: str = "") -> None:
        self.field = field
        self.model = model
        super().__init__(message)
