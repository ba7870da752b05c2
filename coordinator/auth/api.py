"""HTTP side of authentication: logins and sessions, tokens and users (admin), the
login page, and the protected ``/docs`` and ``/openapi.json``.

:func:`install` wires it all into an app: include the routers, send a browser without a
session to the login page, document each route's roles in the OpenAPI schema
(``x-roles``, ``x-scoped``) and check that every route declares them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, HTTPException, Path, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from coordinator.auth import store
from coordinator.auth.config import AuthConfig
from coordinator.auth.guard import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Caller,
    TokenCache,
    api_routes,
    check_declared,
    public,
    requirement_of,
    requires,
)
from coordinator.auth.roles import ANY_ROLE, Role, Scope
from coordinator.auth.throttle import LoginThrottle
from coordinator.db import Database
from coordinator.errors import Conflict, NotFound
from protocols.timestamps import stamp

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class ScopeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stores: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=10_000, description="null: every store")
    warehouses: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=10_000, description="null: every warehouse")

    def scope(self) -> Scope:
        return Scope.of(self.stores, self.warehouses)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    role: Role
    scope: ScopeIn = Field(default_factory=ScopeIn)


class UserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=NAME)
    password: str = Field(min_length=12, max_length=1024)
    role: Role
    scope: ScopeIn = Field(default_factory=ScopeIn)


class PasswordRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=12, max_length=1024)


def _db(request: Request) -> Database:
    db: Database = request.app.state.connections.get()
    return db


def _config(request: Request) -> AuthConfig:
    config: AuthConfig = request.app.state.auth_config
    return config


# -- logins ---------------------------------------------------------------------------
session_router = APIRouter(tags=["auth"])


def _bump(request: Request, *keys: str) -> None:
    with request.app.state.counters_lock:
        for key in keys:
            request.app.state.counters[key] += 1


@session_router.post("/auth/login", dependencies=[public()],
                     responses={401: {"description": "wrong username or password"},
                                429: {"description": "too many failed logins: locked out "
                                                     "for a while (Retry-After)"}})
def login(request: Request, body: LoginRequest, response: Response) -> Any:
    """A person's login: sets the session cookie (HttpOnly, SameSite=Strict) and returns
    the CSRF token every state-changing request of this session must send
    (``X-CSRF-Token``; also readable by the page from the ``bw_csrf`` cookie).

    Too many failures for a username or from an address lock it out for a while: 429 with
    ``Retry-After``, and the password is not even checked (``auth`` settings)."""
    db = _db(request)
    throttle: LoginThrottle = request.app.state.login_throttle
    now = request.app.state.clock.now()
    address = request.client.host if request.client else "unknown"
    lockout = throttle.locked(db, body.username, address, now)
    if lockout is not None:
        _bump(request, "auth_login_locked")
        return JSONResponse({"detail": lockout.message(now), "locked": lockout.by,
                             "retry_after_s": lockout.retry_after_s(now)}, status_code=429,
                            headers={"Retry-After": str(lockout.retry_after_s(now))})
    user = store.check_password(db, body.username, body.password)
    if user is None:
        started = throttle.failed(db, body.username, address, now)
        _bump(request, "auth_login_failed", *(f"auth_lockouts_{by}" for by in started))
        raise HTTPException(401, "wrong username or password")
    throttle.succeeded(db, user.username)
    config = _config(request)
    session = store.open_session(db, user.username, now,
                                 timedelta(seconds=config.session_ttl_s))
    max_age = int(config.session_ttl_s)
    response.set_cookie(SESSION_COOKIE, session.session_id, max_age=max_age, httponly=True,
                        samesite="strict", secure=config.cookie_secure, path="/")
    response.set_cookie(CSRF_COOKIE, session.csrf_token, max_age=max_age, httponly=False,
                        samesite="strict", secure=config.cookie_secure, path="/")
    return {"username": user.username, "role": user.role.value, "scope": user.scope.as_json(),
            "csrf_token": session.csrf_token, "expires_at": stamp(session.expires_at)}


@session_router.post("/auth/logout", dependencies=[requires(ANY_ROLE, scoped=True)])
def logout(request: Request, response: Response) -> dict[str, str]:
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        store.close_session(_db(request), session_id)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return {"status": "logged out"}


@session_router.get("/auth/me", dependencies=[requires(ANY_ROLE, scoped=True)])
def me(caller: Caller) -> dict[str, Any]:
    return {"actor": caller.actor, "kind": caller.kind, "name": caller.name,
            "role": caller.role.value, "scope": caller.scope.as_json()}


# -- tokens and users (admin) ---------------------------------------------------------
admin_router = APIRouter(tags=["auth"], dependencies=[requires({Role.ADMIN})])

TokenId = Annotated[str, Path(max_length=64)]
Username = Annotated[str, Path(max_length=64)]


@admin_router.get("/auth/tokens")
def list_tokens(request: Request) -> list[dict[str, Any]]:
    """Every token with its name, role, scope and whether revoked; never a secret."""
    return [t.as_json() for t in store.list_tokens(_db(request))]


@admin_router.post("/auth/tokens", status_code=201)
def create_token(request: Request, body: TokenRequest, caller: Caller) -> dict[str, Any]:
    """A new API token. Its secret is in this answer and nowhere else: store it now."""
    info, secret = store.issue_token(_db(request), name=body.name, role=body.role,
                                     scope=body.scope.scope(),
                                     now=request.app.state.clock.now(),
                                     created_by=caller.actor)
    return {**info.as_json(), "token": secret}


@admin_router.delete("/auth/tokens/{token_id}")
def revoke_token(request: Request, token_id: TokenId) -> dict[str, Any]:
    try:
        revoked = store.revoke_token(_db(request), token_id,
                                     request.app.state.clock.now()).as_json()
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    request.app.state.token_cache.clear()  # refused from the next request on
    return revoked


@admin_router.get("/auth/users")
def list_users(request: Request) -> list[dict[str, Any]]:
    return [u.as_json() for u in store.list_users(_db(request))]


@admin_router.post("/auth/users", status_code=201)
def create_user(request: Request, body: UserRequest) -> dict[str, Any]:
    try:
        return store.add_user(_db(request), username=body.username, password=body.password,
                              role=body.role, scope=body.scope.scope(),
                              now=request.app.state.clock.now()).as_json()
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from exc


@admin_router.put("/auth/users/{username}/password")
def change_password(request: Request, username: Username,
                    body: PasswordRequest) -> dict[str, str]:
    """Sets a new password and ends the user's sessions."""
    try:
        store.set_password(_db(request), username, body.password)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return {"username": username, "status": "password changed"}


