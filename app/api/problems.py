"""RFC 9457 problem details (`application/problem+json`) for every error the API returns."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import MAX_DETAIL_CHARS, Busy, Conflict, Forbidden, Invalid, NotFound, OverQuota, ServiceError, TooLarge

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raise from routes and dependencies to answer with a problem+json body."""

    def __init__(self, status: int, detail: str, *, title: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.extra = extra


MAX_EXTRA_ITEMS = 20  # list fields of a problem (errors, field names) keep their first items


def bounded(value: Any, limit: int = 200) -> Any:
    """A JSON value whose size does not grow with the request: strings cut to `limit` characters
    (lone surrogates replaced, so the body always encodes), lists to their first items."""
    if isinstance(value, str):
        clean = value.encode("utf-8", "replace").decode("utf-8")
        return clean if len(clean) <= limit else clean[: limit - 3] + "..."
    if isinstance(value, list | tuple):
        return [bounded(v, limit) for v in value[:MAX_EXTRA_ITEMS]]
    if isinstance(value, dict):
        return {bounded(str(k), limit): bounded(v, limit) for k, v in list(value.items())[:MAX_EXTRA_ITEMS]}
    return value


def problem_response(
    request: Request, status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        **{k: bounded(v) for k, v in extra.items()},
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": bounded(detail, MAX_DETAIL_CHARS),
        "instance": bounded(request.url.path),
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# How the core's refusals read over HTTP.
SERVICE_ERRORS: dict[type[ServiceError], tuple[int, str]] = {
    NotFound: (404, "Not Found"),
    Conflict: (409, "Conflict"),
    Invalid: (422, "Unprocessable Content"),
    TooLarge: (413, "Content Too Large"),
    Forbidden: (403, "Forbidden"),
    OverQuota: (429, "Too Many Requests"),
    Busy: (503, "Service Unavailable"),
}


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


REQUEST_PARTS = ("body", "query", "path", "header", "cookie")


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """The field an error is about as a client names it: `temperature`, `overrides.seed`, `tags.3`
    (no `body.`/`query.` prefix, no pydantic type tags such as `function-after[...]`)."""
    parts = list(loc)
    if parts and parts[0] in REQUEST_PARTS:
        parts = parts[1:]
    kept = [str(p) for p in parts if isinstance(p, int) or not any(ch in str(p) for ch in "[](), ")]
    return ".".join(kept)


def shown_value(value: Any, limit: int = 60) -> str:
    """A received value as JSON, cut to `limit` characters: what an error message quotes."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any) -> str:
    """A constraint's bound as a message states it: 10,000 rather than 10000."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _size(value: Any) -> str:
    return f"{len(value):,}" if isinstance(value, str | list | tuple | dict) else shown_value(value)


# pydantic's error types in words: (constraint, how the value received is shown: "value", "size" or none)
CONSTRAINTS: dict[str, tuple[str, str]] = {
    "greater_than_equal": ("must be >= {ge}", "value"),
    "greater_than": ("must be > {gt}", "value"),
    "less_than_equal": ("must be <= {le}", "value"),
    "less_than": ("must be < {lt}", "value"),
    "multiple_of": ("must be a multiple of {multiple_of}", "value"),
    "finite_number": ("must be a finite number", "value"),
    "string_too_short": ("must be at least {min_length} characters", "size"),
    "string_too_long": ("must be at most {max_length} characters", "size"),
    "too_short": ("must have at least {min_length} items", "size"),
    "too_long": ("must have at most {max_length} items", "size"),
    "string_pattern_mismatch": ("must match {pattern}", "value"),
    "missing": ("is required", ""),
    "extra_forbidden": ("is not a field of this request", ""),
    "int_parsing": ("must be an integer", "value"),
    "int_type": ("must be an integer", "value"),
    "int_from_float": ("must be an integer", "value"),
    "float_parsing": ("must be a number", "value"),
    "float_type": ("must be a number", "value"),
    "bool_parsing": ("must be true or false", "value"),
    "bool_type": ("must be true or false", "value"),
    "string_type": ("must be a string", "value"),
    "string_unicode": ("must be valid Unicode text", ""),
    "list_type": ("must be a list", "value"),
    "dict_type": ("must be an object", "value"),
    "model_type": ("must be an object", "value"),
    "model_attributes_type": ("must be an object", "value"),
    "literal_error": ("must be one of {expected}", "value"),
    "enum": ("must be one of {expected}", "value"),
    "json_type": ("must be JSON", ""),
}


def error_in_words(error: dict[str, Any]) -> dict[str, str]:
    """One pydantic error as {"field", "message"}: "temperature must be >= 0, got -1"."""
    field = field_name(error.get("loc", ()))
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    if kind in CONSTRAINTS:
        template, show = CONSTRAINTS[kind]
        try:
            constraint = template.format(**{k: _number(v) for k, v in ctx.items()})
        except (KeyError, IndexError, ValueError):
            constraint = template.split(" {")[0]
        received = error.get("input")
        loc = error.get("loc", ())
        if loc and loc[0] != "body" and isinstance(received, str):  # a query or header value: text as sent
            value = received if len(received) <= 60 else received[:57] + "..."
        else:
            value = shown_value(received)
        got = {"value": f", got {value}", "size": f", got {_size(received)}", "": ""}[show]
        if kind == "extra_forbidden" and field:
            return {"field": field, "message": f"{field.rsplit('.', 1)[-1]} is not a field of this request"}
        constraint = constraint.replace(" 1 characters", " 1 character").replace(" 1 items", " 1 item")
        message = f"{field or 'the body'} {constraint}{got}"
    else:
        text = str(error.get("msg", "invalid value"))
        text = text.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        message = f"{field}: {text}" if field else text
    return {"field": field, "message": bounded(message, 300)}


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}}


