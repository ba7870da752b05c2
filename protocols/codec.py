"""Encoding and decoding of wire payloads, with errors that name the bad field."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from protocols.errors import PayloadError
from protocols.text import MESSAGE, nul_in_json

M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    """Serialise a wire model to compact UTF-8 JSON."""
    return model.model_dump_json(exclude_none=True).encode()


def decode(model: type[M], raw: bytes | bytearray | str) -> M:
    """Parse ``raw`` JSON into ``model``; raise :class:`PayloadError` naming the field."""
    where = nul_in_json(raw)
    if where is not None:
        field = where or "$"
        message = f"{model.__name__}.{field}: {MESSAGE}"
        raise PayloadError(message, field=field, model=model.__name__)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "$"
        if first["type"] == "json_invalid":
            field = "$"
        message = f"{model.__name__}.{field}: {first['msg']}"
        raise PayloadError(message, field=field, model=model.__name__) from exc
