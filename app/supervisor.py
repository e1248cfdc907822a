"""The workers of `python -m app run`: started, watched and restarted until the service stops.

A thread polls each worker process. One that exited or was killed is reaped at once (no zombie
stays) and logged with why (its exit code or signal), then started again after a wait: the first
wait is `worker_restart_seconds`; it doubles each time the worker dies again within
`worker_restart_max_seconds` of its start, up to that, and falls back to the first wait once a
worker has run that long. `stop()` (the service is shutting down) ends the watching first, so that
no worker is restarted, then SIGTERMs every worker (it checkpoints and hands its job back) and
waits for it, killing one that does not stop in time.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("supervisor")

POLL_SECONDS = 0.2  # how soon a dead worker is noticed (and reaped)
STOP_SECONDS = 60.0  # how long a stopping worker may take to checkpoint before it is killed


def worker_command() -> list[str]:
    """`python -m worker` that stops by itself (handing its job back) if this process dies without
    stopping it (`--parent-pid`)."""
    return [sys.executable, "-m", "worker", "--parent-pid", str(os.getpid())]


def exit_reason(returncode: int) -> str:
    """What `Popen.returncode` says: `exited with code 1`, `killed by signal SIGKILL`."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = str(-returncode)
    return f"killed by signal {name}"


@dataclass
class Slot:
    """One worker place: its process (None while it waits to be restarted) and its backoff."""

    number: int
    delay: float  # the wait before the next restart
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # time.monotonic() of the current process' start
    restart_at: float = 0.0
    restarts: int = 0


class Supervisor:
    """Keeps `count` worker processes running until `stop()`."""

    def __init__(
        self,
        count: int,
        restart_seconds: float = 1.0,
        restart_max_seconds: float = 60.0,
        command: list[str] | None = None,
    ) -> None:
        self.first_delay = restart_seconds
        self.max_delay = max(restart_max_seconds, restart_seconds)
        self.command = command or worker_command()
        self.slots = [Slot(number=i + 1, delay=self.first_delay) for i in range(count)]
        self.stopping = threading.Event()  # set from a signal handler too: no restart after it
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start every worker and the thread that watches them."""
        for slot in self.slots:
            self._spawn(slot)
        if self.slots:
            self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
            self._thread.start()

    def pids(self) -> list[int]:
        """The pids of the workers running now."""
        return [slot.proc.pid for slot in self.slots if slot.proc is not None]

    def _spawn(self, slot: Slot) -> subprocess.Popen[bytes]:
        slot.proc = proc = subprocess.Popen(self.command, env=os.environ.copy())
        slot.started = time.monotonic()
        return proc

    def _watch(self) -> None:
        while not self.stopping.wait(POLL_SECONDS):
            for slot in self.slots:
                if self.stopping.is_set():
                    return
                try:
                    self._check(slot)
                except OSError:  # e.g. no process could be started: try again after the next wait
                    log.exception("worker %d could not be started; trying again in %g s", slot.number, slot.delay)
                    slot.proc = None
                    slot.restart_at = time.monotonic() + slot.delay
                    slot.delay = min(slot.delay * 2, self.max_delay)

    def _check(self, slot: Slot) -> None:
        now = time.monotonic()
        if slot.proc is None:
            if now >= slot.restart_at:
                pid = self._spawn(slot).pid
                slot.restarts += 1
                log.info("worker %d restarted (pid %d, restart %d)", slot.number, pid, slot.restarts)
            return
        returncode = slot.proc.poll()  # reaps an exited worker: no zombie is left
        if returncode is None:
            return
        ran = now - slot.started
        if ran >= self.max_delay:  # it ran a while: whatever killed it was not at start-up
            slot.delay = self.first_delay
        log.warning(
            "worker %d (pid %d) %s after %.1f s; restarting it in %g s",
            slot.number,
            slot.proc.pid,
            exit_reason(returncode),
            ran,
            slot.delay,
        )
        slot.proc = None
        slot.restart_at = now + slot.delay
        slot.delay = min(slot.delay * 2, self.max_delay)

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Restart nothing more; SIGTERM every worker, wait for them, kill any that do not stop in time."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join()
        procs = [slot.proc for slot in self.slots if slot.proc is not None]
        stop_workers(procs, timeout)


def stop_workers(workers: list[subprocess.Popen[bytes]], timeout: float = STOP_SECONDS) -> None:
    """SIGTERM every worker, wait for them, kill any that do not stop in time."""
    for proc in workers:
        if proc.poll() is None:
            proc.terminate()
    for proc in workers:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
