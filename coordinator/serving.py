"""Run an ASGI app under a real uvicorn server in a background thread (tests, benchmarks).

The socket is bound before the server starts (port 0 = a free port), so the URL is known
and nothing races for a port.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from coordinator.errors import CoordinatorError

# The dashboard's server-sent event streams never end by themselves: uvicorn waits this
# long for open responses at shutdown, then cancels them.
SHUTDOWN_GRACE_S = 3


def proxy_options(app: Any) -> dict[str, Any]:
    """uvicorn's proxy-header options from the app's ``trusted_proxies`` setting: only
    those peers' X-Forwarded-For replaces the client address (a client elsewhere could
    otherwise name any address and slip past the login limit per address)."""
    settings = getattr(getattr(app, "state", None), "settings", None)
    trusted = list(getattr(settings, "trusted_proxies", ()))
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None}


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0,
                    startup_timeout: float = 20.0) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT``) while the server runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it (Linux): without it a small response written in two
    # parts waits for the client's delayed ACK, 40 ms a request on keep-alive connections
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S, **proxy_options(app))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name=f"uvicorn-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            message = f"uvicorn did not start on {host}:{bound_port}"
            raise CoordinatorError(message)
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
