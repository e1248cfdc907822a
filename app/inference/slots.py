"""Concurrency limits: a fixed number of slots, taken without waiting.

A request that finds every slot taken is refused at once (`Busy`, answered 503 with Retry-After)
instead of waiting in an unbounded queue: memory and latency stay bounded by the settings, and a
client knows to come back.
"""

from __future__ import annotations

import threading

from app.errors import Busy


class Slot:
    """One taken slot; `release()` may be called any number of times, it gives the slot back once."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self._released = threading.Event()

    def release(self) -> None:
        if not self._released.is_set():
            self._released.set()
            self._slots._give_back()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class Slots:
    """At most `capacity` holders of `what` at once. Thread-safe."""

    def __init__(self, capacity: int, what: str) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.what = what
        self._taken = 0
        self._lock = threading.Lock()

    @property
    def taken(self) -> int:
        return self._taken

    def acquire(self) -> Slot:
        """A slot, or `Busy` when all `capacity` are taken."""
        with self._lock:
            if self._taken >= self.capacity:
                raise Busy(f"the server is busy: {self.capacity} {self.what} already running; retry shortly")
            self._taken += 1
        return Slot(self)

    def _give_back(self) -> None:
        with self._lock:
            self._taken -= 1
