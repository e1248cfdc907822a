"""The live server the client tests share: `python -m app run` on a free port with one worker, in a
folder of its own (its ./data is the client's), and a job trained on it with the CLI."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import TINY, wait_for, write_corpus
from service.test_serve import free_port

EPOCHS = 2
OVERRIDES = {**TINY, "max_max_epoch": EPOCHS}
SERVER_ENV = {
    "LSTMLM_POLL_SECONDS": "0.2",
    "LSTMLM_HEARTBEAT_SECONDS": "0.5",
    "LSTMLM_TORCH_THREADS": "1",
    "LSTMLM_EVENTS_POLL_SECONDS": "0.1",
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # the server's worker has no bf16: a bf16 scoring waits, and says so
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTMLM_")}
    env.update(extra)
    return env


def sets(overrides: dict[str, Any] = OVERRIDES) -> list[str]:
    """`--set key=value` for each override."""
    return [f"--set={k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()]


@dataclass
class Server:
    url: str
    folder: Path  # the server's working folder (its ./data) and the client's

    @property
    def key(self) -> str:
        return (self.folder / "data" / "admin.key").read_text().strip()

    def http(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request straight to the API, with the admin key."""
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def cli(
        self, *args: str, stdin: str | None = None, timeout: float = 120, cwd: Path | None = None, url: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `lstm-lm --url URL ARGS` as a subprocess in the server's folder, stdout a pipe (with
        FORCE_COLOR set, as on many CI machines: a pipe still gets plain rows)."""
        env = clean_env(COLUMNS="200", FORCE_COLOR="1")
        return subprocess.run(
            [sys.executable, "-m", "client", *(["--url", self.url] if url else []), *args],
            cwd=cwd or self.folder,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.cli(*args, stdin=stdin)
        assert done.returncode == 0, f"{args}: rc {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def json(self, *args: str, stdin: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", stdin=stdin))

    def terminal(self, *args: str, columns: int = 80, timeout: float = 60) -> str:
        """Run `lstm-lm --url URL ARGS` in a pseudo-terminal `columns` wide; what it showed, colours removed."""
        import fcntl
        import pty
        import struct
        import termios

        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        env = clean_env(COLUMNS=str(columns), LINES="40", TERM="xterm-256color")
        proc = subprocess.Popen(
            [sys.executable, "-m", "client", "--url", self.url, *args],
            cwd=self.folder,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
        )
        os.close(slave)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.5)
                if not ready:
                    if proc.poll() is not None:
                        break
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            assert proc.wait(timeout=10) == 0, b"".join(chunks).decode(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
        return ANSI.sub("", b"".join(chunks).decode(errors="replace")).replace("\r\n", "\n")


@dataclass
class Running:
    """A `python -m app run` process and the lines it has printed (uvicorn's access log among them)."""

    proc: subprocess.Popen[str]
    lines: list[str]


def start_server(folder: Path, port: int, workers: int) -> Running:
    """`python -m app run` in `folder` on `port`, ready to answer."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--port", str(port), "--workers", str(workers)],
        cwd=folder,
        env=clean_env(**SERVER_ENV),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError("the server exited:\n" + "".join(lines))
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, timeout=90, interval=0.2, what="the server to be ready")
    return Running(proc, lines)


def stop_server(running: Running) -> None:
    proc = running.proc
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("cli")
    port = free_port()
    running = start_server(folder, port, workers=1)
    try:
        yield Server(f"http://127.0.0.1:{port}", folder)
    finally:
        stop_server(running)


@pytest.fixture(scope="package")
def trained(server: Server) -> dict[str, Any]:
    """A corpus uploaded, a job submitted and watched to its end, all with the CLI."""
    corpus = write_corpus(server.folder / "corpus")
    upload = server.cli("upload", str(corpus), "--name", "tiny")
    assert upload.returncode == 0, upload.stderr
    assert upload.stdout.startswith("dataset ds_") and "(tiny)" in upload.stdout
    # the server's one-command start saved its admin key in ./data/admin.key, which the client found
    dataset = server.http("GET", "/v1/datasets").json()["items"][0]
    job = server.json("submit", "--dataset", dataset["id"], "--preset", "test", *sets(), "--idempotency-key", "k1")
    again = server.json("submit", "--dataset", dataset["id"], "--preset", "test", *sets(), "--idempotency-key", "k1")
    assert again["id"] == job["id"] and job["config"]["hidden_size"] == 16 and job["config"]["device"] == "cpu"
    watched = server.cli("watch", job["id"])
    finished = server.http("GET", f"/v1/jobs/{job['id']}").json()
    return {"dataset": dataset, "job": job, "watch": watched, "watch_job": finished}
