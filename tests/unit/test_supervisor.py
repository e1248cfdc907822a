"""app.supervisor on real short-lived processes: why a worker ended, the restart backoff that doubles
while it keeps dying quickly and starts over once it ran a while, and a stop that restarts nothing."""

from __future__ import annotations

import logging
import re
import sys
import time

import pytest

from app.supervisor import Supervisor, exit_reason


def test_exit_reasons() -> None:
    assert exit_reason(0) == "exited with code 0"
    assert exit_reason(3) == "exited with code 3"
    assert exit_reason(-9) == "killed by signal SIGKILL"
    assert exit_reason(-15) == "killed by signal SIGTERM"


def restart_waits(caplog: pytest.LogCaptureFixture, count: int, timeout: float = 20.0) -> list[float]:
    """The first `count` restart waits the supervisor logged."""
    deadline = time.monotonic() + timeout
    while True:
        waits = [float(w) for w in re.findall(r"restarting it in ([0-9.]+) s", caplog.text)]
        if len(waits) >= count or time.monotonic() > deadline:
            return waits[:count]
        time.sleep(0.05)


def test_a_worker_that_keeps_dying_at_once_waits_longer_each_time_up_to_the_maximum(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="supervisor")
    supervisor = Supervisor(1, 0.1, 0.4, command=[sys.executable, "-c", "raise SystemExit(3)"])
    supervisor.start()
    try:
        assert restart_waits(caplog, 5) == [0.1, 0.2, 0.4, 0.4, 0.4]
    finally:
        supervisor.stop(timeout=5)
    assert "worker 1 (pid " in caplog.text and ") exited with code 3 after " in caplog.text
    assert "worker 1 restarted (pid " in caplog.text


def test_a_worker_that_ran_a_while_restarts_after_the_first_wait(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="supervisor")
    # each process runs longer than the maximum wait, then is killed by a signal
    command = [sys.executable, "-c", "import os, signal, time; time.sleep(0.6); os.kill(os.getpid(), signal.SIGKILL)"]
    supervisor = Supervisor(1, 0.1, 0.4, command=command)
    supervisor.start()
    try:
        assert restart_waits(caplog, 3) == [0.1, 0.1, 0.1]
    finally:
        supervisor.stop(timeout=5)
    assert "killed by signal SIGKILL" in caplog.text


def test_stop_terminates_the_workers_and_restarts_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="supervisor")
    supervisor = Supervisor(2, 0.1, 0.4, command=[sys.executable, "-c", "import time; time.sleep(60)"])
    supervisor.start()
    procs = [slot.proc for slot in supervisor.slots]
    assert len(supervisor.pids()) == 2
    supervisor.stop(timeout=5)
    assert [p.returncode for p in procs if p is not None] == [-15, -15]  # SIGTERM, reaped
    time.sleep(0.5)
    assert "restarted" not in caplog.text and "restarting" not in caplog.text
