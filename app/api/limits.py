"""A limit on request body size, answered with a problem+json 413 before the body is parsed.

Uploads are the largest requests: the limit is `max_upload_bytes` plus room for the multipart
framing. A declared Content-Length over it is refused without reading the body; a chunked body is
counted as it arrives and refused once it goes over.
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

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def detail(self, size: int | None = None) -> str:
        size_text = f"{size:,} bytes" if size is not None else "more bytes"
        return f"the request body has {size_text}; this server accepts at most {self.max_bytes:,}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = problem_response(Request(scope), 413, "Content Too Large", self.detail(int(declared)))
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route's body read; the problem+json handler answers it.
                    raise HTTPException(413, self.detail())
            return message

        await self.app(scope, counted, send)
