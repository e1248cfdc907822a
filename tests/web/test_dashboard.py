"""The dashboard in a real browser (Debian's Chromium through Playwright) against the live app and a
real worker: the job list, submitting from the form, live curves, cancel, the playground."""

from __future__ import annotations

import re
from typing import Any

import pytest

from web.live import LiveService, screenshot

LONG = {"max_max_epoch": 500}  # a job that trains until it is canceled


@pytest.fixture(scope="module")
def dataset(live: LiveService) -> dict[str, Any]:
    return live.upload("tiny")


def test_job_list_loads_and_shows_new_jobs_without_a_reload(live: LiveService, page: Any, dataset: dict) -> None:
    first = live.submit(dataset["id"], max_max_epoch=1)
    page.goto("/")
    row = page.locator(f'tr[data-job-id="{first["id"]}"]')
    row.wait_for()
    assert row.locator("td").nth(2).inner_text() == "test"
    assert row.locator("td").nth(3).inner_text() == "tiny"  # the dataset's name, not its id
    page.evaluate("window.stillHere = true")

    second = live.submit(dataset["id"], max_max_epoch=1)
    page.locator(f'tr[data-job-id="{second["id"]}"]').wait_for()  # polled in, no reload
    live.wait_status(first["id"], "succeeded")
    page.locator(f'tr[data-job-id="{first["id"]}"][data-status="succeeded"]').wait_for()
    assert page.evaluate("window.stillHere") is True

    page.get_by_label("canceled").check()  # the filter: neither job was canceled
    page.wait_for_function("document.querySelectorAll('#jobs tbody tr').length === 0")
    assert "status=canceled" in page.url
    page.get_by_label("canceled").uncheck()
    page.locator(f'tr[data-job-id="{second["id"]}"]').wait_for()
    live.wait_status(second["id"], "succeeded")
    screenshot(page, "jobs")


def test_submit_from_the_form_then_watch_the_curve_grow_and_cancel(live: LiveService, page: Any) -> None:
    page.goto("/submit")
    # The corpus upload form, with its progress bar.
    for split in ("train", "valid", "test"):
        page.set_input_files(f"#up-{split}", str(live.corpus / f"{split}.txt"))
    page.fill("#up-name", "uploaded-in-browser")
    page.click("#upload")
    page.wait_for_function("document.getElementById('upload-status').textContent.startsWith('uploaded')")
    assert page.locator("#upload-bar").evaluate("bar => bar.style.width") == "100%"
    assert "uploaded-in-browser" in page.locator("#dataset_id option:checked").inner_text()

    page.select_option("#preset", "test")
    assert page.get_attribute("#ov-hidden_size", "placeholder") == "2"  # the test preset's value
    for name, value in {"hidden_size": 16, "num_steps": 5, "batch_size": 4, "max_max_epoch": 500}.items():
        page.fill(f"#ov-{name}", str(value))
    page.select_option("#ov-device", "cpu")
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"/jobs/job_"))
    job_id = page.url.rsplit("/", 1)[1]
    job = live.job(job_id)
    assert job["config"]["hidden_size"] == 16 and job["config"]["max_max_epoch"] == 500

    page.evaluate("window.stillHere = true")
    page.locator("#status.running").wait_for()
    chart = page.locator("#ppl-chart")
    page.wait_for_function("Number(document.getElementById('ppl-chart').dataset.points) > 0")
    before = int(chart.get_attribute("data-points"))
    page.wait_for_function(
        f"Number(document.getElementById('ppl-chart').dataset.points) > {before + 10}", timeout=60_000
    )
    assert page.locator("#ppl-chart canvas").count() == 1
    assert page.evaluate("window.stillHere") is True  # the points came over the event stream
    page.wait_for_function("document.querySelectorAll('#checkpoints tbody a').length > 0", timeout=60_000)
    screenshot(page, "job-running")

    messages: list[str] = []

    def accept(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#cancel")
    page.locator("#status.canceled").wait_for(timeout=60_000)
    assert messages and job_id in messages[0]
    assert live.job(job_id)["status"] == "canceled"
    assert page.locator("#cancel").is_hidden()
    assert page.locator("#delete").is_visible()
    screenshot(page, "job-canceled")


def test_submit_shows_the_apis_error_next_to_the_field(live: LiveService, page: Any, dataset: dict) -> None:
    page.goto("/submit")
    page.locator(f'#dataset_id option[value="{dataset["id"]}"]').wait_for(state="attached")
    page.select_option("#dataset_id", dataset["id"])
    page.locator("#ov-hidden_size").wait_for()
    page.fill("#ov-hidden_size", "-5")
    page.click("#submit-job")
    error = page.locator('.field[data-field="overrides.hidden_size"] .error')
    error.wait_for()
    page.wait_for_function(
        "document.querySelector('.field[data-field=\"overrides.hidden_size\"] .error').textContent !== ''"
    )
    assert "hidden_size must be an integer >= 1" in error.inner_text()
    assert "/submit" in page.url  # nothing was queued


def test_playground_scores_with_unk_marked_and_streams_generation(live: LiveService, page: Any, dataset: dict) -> None:
    job = live.submit(dataset["id"], max_max_epoch=1)
    live.wait_status(job["id"], "succeeded")

    page.goto(f"/playground?model={job['id']}")
    page.wait_for_function(f"document.getElementById('model').value === '{job['id']}'")
    page.fill("#sentences", "the cat sat on the zebra\nthe dog ran")
    page.click("#score")
    page.locator(".scored").nth(1).wait_for()
    first = page.locator(".scored").nth(0)
    assert first.locator(".tok").all_inner_texts() == ["the", "cat", "sat", "on", "the", "zebra", "<eos>"]
    unk = first.locator(".tok.unk")
    assert unk.count() == 1 and unk.inner_text() == "zebra"
    assert page.locator(".scored").nth(1).locator(".tok.unk").count() == 0
    assert re.search(r"[\d.]+", first.locator(".ppl strong").inner_text())

    page.fill("#max_tokens", "25")
    page.fill("#seed", "7")
    page.fill("#n", "2")
    page.click("#generate")
    page.wait_for_function(
        "[...document.querySelectorAll('pre.generated')].every(p => p.querySelector('.finish'))", timeout=60_000
    )
    outputs = page.locator("pre.generated")
    assert outputs.count() == 2
    for i in range(2):
        text = outputs.nth(i).inner_text()
        assert text.startswith("the company said ") and len(text.split()) > 3
        # One event per word: the text arrived piece by piece, not in one answer.
        assert int(outputs.nth(i).get_attribute("data-chunks")) > 2
    screenshot(page, "playground")

    page.goto(f"/jobs/{job['id']}")
    page.locator("#status.succeeded").wait_for()
    best = page.locator("#checkpoints tr.best a")
    best.wait_for()
    assert best.get_attribute("href").startswith(f"/v1/jobs/{job['id']}/checkpoints/")
    assert page.locator("#test-ppl .big").inner_text() != ""
    page.wait_for_function("Number(document.getElementById('ppl-chart').dataset.points) > 0")
    screenshot(page, "job-finished")

    other = live.submit(dataset["id"], max_max_epoch=2)
    live.wait_status(other["id"], "succeeded")
    page.goto(f"/compare?job={job['id']}&job={other['id']}")
    page.wait_for_function("document.querySelectorAll('#summary tbody tr').length === 2")
    page.wait_for_function("Number(document.getElementById('compare-chart').dataset.points) === 3")
    screenshot(page, "compare")
