"""ASGI middleware counting every HTTP request by its route template (never the raw path)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.prometheus import Observability

UNMATCHED = "unmatched"  # requests no route matched (404s for unknown paths)


def route_template(scope: Scope) -> str:
    """The matched route's path template, e.g. `/v1/jobs/{job_id}`; a bounded label value."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetrics:
    """Times each HTTP request and counts it with its status when its response ends."""

    def __init__(self, app: ASGIApp, observability: Observability) -> None:
        self.app = app
        self.observability = observability

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before any response is a server error

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.observability.observe_request(
                route_template(scope), scope["method"], status, time.perf_counter() - started
            )
