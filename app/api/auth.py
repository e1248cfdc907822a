"""The authentication dependency every `/v1` route uses: which key a request carries, and its scope.

A key comes in `Authorization: Bearer <key>` or, for the dashboard, in the HttpOnly SameSite=Strict
cookie `lstmlm_key` (set by `POST /v1/session`). No key or an unknown or revoked one is a 401; a
key whose scope is too low for the route is a 403. With `auth` off every request is the local admin.
Routes declare what they need with `ReadKey`, `WriteKey` or `AdminKey`; ownership (404 for what a
key may not see) is applied by the core with the principal these return.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException

from app.api.schemas import problem_responses
from app.auth import keys
from app.auth.principal import LOCAL, Principal
from app.auth.scopes import Scope, allows
from app.settings import Settings

COOKIE = "lstmlm_key"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="lstm-lm"'}

bearer = HTTPBearer(auto_error=False, description="an API key: `python -m app keys create`, or data/admin.key")
cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="the key, set by POST /v1/session")

# Every authenticated route may answer these.
AUTH_RESPONSES = problem_responses(401, 403)


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    cookie_key: Annotated[str | None, Security(cookie)],
) -> Principal:
    """The caller: the key in the Authorization header, else in the cookie; 401 without a valid one."""
    settings: Settings = request.app.state.settings
    if not settings.auth:
        return LOCAL
    secret = credentials.credentials if credentials is not None else cookie_key
    if not secret:
        raise HTTPException(401, "this route needs an API key: send 'Authorization: Bearer <key>'", headers=CHALLENGE)
    with Session(request.app.state.engine) as session:
        principal = keys.authenticate(session, secret)
    if principal is None:
        raise HTTPException(401, "the API key is not valid (unknown or revoked)", headers=CHALLENGE)
    return principal


def _require(principal: Principal, needed: Scope) -> Principal:
    if not allows(principal.scope, needed):
        raise HTTPException(403, f"this key's scope is {principal.scope}; this route needs {needed}")
    return principal


def read_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Any valid key."""
    return principal


def write_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A key with scope write or admin."""
    return _require(principal, Scope.WRITE)


def admin_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A key with scope admin."""
    return _require(principal, Scope.ADMIN)


ReadKey = Annotated[Principal, Depends(read_key)]
WriteKey = Annotated[Principal, Depends(write_key)]
AdminKey = Annotated[Principal, Depends(admin_key)]
