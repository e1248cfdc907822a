"""The dashboard in a real browser (Debian's Chromium through Playwright) against the live app and a
real worker: the job list, submitting from the form, live curves and logs, cancel, the playground.

Every check of the page waits for its condition (Playwright's `expect`, `wait_until`) rather
than reading the page once: what a page shows comes from requests and streams that a loaded machine
may answer late."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from web.live import LiveService, allow_console_errors, screenshot, wait_until

LONG = {"max_max_epoch": 500}  # a job that trains until it is canceled


@pytest.fixture(scope="module")
def dataset(live: LiveService) -> dict[str, Any]:
    return live.upload("tiny")


def test_job_list_loads_and_shows_new_jobs_without_a_reload(live: LiveService, page: Any, dataset: dict) -> None:
    first = live.submit(dataset["id"], max_max_epoch=1)
    page.goto("/")
    row = page.locator(f'tr[data-job-id="{first["id"]}"]')
    expect(row.locator("td").nth(2)).to_have_text("test")
    expect(row.locator("td").nth(3)).to_have_text("tiny")  # the dataset's name (looked up), not its id
    page.evaluate("window.stillHere = true")

    second = live.submit(dataset["id"], max_max_epoch=1)
    page.locator(f'tr[data-job-id="{second["id"]}"]').wait_for()  # polled in, no reload
    live.wait_status(first["id"], "succeeded")
    page.locator(f'tr[data-job-id="{first["id"]}"][data-status="succeeded"]').wait_for()
    assert page.evaluate("window.stillHere") is True

    page.get_by_label("canceled").check()  # the filter: neither job was canceled
    wait_until(page, "document.querySelectorAll('#jobs tbody tr').length === 0")
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
    expect(page.locator("#upload-status")).to_have_text(re.compile(r"^uploaded uploaded-in-browser"))
    assert page.locator("#upload-bar").evaluate("bar => bar.style.width") == "100%"
    expect(page.locator("#dataset_id option:checked")).to_contain_text("uploaded-in-browser")

    page.select_option("#preset", "test")
    expect(page.locator("#ov-hidden_size")).to_have_attribute("placeholder", "2")  # the test preset's value
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
    wait_until(page, "Number(document.getElementById('ppl-chart').dataset.points) > 0")
    before = int(chart.get_attribute("data-points"))
    wait_until(page, f"Number(document.getElementById('ppl-chart').dataset.points) > {before + 10}")
    assert page.locator("#ppl-chart canvas").count() == 1
    wait_until(page, "document.querySelectorAll('#checkpoints tbody a').length > 0")

    # The logs section shows the job's log lines as GET /v1/jobs/{id}/logs gives them, and new
    # ones arrive over its `log` event stream while the job runs.
    logs = page.locator("#logs")
    wait_until(page, "Number(document.getElementById('logs').dataset.lines) > 0")
    lines = int(logs.get_attribute("data-lines"))
    wait_until(page, f"Number(document.getElementById('logs').dataset.lines) > {lines + 3}")
    first = live.http.get(f"/v1/jobs/{job_id}/logs", params={"limit": 1}).json()["items"][0]
    shown = logs.locator(".log").first
    assert shown.get_attribute("data-line-id") == str(first["id"])
    assert shown.inner_text().endswith(f"{first['level']:<7} #{first['attempt']} {first['message']}")
    assert first["time"][11:19] in shown.inner_text()
    # The attempt history is read from the log: attempt 1, on the job's worker.
    attempt = page.locator('#attempts tr[data-attempt="1"] td')
    expect(attempt.nth(1)).to_have_text(live.job(job_id)["worker_id"])
    expect(attempt.nth(2)).to_have_text(first["time"][11:19])
    assert page.evaluate("window.stillHere") is True  # points and lines came over the streams
    screenshot(page, "job-running")

    messages: list[str] = []

    def accept(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#cancel")
    page.locator("#status.canceled").wait_for()
    assert messages and job_id in messages[0]
    assert live.job(job_id)["status"] == "canceled"
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#delete")).to_be_visible()
    # The log stream ends with the job; its last lines (the cancel) are on the page.
    last = live.http.get(f"/v1/jobs/{job_id}/logs", params={"limit": 1000}).json()["items"][-1]
    expect(logs.locator(".log").last).to_have_attribute("data-line-id", str(last["id"]))
    screenshot(page, "job-canceled")


def test_submit_shows_the_apis_error_next_to_the_field(live: LiveService, page: Any, dataset: dict) -> None:
    allow_console_errors(page, r"status of 422 .* at .*/v1/jobs(/estimate)?$")  # the refusals shown
    page.goto("/submit")
    page.locator(f'#dataset_id option[value="{dataset["id"]}"]').wait_for(state="attached")
    page.select_option("#dataset_id", dataset["id"])
    page.locator("#ov-hidden_size").wait_for()
    page.fill("#ov-hidden_size", "-5")
    page.click("#submit-job")
    error = page.locator('.field[data-field="overrides.hidden_size"] .error')
    expect(error).to_contain_text("hidden_size must be an integer in [1,")
    assert "/submit" in page.url  # nothing was queued


def test_playground_scores_with_unk_marked_and_streams_generation(live: LiveService, page: Any, dataset: dict) -> None:
    job = live.submit(dataset["id"], max_max_epoch=1)
    live.wait_status(job["id"], "succeeded")

    page.goto(f"/playground?model={job['id']}")
    wait_until(page, f"document.getElementById('model').value === '{job['id']}'")
    page.fill("#sentences", "the cat sat on the zebra\nthe dog ran")
    page.click("#score")
    page.locator(".scored").nth(1).wait_for()
    first = page.locator(".scored").nth(0)
    expect(first.locator(".tok")).to_have_text(["the", "cat", "sat", "on", "the", "zebra", "<eos>"])
    unk = first.locator(".tok.unk")
    assert unk.count() == 1 and unk.inner_text() == "zebra"
    assert page.locator(".scored").nth(1).locator(".tok.unk").count() == 0
    assert re.search(r"[\d.]+", first.locator(".ppl strong").inner_text())

    page.fill("#max_tokens", "25")
    page.fill("#seed", "7")
    page.fill("#n", "2")
    page.click("#generate")
    outputs = page.locator("pre.generated")
    expect(outputs).to_have_count(2)
    wait_until(page, "[...document.querySelectorAll('pre.generated')].every(p => p.querySelector('.finish'))")
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
    expect(page.locator("#test-ppl .big")).to_have_text(re.compile(r"^[\d,.]+$"))
    expect(page.locator("#bar")).to_have_attribute("style", re.compile(r"width: 100(\.0)?%"))
    wait_until(page, "Number(document.getElementById('ppl-chart').dataset.points) > 0")
    screenshot(page, "job-finished")

    other = live.submit(dataset["id"], max_max_epoch=2)
    live.wait_status(other["id"], "succeeded")
    page.goto(f"/compare?job={job['id']}&job={other['id']}")
    wait_until(page, "document.querySelectorAll('#summary tbody tr').length === 2")
    wait_until(page, "Number(document.getElementById('compare-chart').dataset.points) === 3")
    screenshot(page, "compare")


def test_scorings_page_scores_an_uploaded_text_and_a_split_then_deletes(
    live: LiveService, page: Any, dataset: dict, tmp_path: Path
) -> None:
    job = live.submit(dataset["id"], max_max_epoch=1)
    live.wait_status(job["id"], "succeeded")
    lines = 5000
    text = tmp_path / "lines.txt"
    text.write_text("the cat sat on the mat\n" * lines, encoding="utf-8")

    page.goto(f"/jobs/{job['id']}")
    page.get_by_role("link", name="Score a text").click()
    page.wait_for_url(re.compile(r"/scorings\?model=job_"))
    wait_until(page, f"document.getElementById('model').value === '{job['id']}'")
    page.evaluate("window.stillHere = true")
    page.set_input_files("#file", str(text))
    page.select_option("#precision", "fp32")
    page.fill("#scoring-name", "the cat, 5000 times")
    page.fill("#scoring-tags", "cats repeat")
    page.click("#submit-scoring")
    expect(page.locator("#scoring-status")).to_have_text(re.compile(rf"^queued scr_\w+: {lines:,} lines$"))
    assert page.locator("#scoring-bar").evaluate("bar => bar.style.width") == "100%"
    uploaded = page.locator("#scoring-status").inner_text().split()[1].rstrip(":")

    # A dataset's split, from the same form.
    page.check("input[name=source][value=dataset]")
    expect(page.locator("#file-field")).to_be_hidden()
    page.select_option("#dataset_id", dataset["id"])
    page.select_option("#split", "valid")
    page.uncheck("input[name=score_eos]")
    page.click("#submit-scoring")
    expect(page.locator("#scoring-status")).to_have_text(re.compile(r"^queued scr_\w+: \d+ lines$"))
    split = page.locator("#scoring-status").inner_text().split()[1].rstrip(":")

    # Both finish on the page (polled, no reload), with the API's numbers.
    for scoring_id in (uploaded, split):
        row = page.locator(f'tr[data-scoring-id="{scoring_id}"][data-status="succeeded"]')
        row.wait_for()
        body = live.http.get(f"/v1/scorings/{scoring_id}").json()
        cells = row.locator("td")
        expect(cells.nth(5)).to_contain_text(f"{body['total_lines']:,}/{body['total_lines']:,} lines")
        ppl = body["aggregate"]["corpus_perplexity"]
        expect(cells.nth(6)).to_have_text(f"{ppl:,.2f}".rstrip("0").rstrip("."))
        expect(row.get_by_role("link", name="Results")).to_have_attribute("href", f"/v1/scorings/{scoring_id}/results")
    named = page.locator(f'tr[data-scoring-id="{uploaded}"] td.scoring')
    expect(named.locator(".scoring-name")).to_have_text("the cat, 5000 times")
    expect(named.locator(".tag")).to_have_text(["#cats", "#repeat"])
    assert live.http.get(f"/v1/scorings/{uploaded}").json()["tags"] == ["cats", "repeat"]
    split_row = page.locator(f'tr[data-scoring-id="{split}"] td')
    expect(split_row.nth(3)).to_have_text("tiny · valid")
    assert live.http.get(f"/v1/scorings/{split}").json()["options"]["score_eos"] is False
    assert page.evaluate("window.stillHere") is True
    screenshot(page, "scorings")

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f'tr[data-scoring-id="{uploaded}"] button.delete').click()
    expect(page.locator(f'tr[data-scoring-id="{uploaded}"]')).to_have_count(0)
    assert live.http.get(f"/v1/scorings/{uploaded}").status_code == 404


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def test_every_page_works_under_the_content_security_policy(live: LiveService, page: Any, dataset: dict) -> None:
    # `page` fails the test on any violation the browser reports (see web.live.open_page).
    jobs = [live.submit(dataset["id"], max_max_epoch=2)["id"] for _ in range(2)]
    for job_id in jobs:
        live.wait_status(job_id, "succeeded")
    ready = {
        "/": f'tr[data-job-id="{jobs[0]}"][data-status="succeeded"]',
        f"/jobs/{jobs[0]}": "#ppl-chart .uplot canvas",
        f"/compare?job={jobs[0]}&job={jobs[1]}": "#compare-chart .uplot canvas",
        "/submit": f'#dataset_id option[value="{dataset["id"]}"]',
        "/scorings": "#scoring-form",
        "/playground": "#model option",
        "/login": "#login-form",
    }
    for path, selector in ready.items():
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        headers = response.headers
        policy = headers["content-security-policy"]
        for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"):
            assert directive in policy, (path, policy)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert {name: headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS, path
        page.locator(selector).first.wait_for(state="attached")  # its script ran and fetched its data
    # the job page's curves are drawn by the vendored uPlot, styled by the page's own stylesheets
    page.goto(f"/jobs/{jobs[0]}")
    expect(page.locator("#status")).to_have_text("succeeded")
    expect(page.locator("#lr-chart .uplot canvas")).to_have_count(1)
    assert page.evaluate("getComputedStyle(document.querySelector('.uplot')).boxSizing") == "border-box"
    screenshot(page, "job-under-csp")
