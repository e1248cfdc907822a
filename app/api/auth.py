"""The authentication dependency every `/v1` route uses: which key a request carries, and its scope.

A key comes in `Authorization: Bearer <key>` or, for the dashboard, in the HttpOnly SameSite=Strict
cookie `lstmlm_key` (set by `POST /v1/session`). No key or an unknown or revoked one is a 401; a
key whose scope is too low for the route is a 403. With `auth` off every request is the local admin.
Routes declare what they need with `ReadKey`, `WriteKey` or `AdminKey`; ownership (404 for what a
key may not see) is applied by the core with the principal these return.

`AuthGate` checks the key of every `/v1` request (but the login route) before the route reads its
body, so a request without a valid key never costs a 64 MB upload parse; the dependency then
reuses what the gate found.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.problems import problem_response
from app.api.schemas import problem_responses
from app.auth import keys
from app.auth.principal import LOCAL, Principal
from app.auth.scopes import Scope as KeyScope
from app.auth.scopes import allows
from app.settings import Settings

COOKIE = "lstmlm_key"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="lstm-lm"'}

bearer = HTTPBearer(auto_error=False, description="an API key: `python -m app keys create`, or data/admin.key")
cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="the key, set by POST /v1/session")

# Every authenticated route may answer these.
AUTH_RESPONSES = problem_responses(401, 403)


NO_KEY = "this route needs an API key: send 'Authorization: Bearer <key>'"
BAD_KEY = "the API key is not valid (unknown or revoked)"
GATE_EXEMPT = frozenset({"/v1/session"})  # the login route checks the key it is given itself


def _check(engine: Engine, secret: str | None) -> Principal | str:
    """The principal of `secret`, or why it is refused."""
    if not secret:
        return NO_KEY
    with Session(engine) as session:
        principal = keys.authenticate(session, secret)
    return principal if principal is not None else BAD_KEY


def _bearer_of(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    cookie_key: Annotated[str | None, Security(cookie)],
) -> Principal:
    """The caller: the key in the Authorization header, else in the cookie; 401 without a valid one."""
    settings: Settings = request.app.state.settings
    if not settings.auth:
        return LOCAL
    checked: Principal | None = getattr(request.state, "principal", None)
    if checked is not None:  # the gate already looked this key up
        return checked
    result = _check(request.app.state.engine, credentials.credentials if credentials is not None else cookie_key)
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
            or path in GATE_EXEMPT
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        secret = _bearer_of(request.headers.get("authorization")) or request.cookies.get(COOKIE)
        result = await anyio.to_thread.run_sync(_check, self.engine, secret)
        if isinstance(result, str):
            response = problem_response(request, 401, "Unauthorized", result, headers=CHALLENGE)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = result
        await self.app(scope, receive, send)


def _require(principal: Principal, needed: KeyScope) -> Principal:
    if not allows(principal.scope, needed):
        raise HTTPException(403, f"this key's scope is {principal.scope}; this route needs {needed}")
    return principal


def read_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Any valid key."""
    return principal


def write_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A key with scope write or admin."""
    return _require(principal, KeyScope.WRITE)


def admin_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A key with scope admin."""
    return _require(principal, KeyScope.ADMIN)


ReadKey = Annotated[Principal, Depends(read_key)]
WriteKey = Annotated[Principal, Depends(write_key)]
AdminKey = Annotated[Principal, Depends(admin_key)]
