"""A live service for the browser tests (served on a real port, with a real worker), browser pages on
it and their screenshots."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from harness import REPO, TINY, WorkerProcess, make_settings, wait_for, write_corpus

from app.main import create_app
from app.settings import Settings
from app.store import migrate

SCREENSHOTS = REPO / "test-output" / "web"
WAIT_MS = 90_000  # the longest a page waits for a condition: generous, for a loaded machine


@dataclass
class LiveService:
    """A served app: its URL, an HTTP client on it, its settings, corpus folder and worker (if any)."""

    url: str
    http: httpx.Client
    settings: Settings
    corpus: Path
    worker: WorkerProcess | None

    def upload(self, name: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        files = {
            split: (f"{split}.txt", (self.corpus / f"{split}.txt").read_bytes()) for split in ("train", "valid", "test")
        }
        response = self.http.post("/v1/datasets", files=files, data={"name": name}, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()

    def submit(self, dataset_id: str, headers: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
        body = {"dataset_id": dataset_id, "preset": "test", "overrides": {**TINY, **overrides}}
        response = self.http.post("/v1/jobs", json=body, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 300.0) -> dict[str, Any]:
        try:
            return wait_for(
                lambda: (job := self.job(job_id))["status"] in statuses and job,
                timeout,
                interval=0.2,
                what=f"job {job_id} to be {' or '.join(statuses)}",
            )
        except AssertionError as exc:
            log = self.worker.log() if self.worker else "(no worker)"
            raise AssertionError(f"{exc}\n{self.job(job_id)}\n--- worker log\n{log}") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve(tmp: Path, worker: bool, **settings_overrides: Any) -> Iterator[LiveService]:
    """The app on uvicorn in a thread (a real socket, as a browser needs) and, if asked, one worker process."""
    settings = make_settings(tmp, **settings_overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started, 60, what="uvicorn to start")
    process = WorkerProcess(settings, [], tmp / "worker.log") if worker else None
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=60)
    try:
        yield LiveService(url, http, settings, write_corpus(tmp / "corpus"), process)
    finally:
        http.close()
        if process is not None:
            process.stop()
        server.should_exit = True
        thread.join(timeout=15)


# Console errors a test expects, by page: `allow_console_errors` adds to them.
EXPECTED_CONSOLE: dict[int, list[re.Pattern[str]]] = {}


@contextmanager
def open_page(browser: Any, url: str, allowed: Sequence[str] = ()) -> Iterator[Any]:
    """A page in a fresh browser context (its own cookies) on `url`; uncaught page errors, anything
    the content security policy refused and any other console error (a failed request, a missing
    file: the line and its address) fail the test, unless it matches one of `allowed` or a pattern
    the test gave `allow_console_errors`."""
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    context = browser.new_context(base_url=url, viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    # Every violation, also of what reports no console line of its own (an inline style, an eval).
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    violations: list[str] = []
    console: list[str] = []
    EXPECTED_CONSOLE[id(page)] = [re.compile(p) for p in allowed]

    def on_console(message: Any) -> None:
        if is_csp_violation(message.text):
            violations.append(message.text)
        elif message.type == "error":
            console.append(f"{message.text} at {message.location.get('url', '')}")

    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", on_console)
    try:
        yield page
    finally:
        context.close()
        expected = EXPECTED_CONSOLE.pop(id(page))
    assert errors == [], f"errors in the page: {errors}"
    assert violations == [], f"content security policy violations: {violations}"
    unexpected = [line for line in console if not any(p.search(line) for p in expected)]
    assert unexpected == [], f"errors on the console: {unexpected}"


def allow_console_errors(page: Any, *patterns: str) -> None:
    """Console errors this test expects of `page` (regular expressions): a refusal it provokes on purpose."""
    EXPECTED_CONSOLE[id(page)].extend(re.compile(p) for p in patterns)


CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  const what = event.blockedURI || "inline";
  console.error(`CSP violation: ${event.violatedDirective} blocked ${what} in ${event.sourceFile}`);
});
"""


def is_csp_violation(text: str) -> bool:
    """A console line of a refused load or script: Chromium's own, or the listener's above."""
    return text.startswith("CSP violation:") or "Content Security Policy" in text


def wait_until(page: Any, expression: str, timeout_ms: float = WAIT_MS) -> None:
    """Poll a JavaScript expression in the page until it is truthy.

    Playwright's `wait_for_function` runs its predicate through `eval`, which the dashboard's content
    security policy refuses (no 'unsafe-eval'); `page.evaluate` goes through the DevTools protocol.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_ms / 1000:g} s waiting for {expression}")
        page.wait_for_timeout(50)


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-output/web/ and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
