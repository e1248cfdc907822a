"""Concurrency limits: a fixed number of slots, and a bounded wait for one.

A request that finds every slot taken waits for one, at most `wait_seconds`, among at most
`max_waiting` others; past either bound it is refused (`Busy`, answered 503 with Retry-After), so
memory and latency stay bounded by the settings and a client knows to come back. With
`wait_seconds` 0 a full set of slots refuses at once.
"""

from __future__ import annotations

import threading
import time

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
    """At most `capacity` holders of `what` at once, and at most `max_waiting` waiting for a turn
    for at most `wait_seconds`. Thread-safe."""

    def __init__(self, capacity: int, what: str, wait_seconds: float = 0.0, max_waiting: int = 0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.what = what
        self.wait_seconds, self.max_waiting = wait_seconds, max_waiting
        self._taken = 0
        self._waiting = 0
        self._lock = threading.Condition()

    @property
    def taken(self) -> int:
        return self._taken

    @property
    def waiting(self) -> int:
        return self._waiting

    def acquire(self) -> Slot:
        """A slot, once one is free; `Busy` when none frees up in time or too many already wait."""
        with self._lock:
            if self._taken < self.capacity:
                self._taken += 1
                return Slot(self)
            if self.wait_seconds <= 0 or self._waiting >= self.max_waiting:
                raise Busy(self._busy(f"{self._waiting} more waiting" if self._waiting else "none free"))
            self._waiting += 1
            try:
                deadline = time.monotonic() + self.wait_seconds
                while self._taken >= self.capacity:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Busy(self._busy(f"none freed up in {self.wait_seconds:g} s"))
                    self._lock.wait(left)
                self._taken += 1
            finally:
                self._waiting -= 1
        return Slot(self)

    def _busy(self, why: str) -> str:
        return f"the server is busy: {self.capacity} {self.what} already running ({why}); retry shortly"

    def _give_back(self) -> None:
        with self._lock:
            self._taken -= 1
            self._lock.notify()
