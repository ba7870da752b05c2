"""The one mechanism by which a route says who may call it.

    router = APIRouter(dependencies=[requires(ANY_ROLE)])           # every route of it
    @router.post("/x", dependencies=[requires({Role.OPERATOR})])     # this route: stricter
    @router.get("/y", dependencies=[requires(ANY_ROLE, scoped=True)])# it checks scopes itself
    def y(caller: Caller) -> ...: caller.scope.sees_order(...)

The most specific declaration wins: the route's own, else its router's. A route without
one makes :func:`check_declared` fail when the app is built, so a route cannot ship
unprotected; :func:`public` is the explicit exception (``/healthz``, the login).

Credentials: ``Authorization: Bearer <token>`` (integrations, Prometheus, scripts), or the
session cookie of a person's login, which on a state-changing request also needs the
CSRF token (header ``X-CSRF-Token``, or a ``csrf_token`` field of a multipart form): a
cookie is sent by the browser on its own, even from another site's page, the token only
by our own page. A scoped credential is refused (403) by every route not declared
``scoped=True``: such a route has not said how it keeps to a scope, so it fails closed.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.concurrency import run_in_threadpool

from coordinator.auth import store
from coordinator.auth.roles import Identity, Role

SESSION_COOKIE = "bw_session"
CSRF_COOKIE = "bw_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _count(request: Request, key: str) -> None:
    with request.app.state.counters_lock:
        request.app.state.counters[key] += 1


def _refuse(request: Request, status: int, detail: str) -> HTTPException:
    _count(request, "auth_unauthenticated" if status == 401 else "auth_forbidden")
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return HTTPException(status_code=status, detail=detail, headers=headers)


async def _csrf_sent(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        await request.body()  # cached, so the route can still read the form afterwards
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def authenticate(request: Request) -> Identity:
    """Who is calling (cached on the request), or 401/403."""
    known: Identity | None = getattr(request.state, "identity", None)
    if known is not None:
        return known
    db = request.app.state.connections.get
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise _refuse(request, 401, "Authorization must be 'Bearer <token>'")
        cache: TokenCache = request.app.state.token_cache
        hashed = store.digest(secret.strip())
        identity = cache.get(hashed)
        if identity is None:
            identity = await run_in_threadpool(
                lambda: store.identify_token(db(), secret.strip()))
            if identity is None:
                raise _refuse(request, 401, "unknown or revoked token")
            cache.put(hashed, identity)
    elif SESSION_COOKIE in request.cookies:
        now = request.app.state.clock.now()
        session_id = request.cookies[SESSION_COOKIE]
        found = await run_in_threadpool(lambda: store.identify_session(db(), session_id, now))
        if found is None:
            raise _refuse(request, 401, "session expired or logged out: log in again")
        identity, csrf = found
        if request.method not in SAFE_METHODS:
            sent = await _csrf_sent(request)
            if sent is None or not hmac.compare_digest(sent.encode(), csrf.encode()):
                await request.close()  # the uploads of a parsed form are temporary files
                raise _refuse(request, 403, f"CSRF token missing or wrong ({CSRF_HEADER})")
    else:
        raise _refuse(request, 401, "a credential is required (Bearer token or login)")
    request.state.identity = identity
    return identity


class TokenCache:
    """Identities of tokens seen in the last ``ttl_s`` seconds: a channel posting hundreds
    of orders a second would otherwise pay a database read (and a thread hop) on each.
    Only valid tokens are kept, so a new token works at once; a revocation through this
    instance clears the cache, one through another instance takes effect within ``ttl_s``.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[Identity, float]] = {}
        self._lock = threading.Lock()

    def get(self, hashed: str) -> Identity | None:
        with self._lock:
            found = self._entries.get(hashed)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def put(self, hashed: str, identity: Identity) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[hashed] = (identity, time.monotonic() + self.ttl_s)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class RoleRequirement:
    """A route's declaration: which roles may call it, and whether it keeps to scopes."""

    def __init__(self, roles: Iterable[Role] | None, *, scoped: bool = False) -> None:
        self.roles = None if roles is None else frozenset(roles)
        self.scoped = scoped

    def describe(self) -> dict[str, Any]:
        return {"public": self.roles is None,
                "roles": sorted(r.value for r in {*(self.roles or ()), Role.ADMIN})
                if self.roles else [],
                "scoped": self.scoped}

    async def __call__(self, request: Request) -> None:
        route = request.scope.get("route")
        if isinstance(route, APIRoute) and requirement_of(route) is not self:
            return  # a more specific declaration of this route decides
        if self.roles is None:
            return
        identity = await authenticate(request)
        if not identity.may(self.roles):
            wanted = ", ".join(sorted(r.value for r in self.roles))
            raise _refuse(request, 403,
                          f"role {identity.role.value} may not do this (needs one of: {wanted})")
        if not self.scoped and not identity.scope.unlimited:
            raise _refuse(request, 403, "not available to a credential limited to some "
                                        "stores or warehouses")


def requires(roles: Iterable[Role], *, scoped: bool = False) -> Any:
    """For ``dependencies=[...]`` of a router or a route."""
    return Depends(RoleRequirement(roles, scoped=scoped))


def public() -> Any:
    return Depends(RoleRequirement(None))


def requirement_of(route: APIRoute) -> RoleRequirement | None:
    found = [d.call for d in route.dependant.dependencies if isinstance(d.call, RoleRequirement)]
    return found[-1] if found else None


async def caller(request: Request) -> Identity:
    """The authenticated identity of this request (the route's declaration ran first)."""
    identity: Identity | None = getattr(request.state, "identity", None)
    if identity is None:
        return await authenticate(request)
    return identity


Caller = Annotated[Identity, Depends(caller)]


def api_routes(app: FastAPI) -> Iterator[tuple[str, set[str], bool, APIRoute]]:
    """Every API route of the app as served: path, methods, whether in the schema, and
    the route as declared (FastAPI keeps included routers nested)."""
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            yield (context.path_format or route.path_format, set(context.methods or ()),
                   bool(getattr(context, "include_in_schema", route.include_in_schema)), route)


def check_declared(app: FastAPI) -> None:
    """Every API route declares its roles, or the app does not build."""
    missing = [f"{sorted(methods)} {path}" for path, methods, _, route in api_routes(app)
               if requirement_of(route) is None]
    if missing:
        message = ("routes without a role declaration (add dependencies=[requires(...)] "
                   "from coordinator.auth): " + "; ".join(missing))
        raise RuntimeError(message)


def forbid(request: Request, detail: str) -> HTTPException:
    """A 403 for a scope check inside a ``scoped=True`` route (counted like the others)."""
    return _refuse(request, 403, detail)
