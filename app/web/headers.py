"""Security headers on every answer: a strict content security policy (scripts, styles, images and
requests from this origin only, no inline script, no framing), `nosniff` and same-origin referrers.

The dashboard's pages load only their own files (uPlot is vendored under /static), so they work
under the policy as it is. The interactive API documentation (`/docs`, `/redoc`), FastAPI's own
pages, loads Swagger UI from a CDN with an inline script: it gets only `frame-ancestors 'none'`.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
API_DOCS_POLICY = "frame-ancestors 'none'"
API_DOCS = ("/docs", "/redoc")  # and /docs/oauth2-redirect

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def policy_of(path: str) -> str:
    """The Content-Security-Policy of an answer to `path`."""
    return API_DOCS_POLICY if path.startswith(API_DOCS) else POLICY


class SecurityHeaders:
    """Pure ASGI middleware: adds the headers above to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = policy_of(scope.get("path", ""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", policy)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
