"""The HTTP side of the client: where the server is, which key to send, requests whose failures
become one-line errors, Server-Sent Events read from a streamed response, and streams that
reconnect after a server restart or a network blip."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
KEY_FILE = Path("data") / "admin.key"  # where the server's one-command start saves its admin key
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
GIVE_UP_AFTER = 120.0  # seconds a stream keeps reconnecting before it gives up
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0  # seconds between reconnection attempts: doubling from the first


class ApiError(Exception):
    """A failed request, said in one line (the problem+json `detail` when the server sent one);
    `status` is the HTTP status, None when no answer came."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body

    @property
    def transient(self) -> bool:
        """No answer, or one that says the server is starting, stopping or overloaded: worth asking again."""
        return self.status is None or self.status in (502, 503, 504)


class GaveUp(ApiError):
    """A stream that could not reconnect within its time."""


@dataclass(frozen=True)
class Key:
    """The API key and where it came from (for the message of a 401)."""

    value: str | None
    source: str | None  # "--api-key", "LSTMLM_API_KEY", "data/admin.key" or None


def resolve_key(flag: str | None) -> Key:
    """The API key: the flag, else LSTMLM_API_KEY, else ./data/admin.key when present."""
    env = os.environ.get("LSTMLM_API_KEY")
    if flag:
        return Key(flag, "LSTMLM_API_KEY" if flag == env else "--api-key")
    if env:
        return Key(env, "LSTMLM_API_KEY")
    if KEY_FILE.is_file():
        try:
            text = KEY_FILE.read_text(encoding="utf-8").strip()
        except OSError:
            return Key(None, None)
        return Key(text or None, str(KEY_FILE) if text else None)
    return Key(None, None)


def one_line(text: str) -> str:
    return " ".join(text.split())


def unauthorized_hint(key: Key) -> str:
    """What to do about a 401: which key was sent, and the three ways to send one."""
    ways = f"pass --api-key or set LSTMLM_API_KEY (the server's first admin key is in its {KEY_FILE})"
    if key.value is None:
        return f"no API key was sent: {ways}"
    return f"the key from {key.source} was refused: {ways}"


def error_of(response: httpx.Response, key: Key | None = None) -> ApiError:
    """The one-line error for a failed response: the problem's `detail`, and every other failing field."""
    detail: Any = None
    body: Any = None
    try:
        body = response.json()
        if isinstance(body, dict):
            detail = body.get("detail")
    except ValueError:
        pass
    if not isinstance(detail, str):
        text = response.text.strip().splitlines()
        detail = text[0] if text and not text[0].lstrip().startswith("<") else response.reason_phrase
    message = f"{response.status_code}: {one_line(detail)}"
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and len(errors) > 1:
        others = [_error_text(e) for e in errors[1:]]
        others = [o for o in others if o and o not in message]
        if others:
            message += "; " + "; ".join(others)
    if response.status_code == 401:
        message += f"; {unauthorized_hint(key or Key(None, None))}"
    elif response.status_code == 405:
        message += f" ({response.request.method} {response.request.url.path}: this server does not offer it)"
    return ApiError(message, response.status_code, body)


def _error_text(error: Any) -> str:
    if isinstance(error, str):
        return one_line(error)
    if isinstance(error, dict):
        if isinstance(error.get("message"), str):  # the API's words: "temperature must be >= 0, got -1"
            return one_line(error["message"])
        loc, msg = error.get("loc"), error.get("msg") or error.get("detail")
        if isinstance(loc, list):
            loc = ".".join(map(str, loc))
        text = f"{loc}: {msg}" if loc and msg and not str(msg).startswith(str(loc)) else str(msg or "")
        return one_line(text)
    return ""


