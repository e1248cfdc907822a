"""Fixtures of the browser tests: the real app served by uvicorn on a free port, a real worker
process, and Debian's Chromium driven by Playwright (skipped, with the reason, where it is absent).

Everything waits on conditions with generous limits (the machine may be loaded), never on time.
Screenshots go to `test-output/web/` at the repository root (ignored by git).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from web.live import LiveService, open_page, serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """The app on uvicorn in a thread (a real socket, as a browser needs) and one worker process."""
    with serve(tmp_path_factory.mktemp("web"), worker=True) as service:
        yield service


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
    """A fresh browser page (its own cookies) on the live service; uncaught page errors fail the test."""
    with open_page(browser, live.url) as page:
        yield page
