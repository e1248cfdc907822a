"""Routes: dashboard login (`POST /v1/session` sets the key cookie, `DELETE` clears it) and `GET /v1/whoami`."""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException

from app.api.auth import AUTH_RESPONSES, CHALLENGE, COOKIE, ReadKey
from app.api.problems import Problem
from app.api.schemas import problem_responses
from app.auth import keys
from app.auth.principal import Principal

router = APIRouter(prefix="/v1", tags=["auth"])


class WhoAmI(BaseModel):
    id: str | None = Field(description="the key's id; null when authentication is off")
    name: str
    scope: str = Field(description="read, write or admin")

    @classmethod
    def of(cls, principal: Principal) -> WhoAmI:
        return cls(id=principal.key_id, name=principal.name, scope=principal.scope.value)


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
    """Check a key and keep it in the HttpOnly, SameSite=Strict cookie `lstmlm_key` (the dashboard's login)."""
    secret = await _key_of(request)

    def check() -> Principal | None:
        with Session(request.app.state.engine) as session:
            return keys.authenticate(session, secret)

    principal = await anyio.to_thread.run_sync(check)
    if principal is None:
        raise HTTPException(401, "the API key is not valid (unknown or revoked)", headers=CHALLENGE)
    response.set_cookie(
        COOKIE, secret, httponly=True, samesite="strict", path="/", secure=request.url.scheme == "https"
    )
    return WhoAmI.of(principal)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(403))
def logout(request: Request) -> Response:
    """Forget the key cookie (log out)."""
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


@router.get("/whoami", response_model=WhoAmI, responses=AUTH_RESPONSES)
def whoami(principal: ReadKey) -> WhoAmI:
    """The key this request authenticated with: id, name and scope (so a UI can hide what it may not do)."""
    return WhoAmI.of(principal)
