"""Every 422 has one shape (:class:`coordinator.api_models.InvalidRequest`): the answer to a
body or query the models refuse, the ones routes build for input the models let through,
and the OpenAPI document saying so."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema

from coordinator.api_models import InvalidRequest
from coordinator.errors import NotFound
from coordinator.web import count


def invalid(field: str, message: str, **extra: Any) -> JSONResponse:
    """A 422 shaped like the validation handler's, for input the models let through."""
    return JSONResponse(status_code=422,
                        content={"detail": f"{field}: {message}", "field": field, **extra})


def unknown_reference(exc: NotFound) -> JSONResponse:
    """An unknown SKU/store/warehouse named inside a body: the body is what is wrong."""
    return JSONResponse(status_code=422,
                        content={"detail": str(exc), "field": exc.kind, "value": exc.ident})


def _is_label(part: Any) -> bool:
    """Union bookkeeping in a pydantic location (``tagged-union[...]``, ``WarehouseIn``)."""
    return isinstance(part, str) and (
        "[" in part or part in _MODEL_LABELS or part in ("wechat_mini", "meituan", "douyin",
                                                         "normalised")
    )


_MODEL_LABELS = {"OrderIn", "WechatMiniOrder", "MeituanOrder", "DouyinOrder", "WarehouseIn",
                 "SkuIn", "StoreIn", "InventoryIn", "StaffIn"}


def field_path(loc: Iterable[Any]) -> str:
    """``body.0.goods.1.num``: the path of the bad field, without union labels."""
    return ".".join(str(p) for p in loc if not _is_label(p))


def _relevant_errors(errors: Sequence[Any], body: Any) -> list[Any]:
    """A body may be one object or a list: keep the errors of the shape that was sent."""
    def branch(err: Any) -> str:
        loc = err.get("loc", ())
        second = loc[1] if len(loc) > 1 else ""
        return "list" if isinstance(second, str) and second.startswith("list[") else "one"

    wanted = "list" if isinstance(body, list) else "one"
    kept = [e for e in errors if branch(e) == wanted]
    return kept or list(errors)


_SCHEMAS = "#/components/schemas/"


def document_invalid_requests(spec: dict[str, Any]) -> None:
    """FastAPI documents each 422 as its own ``HTTPValidationError`` (``detail`` a list),
    but every 422 here is an :class:`InvalidRequest` (``detail`` a string, ``field``):
    clients and contract tests read the spec, so it says what is sent."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    _, top = models_json_schema([(InvalidRequest, "serialization")],
                                ref_template=_SCHEMAS + "{model}")
    schemas.update(top.get("$defs", {}))
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422", {})
            for media in answer.get("content", {}).values():
                if media.get("schema", {}).get("$ref") == _SCHEMAS + "HTTPValidationError":
                    media["schema"] = {"$ref": _SCHEMAS + "InvalidRequest"}
    schemas.pop("HTTPValidationError", None)
    if _SCHEMAS + "ValidationError" not in json.dumps(spec):
        schemas.pop("ValidationError", None)


async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    """The app's handler of :class:`RequestValidationError`: the first bad field, named."""
    errors = _relevant_errors(exc.errors(), exc.body)
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid"}
    field = field_path(first.get("loc", ()))
    count(request, "requests_invalid")
    return JSONResponse(status_code=422, content={
        "detail": f"{field}: {first.get('msg')}", "field": field,
        "errors": [{"field": field_path(e.get("loc", ())), "msg": e.get("msg"),
                    "type": e.get("type")} for e in errors[:20]],
    })
