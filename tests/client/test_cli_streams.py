"""Streams survive a server restart: `watch` and `logs -f` follow a job, and `scorings watch` a scoring,
through a second API process (on the shared database, the shared worker training the job) that is
killed and started again on the same port; they reconnect (the streams with Last-Event-ID), say so
once on stderr, and end with the result. A watch with a shorter `--give-up-after` than the outage
gives up with one line and exit code 4."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from typing import Any

import torch
from harness import wait_for
from service.test_serve import free_port

from .conftest import OVERRIDES, Server, clean_env, sets, start_server, stop_server

EPOCHS = 4


class Follower:
    """`lstm-lm --url URL ARGS` in a subprocess, its stdout read line by line as it comes."""

    def __init__(self, server: Server, url: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "client", "--url", url, *args],
            cwd=server.folder,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")))  # type: ignore[union-attr]
        self.reader.start()

    def finish(self, timeout: float) -> tuple[str, str]:
        """Wait for the end: (stdout, stderr)."""
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return "".join(self.lines), self.proc.stderr.read()  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


BF16_WAITS = not torch.cuda.is_available()  # on a GPU machine the worker has bf16: a bf16 scoring runs at once


def test_watch_logs_and_scorings_watch_survive_a_server_restart(server: Server, trained: dict[str, Any]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = start_server(server.folder, port, workers=0)  # the API only: the shared server's worker trains
    watch = logs = impatient = scored = None
    try:
        # a scoring that waits in the queue throughout (no worker here offers bf16), followed by polling
        if BF16_WAITS:
            scoring = server.json("scorings", "submit", "-m", trained["job"]["id"], "-d", "tiny", "--precision", "bf16")
            scored = Follower(server, url, "scorings", "watch", scoring["id"], "--give-up-after", "90")
            asked = f"GET /v1/scorings/{scoring['id']} "
            wait_for(lambda: any(asked in line for line in api.lines), timeout=60, what="the scoring watch's poll")
        overrides = {**OVERRIDES, "max_max_epoch": EPOCHS}
        job = server.json("submit", "-d", trained["dataset"]["id"], "-p", "test", *sets(overrides))
        watch = Follower(server, url, "watch", job["id"], "--give-up-after", "90")
        logs = Follower(server, url, "logs", job["id"], "-f", "--give-up-after", "90")
        impatient = Follower(server, url, "watch", job["id"], "--give-up-after", "1")
        # all are following: the first epoch row is out, the first log lines, the impatient one's first line
        wait_for(lambda: any("valid ppl" in line for line in watch.lines), timeout=120, what="the first epoch row")
        wait_for(lambda: logs.lines, timeout=60, what="the first log line")
        wait_for(lambda: impatient.lines, timeout=60, what="the impatient watch's first line")
        assert all(f.proc.poll() is None for f in (watch, logs, impatient, scored) if f is not None)
        running = server.ok("status", job["id"])  # while it runs: the time left, and the estimate
        assert re.search(r"^eta       ETA (\d+m )?\d+(\.\d)?s$", running, re.M) and "estimate  " in running, running
        api.proc.kill()  # no goodbye: the streams' connections are cut
        api.proc.wait()
        time.sleep(1.5)  # longer than the impatient watch waits
        api = start_server(server.folder, port, workers=0)
        watched_out, watched_err = watch.finish(timeout=180)
        logs_out, logs_err = logs.finish(timeout=60)
        _, gave_up = impatient.finish(timeout=30)
        if scored is not None:
            server.ok("scorings", "cancel", scoring["id"])
            scored_out, scored_err = scored.finish(timeout=60)
    finally:
        for follower in (watch, logs, impatient, scored):
            if follower is not None:
                follower.stop()
        stop_server(api)

    assert watch.proc.returncode == 0, watched_out + watched_err
    notes = watched_err.splitlines()
    assert len(notes) == 1 and notes[0].startswith(f"reconnecting to {url}…") and "giving up after 90 s" in notes[0]
    assert "Traceback" not in watched_err
    lines = watched_out.splitlines()
    header = next(i for i, line in enumerate(lines) if "valid ppl" in line)
    epochs = [line.split()[0] for line in lines[header + 1 : header + 1 + EPOCHS]]
    assert epochs == [str(e) for e in range(1, EPOCHS + 1)]  # every epoch once: resumed, not replayed
    assert any(re.search(r"ETA (\d+m )?\d+(\.\d)?s$", line) for line in lines[header + 1 : header + EPOCHS])
    assert lines[-1].startswith(f"job {job['id']} succeeded: test perplexity ")

    assert logs.proc.returncode == 0, logs_err
    assert logs_err.startswith(f"reconnecting to {url}…") and len(logs_err.splitlines()) == 1
    assert logs_out == server.ok("logs", job["id"])  # every line once, in order

    assert impatient.proc.returncode == 4, gave_up
    said = gave_up.splitlines()
    assert len(said) == 2 and said[0].startswith(f"reconnecting to {url}…") and "giving up after 1 s" in said[0]
    assert said[1].startswith("error: gave up after 1 s without the server: "), said

    if scored is None:
        return
    assert scored.proc.returncode == 3, scored_out + scored_err  # it ended, canceled
    assert scored_err.startswith(f"reconnecting to {url}…") and len(scored_err.splitlines()) == 1, scored_err
    assert scored_out.startswith(f"scoring {scoring['id']} canceled: ")
