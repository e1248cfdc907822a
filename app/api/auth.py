"""The authentication dependency every `/v1` route uses: which key a request carries, and its scope.

A key comes in `Authorization: Bearer <key>`; the dashboard instead sends the HttpOnly
SameSite=Strict cookie `lstmlm_session`, a session made by `POST /v1/session` (`app.auth.sessions`),
which stands for its key while it lives. No key, an unknown or revoked one, or an ended or expired
session is a 401; a key whose scope is too low for the route is a 403. With `auth` off every request is the local admin.
Routes declare what they need with `ReadKey`, `WriteKey` or `AdminKey`; ownership (404 for what a
key may not see) is applied by the core with the principal these return.

`AuthGate` checks the key of every `/v1` request (but logging in and out) before the route reads
its body, so a request without a valid key never costs a 64 MB upload parse; the dependency then
reuses what the gate found. When a session's expiry moves on, the gate sends its cookie again with
the new lifetime.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem_response
from app.api.schemas import problem_responses
from app.auth import keys, sessions
from app.auth.principal import LOCAL, Principal
from app.auth.scopes import Scope as KeyScope
from app.auth.scopes import allows
from app.settings import Settings

COOKIE = "lstmlm_session"
LEGACY_COOKIE = "lstmlm_key"  # held the key itself before sessions; never read, cleared at login and logout
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="lstm-lm"'}

bearer = HTTPBearer(auto_error=False, description="an API key: `python -m app keys create`, or data/admin.key")
cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="a dashboard session, set by POST /v1/session")

# Every authenticated route may answer these.
AUTH_RESPONSES = problem_responses(401, 403)


NO_KEY = "this route needs an API key: send 'Authorization: Bearer <key>'"
BAD_KEY = "the API key is not valid (unknown or revoked)"
BAD_SESSION = "the session has ended (logged out, expired or its key revoked): log in again"
# Logging in checks the key it is given itself; logging out needs no live session.
GATE_EXEMPT = frozenset({("POST", "/v1/session"), ("DELETE", "/v1/session")})


def _check(engine: Engine, secret: str | None) -> Principal | str:
    """The principal of the key `secret`, or why it is refused."""
    if not secret:
        return NO_KEY
    with Session(engine) as session:
        principal = keys.authenticate(session, secret)
    return principal if principal is not None else BAD_KEY


def _check_session(engine: Engine, secret: str, hours: float) -> sessions.Checked | str:
    """The caller of the session cookie `secret`, or why it is refused."""
    checked = sessions.authenticate(engine, secret, hours)
    return checked if checked is not None else BAD_SESSION


def session_cookie(secret: str, hours: float, secure: bool) -> str:
    """The Set-Cookie value of a session: HttpOnly, SameSite=Strict, Path=/, for `hours`."""
    flags = f"; Max-Age={round(hours * 3600)}; Path=/; HttpOnly; SameSite=strict"
    return f"{COOKIE}={secret}{flags}{'; Secure' if secure else ''}"


def _bearer_of(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    cookie_key: Annotated[str | None, Security(cookie)],
) -> Principal:
    """The caller: the key in the Authorization header, else the session cookie's; 401 without a valid one.

    On the event loop: a request that the gate already checked (every `/v1` request) needs no
    database, so only a lookup goes to a worker thread, not every request.
    """
    settings: Settings = request.app.state.settings
    if not settings.auth:
        return LOCAL
    checked: Principal | None = getattr(request.state, "principal", None)
    if checked is not None:  # the gate already looked this key up
        return checked
    engine = request.app.state.engine

    def look_up() -> Principal | str:
        if credentials is not None or not cookie_key:
            return _check(engine, credentials.credentials if credentials is not None else None)
        found = _check_session(engine, cookie_key, settings.session_hours)
        return found if isinstance(found, str) else found.principal

    result = await anyio.to_thread.run_sync(look_up)
    if isinstance(result, str):
        raise HTTPException(401, result, headers=CHALLENGE)
    return result


class AuthGate:
    """Pure ASGI middleware: a 401 for `/v1` requests without a valid key, before their body is read."""

    def __init__(self, app: ASGIApp, settings: Settings, engine: Engine) -> None:
        self.app, self.settings, self.engine = app, settings, engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not self.settings.auth
            or scope["method"] == "OPTIONS"  # CORS preflights carry no credentials
            or not path.startswith("/v1/")
            or (scope["method"], path) in GATE_EXEMPT
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        key = _bearer_of(request.headers.get("authorization"))
        session_secret = request.cookies.get(COOKIE)
        renewed = False
        result: Principal | str
        if key is not None or not session_secret:
            result = await anyio.to_thread.run_sync(_check, self.engine, key)
        else:
            found = await anyio.to_thread.run_sync(
                _check_session, self.engine, session_secret, self.settings.session_hours
            )
            result = found if isinstance(found, str) else found.principal
            renewed = not isinstance(found, str) and found.renewed
        if isinstance(result, str):
            response = problem_response(request, 401, "Unauthorized", result, headers=CHALLENGE)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = result
        if not renewed:
            await self.app(scope, receive, send)
            return
        cookie_value = session_cookie(session_secret or "", self.settings.session_hours, scope["scheme"] == "https")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("set-cookie", cookie_value)
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _require(principal: Principal, needed: KeyScope) -> Principal:
    if not allows(principal.scope, needed):
        raise HTTPException(403, f"this key's scope is {principal.scope}; this route needs {needed}")
    return principal


async def read_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Any valid key."""
    return principal


async def write_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A key with scope write or admin."""
    return _require(principal, KeyScope.WRITE)


async def admin_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A key with scope admin."""
    return _require(principal, KeyScope.ADMIN)


ReadKey = Annotated[Principal, Depends(read_key)]
WriteKey = Annotated[Principal, Depends(write_key)]
AdminKey = Annotated[Principal, Depends(admin_key)]