def document_problems(schema: dict[str, Any], problem_schema: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document say what the server does: every error is problem+json (FastAPI's
    `HTTPValidationError` shape is never sent), a body can be malformed (400), too large (413) or
    invalid (422), and any parameter can be invalid (422)."""
    schema.setdefault("components", {}).setdefault("schemas", {})["ProblemDetail"] = problem_schema
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            codes = [400, 413, 422] if "requestBody" in operation else []
            if operation.get("parameters"):
                codes.append(422)
            for code in codes:
                responses.setdefault(str(code), {"description": HTTPStatus(code).phrase})
            for code, response in responses.items():
                if code[0] in "45":
                    response["content"] = _problem_content()
                    response.setdefault("description", HTTPStatus(int(code)).phrase)
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)
    _forms_without_null(schema)
    return schema


def _forms_without_null(schema: dict[str, Any]) -> None:
    """A multipart form cannot send null: an optional field is one left out. FastAPI states an optional
    `Form`/`File` as `anyOf: [..., {"type": "null"}]`, which a client reads as "send the text null" (and
    a file part as a text field); the document states the field's own type instead."""
    components = schema["components"]["schemas"]
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            content = operation.get("requestBody", {}).get("content", {})
            ref = content.get("multipart/form-data", {}).get("schema", {}).get("$ref", "")
            form = components.get(ref.rsplit("/", 1)[-1], {}) if ref else {}
            for name, field in form.get("properties", {}).items():
                branches = [branch for branch in field.get("anyOf", []) if branch != {"type": "null"}]
                if "anyOf" in field and len(branches) == 1:
                    rest = {key: value for key, value in field.items() if key != "anyOf"}
                    form["properties"][name] = {**branches[0], **rest}


# The methods an `Allow` header may name, in the order it names them.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _leaves(routes: list[Any]) -> Iterator[Any]:
    """The routes an app serves, those of included routers one by one (FastAPI keeps an included
    router as one route whose `effective_candidates` are its own); mounts (the static files, which
    answer their own 405s) are left out."""
    for route in routes:
        if isinstance(route, Mount):
            continue
        candidates = getattr(route, "effective_candidates", None)
        if candidates is not None:
            yield from _leaves(candidates())
        elif getattr(route, "path_regex", None) is not None:
            yield route


def _serving(routes: list[Any], path: str) -> list[tuple[set[str], bool]]:
    """(methods, whether its path is literal: no path parameter) of each route whose path matches."""
    return [
        (set(route.methods or ()), not route.param_convertors)
        for route in _leaves(routes)
        if route.path_regex.match(path)
    ]


def allowed_methods(routes: list[Any], path: str) -> list[str]:
    """Every method the resource at this path serves: the `Allow` of a 405 (Starlette's names only the
    first route whose path matches: `/v1/datasets` said POST, though GET is served too). A literal
    path (`/v1/datasets/roots`) is its own resource, not an id of the parametrised one beside it."""
    serving = _serving(routes, path)
    literal = any(is_literal for _, is_literal in serving)
    served = set().union(*(methods for methods, is_literal in serving if is_literal or not literal))
    return [method for method in METHODS if method in served]


class LiteralPathsFirst:
    """Answer 405 to a method a literal path does not serve, instead of letting a parametrised route
    take the path as an id (`DELETE /v1/datasets/roots` is not the deletion of a dataset `roots`)."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app, self.router = app, router
        self._literal: dict[str, set[str]] = {}  # literal path -> the methods its routes serve
        self._built_for = -1  # the router's route count it was built for (routes are added at start-up)

    def _literal_methods(self, path: str) -> set[str] | None:
        """What the literal routes of exactly `path` serve (a literal route's pattern matches only its
        own path), looked up instead of matching every route's pattern on every request."""
        if self._built_for != len(self.router.routes):
            literal: dict[str, set[str]] = {}
            for route in _leaves(self.router.routes):
                if not route.param_convertors:
                    literal.setdefault(route.path, set()).update(route.methods or ())
            self._literal, self._built_for = literal, len(self.router.routes)
        return self._literal.get(path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            served = self._literal_methods(scope["path"])
            if served is not None and scope["method"] not in served:
                allow = ", ".join(allowed_methods(self.router.routes, scope["path"]))
                title = HTTPStatus.METHOD_NOT_ALLOWED.phrase
                response = problem_response(Request(scope), 405, title, title, headers={"Allow": allow})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Route every error through problem+json, and say so in the OpenAPI document."""
    from app.api.schemas import ProblemDetail  # the schemas module imports nothing from here

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            problem = ProblemDetail.model_json_schema(ref_template="#/components/schemas/{model}")
            app.openapi_schema = document_problems(schema, problem)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(LiteralPathsFirst, router=app.router)  # inside the key check: added before it

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc.status, exc.title, exc.detail, **exc.extra)

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        status, title = next((v for cls, v in SERVICE_ERRORS.items() if isinstance(exc, cls)), (400, "Bad Request"))
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
        return problem_response(request, status, title, exc.detail, headers=headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = HTTPStatus(exc.status_code).phrase
        detail = exc.detail if isinstance(exc.detail, str) else title
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405 and (allowed := allowed_methods(app.router.routes, request.url.path)):
            headers["Allow"] = ", ".join(allowed)
        return problem_response(request, exc.status_code, title, detail, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in raw):
            first = next(e for e in raw if e.get("type") == "json_invalid")
            errors = [{"field": "", "message": f"malformed JSON body: {first.get('msg', '')}", "type": "json_invalid"}]
            return problem_response(request, 400, "Bad Request", errors[0]["message"], errors=errors)
        # Every failing field at once, each in words ({"field", "message"}, for a form to flag them
        # all); `loc`, `msg` and `type` are pydantic's own, kept for clients that read them.
        errors = []
        for e in raw[:MAX_EXTRA_ITEMS]:
            words = error_in_words(e)
            errors.append(
                {**words, "loc": _location(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
            )
        detail = "; ".join(e["message"] for e in errors) or "invalid request"
        return problem_response(request, 422, "Unprocessable Content", detail, errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(request, 500, "Internal Server Error", f"unexpected error: {type(exc).__name__}")
