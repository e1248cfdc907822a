"""Limits on request body size, per route, answered with a problem+json 413 before the body is parsed.

Uploads are the largest requests: their limit is `max_upload_bytes` plus room for the multipart
framing. Every other body (scoring, generation, jobs: JSON) has the much smaller `max_json_bytes`.
A declared Content-Length over the limit is refused without reading the body; a chunked body is
counted as it arrives and refused once it goes over, so no route ever holds more than its limit.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem_response

MULTIPART_OVERHEAD = 64 * 1024


class BodySizeLimit:
    """Pure ASGI middleware: refuse request bodies larger than `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int, routes: dict[tuple[str, str], int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes  # any route not named in `routes`
        self.routes = routes or {}  # (method, path) -> its own limit

    def limit(self, scope: Scope) -> int:
        return self.routes.get((scope.get("method", ""), scope.get("path", "").rstrip("/")), self.max_bytes)

    @staticmethod
    def detail(limit: int, size: int | None = None) -> str:
        size_text = f"{size:,} bytes" if size is not None else "more bytes"
        return f"the request body has {size_text}; this route accepts at most {limit:,}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = problem_response(Request(scope), 413, "Content Too Large", self.detail(limit, int(declared)))
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the route's body read; the problem+json handler answers it.
                    raise HTTPException(413, self.detail(limit))
            return message

        await self.app(scope, counted, send)
