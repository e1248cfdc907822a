"""The one way the API follows something as Server-Sent Events: poll the database, send what is new.

A `Poll` is a synchronous function (it runs in a worker thread) called again and again; each call
returns the events to send now, whether more are already waiting (call again at once) and whether
the stream is done. Between empty polls the stream sleeps `interval` seconds; it ends when the
poll says so or the client goes away.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple

import anyio
from fastapi import Request
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from app.errors import Invalid
from app.inference.slots import Slot
from app.store.pagination import row_id_after
from app.training.jobs import TERMINAL

PING_SECONDS = 15  # a comment line this often keeps proxies from closing a quiet stream
EVENT_ID_SCHEMA = {"pattern": r"^([0-9]{1,18})?$"}  # what the document says of Last-Event-ID (empty: none)


def resume_after(last_event_id: str | None) -> int | None:
    """The id a reconnecting client's `Last-Event-ID` names (None without one); `Invalid` for an id
    no stream sent."""
    if not last_event_id:
        return None
    after_id = row_id_after(last_event_id)
    if after_id is None:
        raise Invalid("Last-Event-ID must be the id of an event this stream sent (1-18 digits)", field="Last-Event-ID")
    return after_id


class Polled(NamedTuple):
    events: list[dict[str, str]]  # each {"event": ..., "data": ..., optionally "id": ...}
    more: bool  # a full batch: poll again without sleeping
    done: bool  # the last events: close the stream after them


Poll = Callable[[], Polled]


def job_polled(job_id: str, status: str | None, events: list[dict[str, str]], full_batch: bool) -> Polled:
    """One poll of a stream that follows a job: a lone `end` (status `deleted`) once the job is gone;
    else `events`, then `end` once the job has finished and no full batch of rows is still waiting."""
    if status is None:
        return Polled([{"event": "end", "data": json.dumps({"id": job_id, "status": "deleted"})}], False, True)
    done = not full_batch and status in TERMINAL
    if done:
        events = [*events, {"event": "end", "data": json.dumps({"id": job_id, "status": status})}]
    return Polled(events, full_batch, done)


def polled_events(request: Request, poll: Poll, interval: float, slot: Slot | None = None) -> EventSourceResponse:
    """An event-stream response fed by calling `poll` until it is done or the client disconnects.

    A `slot` (the cap on open streams) is held until the stream ends; the background task releases it
    as well when the client left before the first event (release is idempotent).
    """

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                polled = await anyio.to_thread.run_sync(poll)
                for event in polled.events:
                    yield event
                if polled.done:
                    return
                if polled.more:
                    continue
                if await request.is_disconnected():
                    return
                await anyio.sleep(interval)
        finally:
            if slot is not None:
                slot.release()

    background = BackgroundTask(slot.release) if slot is not None else None
    return EventSourceResponse(stream(), ping=PING_SECONDS, background=background)
