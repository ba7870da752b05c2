"""What a credential costs a request: ``python -m benchmarks auth [--json] [--quick]``.

One real uvicorn on one SQLite file, requests on one keep-alive connection, measured in
the same run so the machine's load cancels out of the ratios:

- ``public_p50_ms``: ``GET /healthz`` (no credential), the baseline;
- ``token_p50_ms``: ``GET /auth/me`` with a bearer token, its identity cached
  (``[auth] token_cache_s``, the default);
- ``token_uncached_p50_ms``: the same on a second app with ``token_cache_s = 0`` (a
  SHA-256 and an indexed read on a worker thread per request);
- ``session_p50_ms``: the same with a person's session cookie (never cached);
- ``login_ms``: ``POST /auth/login`` (argon2id verification, deliberately slow).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.runner import Result
from coordinator.app import create_app
from coordinator.auth.roles import Role, Scope
from coordinator.auth.store import add_user, issue_token
from coordinator.db import open_database
from coordinator.serving import serve_in_thread
from coordinator.settings import Settings

PASSWORD = "benchmark password 0123"


def _p50(http: httpx.Client, path: str, n: int, **extra: object) -> float:
    for _ in range(20):  # warm the connection and caches
        http.get(path, **extra)  # type: ignore[arg-type]
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        answer = http.get(path, **extra)  # type: ignore[arg-type]
        samples.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            message = f"GET {path}: HTTP {answer.status_code}"
            raise RuntimeError(message)
    return statistics.median(samples)


def run(quick: bool) -> Result:
    result = Result("auth")
    n = 200 if quick else 2000
    with tempfile.TemporaryDirectory(prefix="bw-auth-") as tmp:
        path = Path(tmp) / "auth.sqlite"
        db = open_database(path)
        now = datetime.now(UTC)
        _, token = issue_token(db, name="bench", role=Role.VIEWER, scope=Scope(), now=now,
                               created_by="benchmark")
        add_user(db, username="bench", password=PASSWORD, role=Role.VIEWER, scope=Scope(),
                 now=now)
        db.conn.close()
        bearer = {"Authorization": f"Bearer {token}"}
        cached = create_app(Settings(db_path=str(path)))
        uncached = create_app(Settings.parse({"db_path": str(path),
                                              "auth": {"token_cache_s": 0}}))
        with serve_in_thread(cached) as url, serve_in_thread(uncached) as url_uncached, \
                httpx.Client(base_url=url, timeout=10) as http, \
                httpx.Client(base_url=url_uncached, timeout=10) as http_uncached:
            public = _p50(http, "/healthz", n)
            with_token = _p50(http, "/auth/me", n, headers=bearer)
            without_cache = _p50(http_uncached, "/auth/me", n, headers=bearer)
            logins = []
            for _ in range(3 if quick else 10):
                started = time.perf_counter()
                answer = http.post("/auth/login", json={"username": "bench",
                                                        "password": PASSWORD})
                logins.append((time.perf_counter() - started) * 1000)
                answer.raise_for_status()
            session = _p50(http, "/auth/me", n, cookies={"bw_session":
                                                         answer.cookies["bw_session"]})
    result.add("public_p50_ms", public, "ms", "GET /healthz, no credential (baseline)")
    result.add("token_p50_ms", with_token, "ms", "GET /auth/me, bearer token (cached)")
    result.add("token_overhead_ms", with_token - public, "ms",
               "what the cached token adds to a request", "< 1")
    result.add("token_uncached_p50_ms", without_cache, "ms",
               "token_cache_s = 0: SHA-256 + indexed read on a worker thread")
    result.add("session_p50_ms", session, "ms", "GET /auth/me, session cookie")
    result.add("login_ms", statistics.median(logins), "ms",
               "POST /auth/login: argon2id verification (slow on purpose)")
    return result
