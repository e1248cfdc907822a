"""Evaluation passes in the dashboard: while a job validates (after each epoch) or tests (after the
last), `progress.fraction` is the pass's, so the jobs list and the job page say "validating 40%" /
"testing 50%" and count the epoch as trained instead of sitting at a full bar.

The test holds the job the way a worker does (a claim, then the attempt's progress reports and log
lines through the core), so each phase stays put until the page has shown it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from app.store.db import make_engine
from app.store.storage import open_storage
from app.training import logs
from app.training.attempt import Attempt
from app.training.queue import claim_next
from web.live import LiveService, open_page, screenshot, serve

WORKER = "web-test-worker"


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """A live service without a worker: the test claims the job itself."""
    with serve(tmp_path_factory.mktemp("web-progress"), worker=False) as live:
        yield live


@pytest.fixture
def page(browser: Any, quiet: LiveService) -> Iterator[Any]:
    with open_page(browser, quiet.url) as page:
        yield page


def width(percent: float) -> re.Pattern[str]:
    """A progress bar's style at `percent` (the browser writes 50.0% as 50%)."""
    return re.compile(rf"width: {percent:g}%;")


def progress(phase: str, epoch: int, step: int, steps: int) -> dict[str, Any]:
    return {
        "phase": phase,
        "epoch": epoch,
        "epochs": 4,
        "step": step,
        "steps": steps,
        "global_step": epoch * 100,
        "fraction": step / steps,
        "lr": 0.5,
        "wps": 1234.0,
        "train_ppl_running": 150.0,
    }


def test_validate_and_test_passes_show_their_phase(quiet: LiveService, page: Any) -> None:
    dataset = quiet.upload("tiny")
    job = quiet.submit(dataset["id"], max_max_epoch=4)
    engine = make_engine(quiet.settings.resolved_database_url)
    try:
        claimed = claim_next(engine, WORKER, lease_seconds=600)
        assert claimed is not None and claimed.id == job["id"]
        attempt = Attempt(engine, job["id"], claimed.attempt, WORKER, 600, open_storage(quiet.settings))
        attempt.report(progress("train", 2, 50, 100), [], [logs.info("Epoch: 2 Learning rate: 0.500")])

        page.goto("/")
        cell = page.locator(f'tr[data-job-id="{job["id"]}"] .progress-cell')
        expect(cell.locator(".phase")).to_have_text("2/4")
        expect(cell.locator(".bar")).to_have_attribute("style", width(37.5))  # 1.5 of 4 epochs

        attempt.report(progress("validate", 2, 4, 10), [], [logs.info("validating epoch 2")])
        expect(cell.locator(".phase")).to_have_text("2/4 validating 40%")  # polled in, no reload
        expect(cell.locator(".bar")).to_have_attribute("style", width(50))  # epoch 2 counts as trained
        screenshot(page, "jobs-validating")

        page.goto(f"/jobs/{job['id']}")
        text = page.locator("#progress-text")
        expect(text).to_contain_text("epoch 2 of 4 · validating 40% · batch 4 of 10 · 1,234 words/s · ETA ")
        # The time left, from the API's `progress.eta_seconds` of this speed, in the facts too.
        eta = quiet.job(job["id"])["progress"]["eta_seconds"]
        assert eta is not None and eta > 0
        expect(page.locator("#facts dt", has_text="ETA").locator("xpath=following-sibling::dd[1]")).not_to_have_text(
            "not known yet"
        )
        attempt.report(progress("test", 4, 5, 10), [], [logs.info("testing")])
        expect(text).to_contain_text("epoch 4 of 4 · testing 50% · batch 5 of 10")  # from the event stream
        expect(page.locator("#bar")).to_have_attribute("style", width(100))
        # The attempt history comes from the log lines this attempt wrote.
        row = page.locator('#attempts tr[data-attempt="1"] td')
        expect(row.nth(1)).to_have_text(WORKER)
        expect(row.nth(3)).to_have_text("testing")
        screenshot(page, "job-testing")
    finally:
        engine.dispose()
