"""Request ids: every response carries `X-Request-ID`, every error body its `request_id`,
and every error a client sees is logged under it, so a user's report finds the log line.

A client may send its own `X-Request-ID` (letters, digits, `-`, `_`, up to 64); else one
is made.
"""

from __future__ import annotations

import re
import uuid

_GIVEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def request_id(connection) -> str:
    """The id of the request (an ASGI connection, or its scope)."""
    scope = connection if isinstance(connection, dict) else connection.scope
    return scope.setdefault("state", {}).get("request_id", "")


def request_id_middleware(app):
    """ASGI middleware: choose the id before anything else runs, add it to the response."""
    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _GIVEN.match(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        await app(scope, receive, send_with_id)

    return middleware
