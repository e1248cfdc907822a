"""The HTTP side of the client: where the server is, which key to send, requests whose failures
become one-line errors, and Server-Sent Events read from a streamed response."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
KEY_FILE = Path("data") / "admin.key"  # where the server's one-command start saves its admin key
TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class ApiError(Exception):
    """A failed request, said in one line (the problem+json `detail` when the server sent one);
    `status` is the HTTP status, None when no answer came."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def resolve_key(flag: str | None) -> str | None:
    """The API key: the flag, else LSTMLM_API_KEY, else ./data/admin.key when present."""
    if flag:
        return flag
    if os.environ.get("LSTMLM_API_KEY"):
        return os.environ["LSTMLM_API_KEY"]
    if KEY_FILE.is_file():
        return KEY_FILE.read_text(encoding="utf-8").strip() or None
    return None


def error_of(response: httpx.Response) -> ApiError:
    """The one-line error for a failed response."""
    detail = None
    try:
        body = response.json()
        if isinstance(body, dict):
            detail = body.get("detail")
    except ValueError:
        pass
    if not isinstance(detail, str):
        text = response.text.strip().splitlines()
        detail = text[0] if text else response.reason_phrase
    return ApiError(f"{response.status_code}: {detail}", response.status_code)


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

    def __init__(self, url: str, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; `ApiError` for an error status or an unreachable server."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise error_of(response)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs).json()

    def events(self, path: str, params: dict[str, Any] | None = None, last_id: str | None = None) -> Iterator[Event]:
        """Follow an event stream until the server closes it."""
        headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_id} if last_id else {})
        try:
            with self.http.stream(
                "GET", path, params=params, headers=headers, timeout=httpx.Timeout(None, connect=10.0)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_of(response)
                yield from read_events(response.iter_lines())
        except httpx.TransportError as exc:
            raise ApiError(f"stream from {self.url} broke: {exc}") from None

    def close(self) -> None:
        self.http.close()