@admin_router.post("/auth/users/{username}/disable")
def disable_user(request: Request, username: Username) -> dict[str, Any]:
    try:
        return store.disable_user(_db(request), username,
                                  request.app.state.clock.now()).as_json()
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc


# -- pages ----------------------------------------------------------------------------
pages_router = APIRouter(include_in_schema=False)

_LOGIN_PAGE = """<!doctype html><html lang="zh"><head><meta charset="utf-8">
<title>Breakwater 登录</title><meta name="viewport" content="width=device-width">
<style>body{font-family:sans-serif;max-width:22em;margin:4em auto}label,input,button
{display:block;width:100%;margin:.4em 0}#error{color:#b00}</style></head><body>
<h1>Breakwater</h1><form id="login"><label>用户名 username<input id="username"
autocomplete="username" required></label><label>密码 password<input id="password"
type="password" autocomplete="current-password" required></label>
<button id="submit" type="submit">登录 log in</button></form><p id="error"></p>
<script>
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await fetch("/auth/login", {method: "POST",
    headers: {"Content-Type": "application/json"}, credentials: "same-origin",
    body: JSON.stringify({username: document.getElementById("username").value,
                          password: document.getElementById("password").value})});
  if (!r.ok) { document.getElementById("error").textContent = "登录失败 login failed"; return; }
  const next = new URLSearchParams(location.search).get("next") || "/";
  location.href = next.startsWith("/") && !next.startsWith("//") ? next : "/";
});
</script></body></html>"""


@pages_router.get("/login", dependencies=[public()], response_class=HTMLResponse)
def login_page() -> HTMLResponse:
    return HTMLResponse(_LOGIN_PAGE)


@pages_router.get("/openapi.json", dependencies=[requires(ANY_ROLE, scoped=True)])
def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@pages_router.get("/docs", dependencies=[requires(ANY_ROLE, scoped=True)],
                  response_class=HTMLResponse)
def docs_page(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json",
                               title=request.app.title + " - API")


# -- wiring ---------------------------------------------------------------------------
def _document_roles(spec: dict[str, Any], app: FastAPI) -> None:
    spec.setdefault("components", {}).setdefault("securitySchemes", {}).update({
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "API token (python -m coordinator token create)"},
        "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                    "description": "a person's login (POST /auth/login); state-changing "
                                   "requests also send X-CSRF-Token"},
    })
    for path, methods, in_schema, route in api_routes(app):
        if not in_schema:
            continue
        requirement = requirement_of(route)
        operations = spec.get("paths", {}).get(path, {})
        for method in methods:
            operation = operations.get(method.lower())
            if operation is None or requirement is None:
                continue
            described = requirement.describe()
            operation["x-roles"] = described["roles"]
            operation["x-scoped"] = described["scoped"]
            operation["security"] = [] if described["public"] else [{"bearer": []},
                                                                     {"session": []}]


def install(app: FastAPI) -> None:
    """Call after every router is included (see the module docstring)."""
    app.include_router(session_router)
    app.include_router(admin_router)
    app.include_router(pages_router)

    async def unauthenticated(request: Request, exc: Exception) -> Response:
        # a person's browser asking for a page goes to the login page, not a JSON 401
        assert isinstance(exc, StarletteHTTPException)
        if (exc.status_code == 401 and request.method == "GET"
                and "text/html" in request.headers.get("accept", "")):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)
        return await http_exception_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, unauthenticated)
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_roles(base_openapi(), app)
        return base_openapi()

    app.openapi = openapi  # type: ignore[method-assign]
    check_declared(app)


async def bootstrap(app: FastAPI) -> None:
    """At start: the token cache, and the admin token from the environment if given."""
    config: AuthConfig = app.state.auth_config
    app.state.token_cache = TokenCache(config.token_cache_s)
    app.state.login_throttle = LoginThrottle(
        max_per_user=config.login_max_failures_per_user,
        max_per_address=config.login_max_failures_per_address,
        window=timedelta(seconds=config.login_failure_window_s),
        lockout=timedelta(seconds=config.login_lockout_s))
    if config.admin_token is None:
        return
    secret = config.admin_token.get_secret_value()
    db = app.state.connections.get
    await run_in_threadpool(lambda: store.ensure_bootstrap_token(
        db(), secret, app.state.clock.now()))
