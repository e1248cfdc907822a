"""No cross-site request can act: unsafe requests (POST, PUT, PATCH, DELETE) from another site are refused.

Browsers send `Origin` (and `Sec-Fetch-Site`) with cross-site form posts and fetches. A request whose
Origin is neither this server (its `Host`, or `X-Forwarded-Host` behind a proxy) nor one of
`cors_origins`, or whose Sec-Fetch-Site says `cross-site` or `same-site` without an allowed Origin,
gets a 403 problem+json before any route runs, whether authentication is on or off. Clients that
are not browsers (curl, the CLI) send neither header and are not affected. This is what makes the
dashboard's cookie safe beside its SameSite=Strict flag.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.problems import problem_response

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def cross_site_reason(headers: Headers, allowed_origins: frozenset[str]) -> str | None:
    """Why a request is cross-site, or None when it is same-origin (or not from a browser)."""
    origin = headers.get("origin")
    if origin is not None:
        if origin in allowed_origins:
            return None
        hosts = {h.strip().lower() for h in (headers.get("host", ""), headers.get("x-forwarded-host", "")) if h}
        try:
            netloc = urlsplit(origin).netloc.lower()
        except ValueError:
            netloc = ""
        if netloc and netloc in hosts:
            return None
        return f"requests from origin {origin[:100]!r} may not change anything here"
    site = headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        return f"requests from another site (Sec-Fetch-Site: {site}) may not change anything here"
    return None


class SameOriginGuard:
    """Pure ASGI middleware: 403 for unsafe requests that come from another site."""

    def __init__(self, app: ASGIApp, allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed = frozenset(o.rstrip("/") for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            reason = cross_site_reason(Headers(scope=scope), self.allowed)
            if reason is not None:
                response = problem_response(Request(scope), 403, "Forbidden", reason)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
