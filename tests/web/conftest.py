"""Fixtures of the browser tests: the real app served by uvicorn on a free port, a real worker
process, and Debian's Chromium driven by Playwright (skipped, with the reason, where it is absent).

Screenshots go to `test-output/web/` at the repository root (ignored by git).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.main import create_app
from app.settings import Settings
from app.store import migrate
from tests.harness import REPO, TINY, WorkerProcess, make_settings, wait_for, write_corpus

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = REPO / "test-output" / "web"


@dataclass
class LiveService:
    """A served app: its URL, an HTTP client on it, its settings, corpus folder and worker."""

    url: str
    http: httpx.Client
    settings: Settings
    corpus: Path
    worker: WorkerProcess

    def upload(self, name: str) -> dict[str, Any]:
        files = {
            split: (f"{split}.txt", (self.corpus / f"{split}.txt").read_bytes()) for split in ("train", "valid", "test")
        }
        response = self.http.post("/v1/datasets", files=files, data={"name": name})
        assert response.status_code == 201, response.text
        return response.json()

    def submit(self, dataset_id: str, **overrides: Any) -> dict[str, Any]:
        body = {"dataset_id": dataset_id, "preset": "test", "overrides": {**TINY, **overrides}}
        response = self.http.post("/v1/jobs", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 120.0) -> dict[str, Any]:
        try:
            return wait_for(
                lambda: (job := self.job(job_id))["status"] in statuses and job,
                timeout,
                interval=0.2,
                what=f"job {job_id} to be {' or '.join(statuses)}",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.job(job_id)}\n--- worker log\n{self.worker.log()}") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """The app on uvicorn in a thread (a real socket, as a browser needs) and one worker process."""
    tmp = tmp_path_factory.mktemp("web")
    settings = make_settings(tmp)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, what="uvicorn to start")
    worker = WorkerProcess(settings, [], tmp / "worker.log")
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=30)
    try:
        yield LiveService(url, http, settings, write_corpus(tmp / "corpus"), worker)
    finally:
        http.close()
        worker.stop()
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless; never a downloaded browser."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, live: LiveService) -> Iterator[Any]:
    """A fresh browser page on the live service; uncaught page errors fail the test."""
    context = browser.new_context(base_url=live.url, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"errors in the page: {errors}"


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-output/web/ and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
