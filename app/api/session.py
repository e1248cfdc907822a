"""Routes: dashboard sessions (`POST /v1/session` logs in with a key and sets the session cookie,
`DELETE` logs out, `GET` lists the key's sessions, `DELETE /v1/session/{id}` ends one) and `GET /v1/whoami`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException

from app.api.auth import AUTH_RESPONSES, CHALLENGE, COOKIE, LEGACY_COOKIE, ReadKey, session_cookie
from app.api.problems import Problem
from app.api.schemas import problem_responses
from app.auth import keys, sessions
from app.auth.principal import Principal
from app.store.tables import BrowserSession

router = APIRouter(prefix="/v1", tags=["auth"])


class WhoAmI(BaseModel):
    id: str | None = Field(description="the key's id; null when authentication is off")
    name: str
    scope: str = Field(description="read, write or admin")

    @classmethod
    def of(cls, principal: Principal) -> WhoAmI:
        return cls(id=principal.key_id, name=principal.name, scope=principal.scope.value)


class SessionOut(BaseModel):
    id: str = Field(description="the session's id (ses_...); the cookie's value is never shown")
    created_at: datetime = Field(description="when it logged in")
    last_seen_at: datetime = Field(description="when it was last used (to the minute)")
    expires_at: datetime = Field(description="when it ends unless used again (LSTMLM_SESSION_HOURS after its last use)")
    user_agent: str | None = Field(description="the browser that logged in, as it named itself")
    current: bool = Field(description="the session this request came with")

    @classmethod
    def of(cls, row: BrowserSession, current: str | None) -> SessionOut:
        return cls(
            id=row.id,
            created_at=row.created_at,
            last_seen_at=row.last_seen_at,
            expires_at=row.expires_at,
            user_agent=row.user_agent,
            current=row.id == current,
        )


class SessionList(BaseModel):
    items: list[SessionOut] = Field(description="the key's live sessions, newest first")


class SessionIn(BaseModel):
    key: str = Field(min_length=1, max_length=keys.MAX_KEY_CHARS, description="an API key")


LOGIN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": SessionIn.model_json_schema()},
            "application/x-www-form-urlencoded": {"schema": SessionIn.model_json_schema()},
        },
    }
}


async def _key_of(request: Request) -> str:
    """The `key` field of a JSON or form body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        value: Any = form.get("key")
    else:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise Problem(400, 'malformed JSON body: send {"key": "..."} or a form with a key field') from None
        value = body.get("key") if isinstance(body, dict) else None
    if not isinstance(value, str) or not 1 <= len(value) <= keys.MAX_KEY_CHARS:
        raise Problem(422, f"key: a string of 1-{keys.MAX_KEY_CHARS} characters is required")
    return value


@router.post(
    "/session", response_model=WhoAmI, responses=problem_responses(400, 401, 403, 422), openapi_extra=LOGIN_BODY
)
async def login(request: Request, response: Response) -> WhoAmI:
    """Check a key and start a dashboard session: the HttpOnly, SameSite=Strict cookie `lstmlm_session`
    holds a random session id (not the key), valid for `LSTMLM_SESSION_HOURS` after its last use."""
    secret = await _key_of(request)
    engine = request.app.state.engine
    hours = request.app.state.settings.session_hours

    def start() -> tuple[Principal, str] | None:
        with Session(engine) as session:
            principal = keys.authenticate(session, secret)
        if principal is None or principal.key_id is None:
            return None
        _, cookie_value = sessions.create(engine, principal.key_id, hours, request.headers.get("user-agent"))
        return principal, cookie_value

    started = await anyio.to_thread.run_sync(start)
    if started is None:
        raise HTTPException(401, "the API key is not valid (unknown or revoked)", headers=CHALLENGE)
    principal, cookie_value = started
    secure = request.url.scheme == "https"
    response.headers.append("set-cookie", session_cookie(cookie_value, hours, secure))
    if LEGACY_COOKIE in request.cookies:
        response.delete_cookie(LEGACY_COOKIE, path="/", httponly=True, samesite="strict", secure=secure)
    return WhoAmI.of(principal)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(403))
def logout(request: Request) -> Response:
    """Log out: end the session of the cookie (it is refused from now on) and clear the cookie."""
    sessions.end(request.app.state.engine, request.cookies.get(COOKIE))
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    secure = request.url.scheme == "https"
    for name in (COOKIE, LEGACY_COOKIE):
        response.delete_cookie(name, path="/", httponly=True, samesite="strict", secure=secure)
    return response


@router.get("/session", response_model=SessionList, responses=AUTH_RESPONSES)
def list_sessions(request: Request, principal: ReadKey) -> SessionList:
    """The live dashboard sessions of the key this request authenticated with (none with authentication off)."""
    if principal.key_id is None:
        return SessionList(items=[])
    with Session(request.app.state.engine) as session:
        rows = sessions.live(session, principal.key_id)
    return SessionList(items=[SessionOut.of(row, principal.session_id) for row in rows])


@router.delete(
    "/session/{session_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(401, 403, 404)
)
def end_session(request: Request, session_id: str, principal: ReadKey) -> Response:
    """End one of this key's live sessions (a browser left logged in elsewhere); 404 for any other."""
    if principal.key_id is None:
        raise Problem(404, f"no session {session_id!r} of this key")
    sessions.end_one(request.app.state.engine, principal.key_id, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/whoami", response_model=WhoAmI, responses=AUTH_RESPONSES)
def whoami(principal: ReadKey) -> WhoAmI:
    """The key this request authenticated with: id, name and scope (so a UI can hide what it may not do)."""
    return WhoAmI.of(principal)
