"""Every route in the OpenAPI schema, walked: no credential is a 401, a role the route
does not name is a 403, and a credential scoped elsewhere is a 403. A new route is in the
schema, so it is walked too; a route without a declaration does not even build."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from coordinator import auth
from coordinator.auth.guard import check_declared
from coordinator.auth.roles import Role
from tests.auth import ADMIN, headers_for
from tests.coordinator.auth.conftest import Site

pytestmark = pytest.mark.broker

PUBLIC = {("post", "/auth/login"), ("get", "/healthz")}
SAFE = {"get", "head", "options"}
# changes only the caller's own session: every role may (it still needs a credential)
SELF_SERVICE = {("post", "/auth/logout")}
# routes that keep to a scope themselves: how to ask each for something outside it
FOREIGN_STORE = "HZ-S002"
FOREIGN_WAREHOUSE = "WH-08"  # asked about in warehouse paths; never in a test scope


def _path(template: str, site: Site, *, warehouse: str) -> str:
    return (template.replace("{order_id}", site.order_id)
            .replace("{warehouse_id}", warehouse).replace("{item_id}", "WH-01")
            .replace("{kind}", "warehouses").replace("{notification_id}", "1")
            .replace("{token_id}", "tok_none").replace("{username}", "nobody")
            .replace("{agent_id}", "gw-none").replace("{breaker}", "cold_chain"))


def _foreign_request(method: str, template: str, site: Site) -> dict[str, Any] | None:
    """A request a scoped credential must be refused, or None where the route filters
    instead (a list shows only what is in scope) or has nothing to scope."""
    if (method, template) == ("post", "/orders"):
        return {"json": {"channel": "douyin", "channel_order_id": "AUTH-FOREIGN",
                         "store_id": site.order_store,
                         "lines": [{"sku_id": "SKU-0003", "qty": 1}],
                         "lat": 30.25, "lon": 120.12}}
    if "{order_id}" in template:
        return {"json": {"kind": "cancelled"}} if method == "post" else {}
    if template.endswith("/commands"):
        return {"json": {"command": "ack", "reason": "scope test"}}
    if "{warehouse_id}" in template:
        return {"json": {"reason": "scope test"}} if method == "post" else {}
    if (method, template) in {("get", "/orders"), ("get", "/notifications"),
                              ("get", "/auth/me")}:
        return None
    raise AssertionError(f"{method.upper()} {template} is declared scoped=True: add how to "
                         "ask it for something outside a scope to this test")


def _operations(http: httpx.Client) -> list[tuple[str, str, dict[str, Any]]]:
    spec = http.get("/openapi.json").json()
    return [(method, path, op) for path, ops in spec["paths"].items()
            for method, op in ops.items()]


def test_every_route_refuses_a_request_without_credential(site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
        operations = _operations(http)
    assert len(operations) > 40
    with httpx.Client(base_url=site.url, timeout=15) as anonymous:
        for method, template, op in operations:
            assert "x-roles" in op, f"{method} {template} has no role declaration"
            if (method, template) in PUBLIC:
                assert op["x-roles"] == []
                continue
            answer = anonymous.request(method, _path(template, site, warehouse="WH-01"))
            assert answer.status_code == 401, (method, template, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
        for path in ("/docs", "/openapi.json", "/metrics", "/", "/dashboard/state"):
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.get("/healthz").status_code == 200


def test_every_state_changing_route_refuses_a_weaker_role_and_a_foreign_scope(
        site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
        operations = _operations(http)
    tokens = {role: headers_for(site.db_path, role) for role in Role}
    changing = [(m, t, op) for m, t, op in operations
                if m not in SAFE and (m, t) not in PUBLIC | SELF_SERVICE]
    assert len(changing) > 15
    with httpx.Client(base_url=site.url, timeout=15) as http:
        for method, template, op in changing:
            allowed = {Role(r) for r in op["x-roles"]}
            assert Role.VIEWER not in allowed, f"a viewer may {method} {template}"
            url = _path(template, site, warehouse=FOREIGN_WAREHOUSE)
            for role in set(Role) - allowed:
                answer = http.request(method, url, headers=tokens[role])
                assert answer.status_code == 403, (method, template, role, answer.text)
            # the strongest allowed role short of admin, limited to another store and
            # warehouse than the one the request is about
            role = next(r for r in (Role.OPERATOR, Role.INTEGRATION, Role.CUSTOMER_SERVICE,
                                    Role.ADMIN) if r in allowed)
            elsewhere = next(w for w in ("WH-05", "WH-06")
                             if w not in (site.order_warehouse, FOREIGN_WAREHOUSE))
            scoped = headers_for(site.db_path, role, stores=[FOREIGN_STORE],
                                 warehouses=[elsewhere])
            request = _foreign_request(method, template, site) if op["x-scoped"] else {}
            if request is None:
                continue
            answer = http.request(method, url, headers=scoped, **request)
            assert answer.status_code == 403, (method, template, answer.text)


def test_scoped_reads_are_refused_outside_the_scope(site: Site) -> None:
    outsider = headers_for(site.db_path, Role.VIEWER, stores=[FOREIGN_STORE])
    insider = headers_for(site.db_path, Role.VIEWER, stores=[site.order_store])
    with httpx.Client(base_url=site.url, timeout=15) as http:
        for path in (f"/orders/{site.order_id}", f"/orders/{site.order_id}/decision"):
            assert http.get(path, headers=outsider).status_code == 403
            assert http.get(path, headers=insider).status_code == 200
        assert http.get(f"/warehouses/{site.order_warehouse}/audit",
                        headers=insider).status_code == 403  # a store scope is no warehouse
        assert http.get("/orders", headers=outsider).json() == []
        mine = http.get("/orders", headers=insider).json()
        assert mine and {o["store_id"] for o in mine} == {site.order_store}
        # routes that do not keep to scopes refuse any scoped credential
        assert http.get("/stats", headers=insider).status_code == 403


def test_a_route_without_a_declaration_does_not_build() -> None:
    app = FastAPI()
    router = APIRouter()

    @router.post("/forgotten")
    def forgotten() -> None: ...

    app.include_router(router)
    with pytest.raises(RuntimeError, match="forgotten"):
        check_declared(app)
    declared = FastAPI()
    declared.include_router(APIRouter(dependencies=[auth.requires({Role.ADMIN})]))
    check_declared(declared)