def unreachable(url: str, exc: Exception, doing: str = "reach") -> ApiError:
    """The one-line error for no answer: the URL, why, and where the URL comes from."""
    text = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "refused" in text.lower():
        text = "connection refused"
    elif isinstance(exc, httpx.TimeoutException):
        text = f"timed out ({text})" if text != type(exc).__name__ else "timed out"
    if url == DEFAULT_URL:
        hint = "is the server running? For a server elsewhere set LSTMLM_URL or pass --url"
    else:
        hint = "is the server running there? (the URL comes from --url or LSTMLM_URL)"
    return ApiError(f"cannot {doing} {url} ({text}): {hint}")


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def read_events(lines: Iterator[str]) -> Iterator[Event]:
    """Parse a Server-Sent Events stream (comments and pings skipped)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield Event(fields.get("event", "message"), "\n".join(data), fields.get("id"))
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    if data:
        yield Event(fields.get("event", "message"), "\n".join(data), fields.get("id"))


class Api:
    """A connection to one server."""

    def __init__(self, url: str, key: Key | str | None) -> None:
        self.key = key if isinstance(key, Key) else Key(key, "--api-key" if key else None)
        headers = {"Authorization": f"Bearer {self.key.value}"} if self.key.value else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; `ApiError` for an error status or an unreachable server."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from None
        except httpx.InvalidURL as exc:
            raise ApiError(f"invalid URL {self.url}{path}: {exc}") from None
        if response.status_code >= 400:
            raise self.error(response)
        return response

    def error(self, response: httpx.Response) -> ApiError:
        return error_of(response, self.key)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs).json()

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs).json()

    def events(self, path: str, params: dict[str, Any] | None = None, last_id: str | None = None) -> Iterator[Event]:
        """Follow an event stream until the server closes it."""
        headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_id} if last_id else {})
        try:
            with self.http.stream(
                "GET", path, params=params, headers=headers, timeout=httpx.Timeout(None, connect=10.0)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self.error(response)
                yield from read_events(response.iter_lines())
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc, "follow the stream from") from None

    def follow(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        give_up_after: float = GIVE_UP_AFTER,
        note: Callable[[str], None] | None = None,
    ) -> Iterator[Event]:
        """Follow an event stream to its `end` event, reconnecting (with `Last-Event-ID`) when it breaks
        or closes early: waits of 0.5 s doubling up to 5 s, a line through `note` when an outage begins,
        `GaveUp` once it has lasted `give_up_after` seconds. The `end` event is yielded last."""
        last_id: str | None = None
        outage: float | None = None
        for attempt in reconnections(give_up_after):
            try:
                for event in self.events(path, params, last_id):
                    outage = None
                    if event.id is not None:
                        last_id = event.id
                    yield event
                    if event.event == "end":
                        return
                reason = "the stream closed before the end"
            except ApiError as exc:
                if not exc.transient:
                    raise
                reason = str(exc)
            if outage is None:
                outage = time.monotonic()
                attempt.restart()
                if note:
                    note(f"reconnecting to {self.url}… ({reason_of(reason)}; giving up after {give_up_after:g} s)")
            attempt.failed(reason)

    def close(self) -> None:
        self.http.close()


def reason_of(message: str) -> str:
    """The short reason in an error message: `connection refused`, `the stream closed before the end`."""
    if "(" in message and ")" in message:
        return message[message.index("(") + 1 : message.index(")")]
    return message


class Attempt:
    """The state of one outage: when it began, the next wait, and when to give up."""

    def __init__(self, give_up_after: float) -> None:
        self.give_up_after = give_up_after
        self.restart()

    def restart(self) -> None:
        self.started = time.monotonic()
        self.wait = BACKOFF_FIRST

    def failed(self, reason: str) -> None:
        """Wait before the next try; `GaveUp` once the outage has lasted `give_up_after` seconds."""
        left = self.started + self.give_up_after - time.monotonic()
        if left <= 0:
            raise GaveUp(f"gave up after {self.give_up_after:g} s without the server: {reason_of(reason)}")
        time.sleep(min(self.wait, left))
        self.wait = min(self.wait * 2, BACKOFF_MAX)


def reconnections(give_up_after: float) -> Iterator[Attempt]:
    """The same `Attempt` again and again: a loop that ends by return, an error or `GaveUp`."""
    attempt = Attempt(give_up_after)
    while True:
        yield attempt
