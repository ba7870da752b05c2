"""Who is acting, for every audited action: one place, so authentication plugs in here.

Until HTTP authentication is in place, the page sends the on-duty person's name in the
``X-Breakwater-Actor`` header, percent-encoded UTF-8 (``encodeURIComponent``; a header
cannot carry 王 as it is), remembered in the browser. Once an authentication layer
puts the authenticated identity at ``request.state.identity`` (an object with ``name``,
or a string), that identity wins and the header is ignored: an action is always audited
with the identity the request carries, never with a name typed into a form body.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote

from fastapi import Depends, HTTPException, Request

ACTOR_HEADER = "X-Breakwater-Actor"
MAX_ACTOR = 128


def optional_actor(request: Request) -> str | None:
    """The acting identity if the request carries one (authenticated or the header)."""
    identity = getattr(request.state, "identity", None)
    if identity is not None:
        return str(getattr(identity, "name", identity))
    # percent-encoded (UTF-8): header values are bytes in ISO 8859-1, names are often not
    raw = unquote(request.headers.get(ACTOR_HEADER, "")).strip()
    return raw or None


def request_actor(request: Request) -> str:
    raw = optional_actor(request) or ""
    if not raw or len(raw) > MAX_ACTOR or not raw.isprintable():
        field = f"header.{ACTOR_HEADER.lower()}"
        raise HTTPException(
            401, detail=f"{field}: who is acting is required (1-{MAX_ACTOR} printable "
                        "characters)")
    return raw


Actor = Annotated[str, Depends(request_actor)]
MaybeActor = Annotated[str | None, Depends(optional_actor)]
