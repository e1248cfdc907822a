"""The dashboard for daily use, in a real browser against the live app and a real worker: names, tags
and notes from the submit form and the job page, the estimate before submitting and every field error
at once, the job list's search, tag filter, sort and config columns (kept in the address and the
browser), compare on any metric with smoothing, the config differences and a CSV download, the
not-found page and the icon.

Three short jobs (the `test` preset, a few capped steps an epoch) are trained once for the module.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from web.live import LiveService, allow_console_errors, open_page, screenshot, serve, wait_until

STEPS = 12  # max_steps_per_epoch of the module's jobs: a few seconds each
LIMIT_SECONDS = 60  # LSTMLM_MAX_JOB_SECONDS here: a job estimated past it is warned of


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with serve(tmp_path_factory.mktemp("web-views"), worker=True, max_job_seconds=LIMIT_SECONDS) as live:
        yield live


@pytest.fixture
def page(browser: Any, views: LiveService) -> Iterator[Any]:
    with open_page(browser, views.url) as page:
        yield page


def submit(live: LiveService, dataset_id: str, name: str, tags: list[str], **overrides: Any) -> dict[str, Any]:
    """A job of the test preset with a name and tags, `STEPS` steps an epoch."""
    overrides.setdefault("max_steps_per_epoch", STEPS)
    body = {
        "dataset_id": dataset_id,
        "preset": "test",
        "name": name,
        "tags": tags,
        "overrides": {"hidden_size": 16, "num_steps": 5, "batch_size": 4, "device": "cpu", **overrides},
    }
    response = live.http.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def trained(views: LiveService) -> dict[str, Any]:
    """A dataset and three finished jobs whose configs differ in hidden_size and keep_prob."""
    dataset = views.upload("tiny")
    made = [
        submit(views, dataset["id"], "narrow baseline", ["baseline", "narrow"], max_max_epoch=2),
        submit(views, dataset["id"], "wide", ["wide"], hidden_size=24, max_max_epoch=2),
        submit(
            views,
            dataset["id"],
            "wide, dropout",
            ["wide", "dropout"],
            hidden_size=24,
            keep_prob=0.5,
            max_max_epoch=3,
        ),
    ]
    jobs = [views.wait_status(job["id"], "succeeded") for job in made]
    return {"dataset": dataset, "jobs": jobs}


ROW_IDS = "[...document.querySelectorAll('#jobs tbody tr')].map(r => r.dataset.jobId).join()"


def rows_of(page: Any) -> list[str]:
    return page.eval_on_selector_all("#jobs tbody tr", "rows => rows.map(r => r.dataset.jobId)")


def test_jobs_list_search_tags_sort_and_config_columns(views: LiveService, page: Any, trained: dict) -> None:
    narrow, wide, dropout = trained["jobs"]
    page.goto("/")
    row = page.locator(f'tr[data-job-id="{narrow["id"]}"]')
    expect(row.locator("a.job-name")).to_have_text("narrow baseline")
    expect(row.locator(".tags .tag")).to_have_text(["#baseline", "#narrow"])
    expect(row.locator("td.test-ppl")).to_have_text(re.compile(r"^[\d,.]+$"))
    expect(row.locator("td.duration")).to_have_text(re.compile(r"^(\d+ ms|\d+\.\ds|\d+s|\d+m \d\ds)$"))
    expect(page.locator("#jobs tbody tr")).to_have_count(3)

    # A tag filters the list, shows as a removable chip and is in the address.
    page.locator(f'tr[data-job-id="{wide["id"]}"] .tag[data-tag="wide"]').click()
    wait_until(page, "document.querySelectorAll('#jobs tbody tr').length === 2")
    assert sorted(rows_of(page)) == sorted([wide["id"], dropout["id"]])
    assert "tag=wide" in page.url
    expect(page.locator('#active-filters .active-filter[data-filter="tag"]')).to_have_text(re.compile("#wide"))

    # Sorted by best validation perplexity, lowest first; the view survives a reload (and a shared link).
    page.locator('button.sort[data-sort="valid_ppl"]').click()
    wait_until(page, "location.search.includes('sort=valid_ppl')")
    by_valid = sorted([wide, dropout], key=lambda j: j["best_valid_ppl"])
    wait_until(page, f"{ROW_IDS} === '{','.join(j['id'] for j in by_valid)}'")
    expect(page.locator('th:has(button.sort[data-sort="valid_ppl"])')).to_have_attribute("aria-sort", "ascending")
    page.reload()
    wait_until(page, "document.querySelectorAll('#jobs tbody tr').length === 2")
    assert rows_of(page) == [j["id"] for j in by_valid]

    # Removing the chip lifts the filter; a search by name finds one job.
    page.locator('#active-filters .active-filter[data-filter="tag"] .remove').click()
    wait_until(page, "document.querySelectorAll('#jobs tbody tr').length === 3")
    assert "tag=" not in page.url and "sort=valid_ppl" in page.url
    all_by_valid = [j["id"] for j in sorted(trained["jobs"], key=lambda j: j["best_valid_ppl"])]
    assert rows_of(page) == all_by_valid
    page.fill("#q", "dropout")
    wait_until(page, f"{ROW_IDS} === '{dropout['id']}' && location.search.includes('q=dropout')")
    assert rows_of(page) == [dropout["id"]]
    page.locator('#active-filters .active-filter[data-filter="q"] .remove').click()
    wait_until(page, "document.querySelectorAll('#jobs tbody tr').length === 3")
    # The dataset and preset filters: no job of the small preset here, all three on the dataset.
    page.select_option("#f-preset", "small")
    expect(page.locator("#empty")).to_have_text("No job matches these filters.")
    assert "preset=small" in page.url
    page.locator('#active-filters .active-filter[data-filter="preset"] .remove').click()
    page.select_option("#f-dataset", trained["dataset"]["id"])
    expect(page.locator('#active-filters .active-filter[data-filter="dataset"]')).to_contain_text("dataset tiny")
    wait_until(page, "document.querySelectorAll('#jobs tbody tr').length === 3")
    assert f"dataset_id={trained['dataset']['id']}" in page.url and "preset=" not in page.url
    page.locator('#active-filters .active-filter[data-filter="dataset"] .remove').click()

    # Config fields as columns, remembered by the browser.
    page.click("#columns summary")
    page.check('#column-choices input[value="hidden_size"]')
    cell = page.locator(f'tr[data-job-id="{wide["id"]}"] td.config[data-column="hidden_size"]')
    expect(cell).to_have_text("24")
    page.goto("/")
    expect(page.locator('#jobs thead th.config[data-column="hidden_size"]')).to_be_visible()
    expect(page.locator(f'tr[data-job-id="{narrow["id"]}"] td.config[data-column="hidden_size"]')).to_have_text("16")
    screenshot(page, "jobs-named")


def test_submit_with_name_tags_an_estimate_and_every_error_at_once(
    views: LiveService, page: Any, trained: dict
) -> None:
    allow_console_errors(page, r"status of 422 .* at .*/v1/jobs(/estimate)?$")
    dataset = trained["dataset"]
    page.goto("/submit")
    page.locator(f'#dataset_id option[value="{dataset["id"]}"]').wait_for(state="attached")
    page.select_option("#dataset_id", dataset["id"])
    page.select_option("#preset", "test")
    estimate = page.locator("#estimate")
    expect(estimate).to_have_attribute("data-state", "ok")
    expect(estimate).to_contain_text(re.compile(r"an epoch of \d+ steps"))

    # Two wrong fields: both are marked at once, each next to its own field, as soon as they are typed.
    page.fill("#tags", "fine, not/fine")
    page.fill("#notes", "n" * 10_001)
    expect(estimate).to_have_attribute("data-state", "invalid")
    expect(page.locator('.field[data-field="tags"] .error')).to_contain_text("not/fine")
    notes_error = page.locator('.field[data-field="notes"] .error')
    expect(notes_error).to_contain_text(re.compile(r"notes must be at most 10,?000 characters"))
    page.click("#submit-job")
    expect(page.locator(".field.invalid")).to_have_count(2)
    assert "/submit" in page.url
    # A config value out of range is marked at its own field, in words.
    page.fill("#tags", "")
    page.fill("#notes", "")
    page.fill("#ov-hidden_size", "0")
    expect(page.locator('.field[data-field="overrides.hidden_size"] .error')).to_contain_text("hidden_size must be")
    expect(page.locator(".field.invalid")).to_have_count(1)

    # A run past the server's job limit is warned of before it is submitted.
    page.fill("#ov-hidden_size", "16")
    page.fill("#ov-num_steps", "5")
    page.fill("#ov-max_max_epoch", "10000")
    expect(estimate).to_have_attribute("data-state", "warn")
    expect(estimate.locator(".warning")).to_contain_text("limit")
    screenshot(page, "submit-estimate")

    page.fill("#ov-max_max_epoch", "1")
    page.fill("#ov-max_steps_per_epoch", "5")
    page.fill("#name", "from the form")
    page.fill("#tags", "browser, smoke")
    page.fill("#notes", "first try")
    expect(estimate).to_have_attribute("data-state", "ok")
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"/jobs/job_"))
    job_id = page.url.rsplit("/", 1)[1]
    job = views.job(job_id)
    assert (job["name"], job["tags"], job["notes"]) == ("from the form", ["browser", "smoke"], "first try")

    # The job page shows them and edits them in place.
    expect(page.locator("#job-name")).to_have_text("from the form")
    expect(page.locator("#tags .tag")).to_have_text(["#browser", "#smoke"])
    expect(page.locator("#notes")).to_have_text("first try")
    page.click("#edit")
    page.fill("#edit-name", "renamed")
    page.fill("#edit-tags", "smoke kept")
    page.fill("#edit-notes", "second line")
    page.click("#save-about")
    expect(page.locator("#job-name")).to_have_text("renamed")
    expect(page.locator("#tags .tag")).to_have_text(["#smoke", "#kept"])
    job = views.job(job_id)
    assert (job["name"], job["tags"], job["notes"]) == ("renamed", ["smoke", "kept"], "second line")
    done = views.wait_status(job_id, "succeeded")
    expect(page.locator("#status")).to_have_text("succeeded")
    paper = done["paper"]
    assert paper["comparable"] is False  # not the paper's corpus: the reason is shown instead
    expect(page.locator("#test-ppl .paper")).to_contain_text(paper["reason"])
    screenshot(page, "job-named")


def test_compare_words_per_second_smoothed_with_config_differences_and_csv(
    views: LiveService, page: Any, trained: dict
) -> None:
    jobs = trained["jobs"]
    page.goto("/compare?" + "&".join(f"job={j['id']}" for j in jobs))
    chart = page.locator("#compare-chart")
    wait_until(page, f"document.getElementById('compare-chart').dataset.loaded === '{','.join(j['id'] for j in jobs)}'")
    page.select_option("#metric", "wps")
    page.fill("#smoothing", "0.6")
    expect(chart).to_have_attribute("data-metric", "wps")
    expect(chart).to_have_attribute("data-smoothing", "0.6")
    recorded = {
        j["id"]: views.http.get(f"/v1/jobs/{j['id']}/metrics", params={"key": "wps"}).json()["metrics"] for j in jobs
    }
    points = sum(map(len, recorded.values()))
    wait_until(page, f"Number(document.getElementById('compare-chart').dataset.points) === {points}")
    assert "metric=wps" in page.url and "smoothing=0.6" in page.url
    # Epochs on the x axis, integer ticks only; each job drawn smoothed over its faint raw curve.
    ticks = [float(t) for t in chart.get_attribute("data-x-ticks").split(",")]
    assert ticks and all(t == int(t) for t in ticks) and max(ticks) >= 3
    legend = page.locator("#compare-chart .u-legend .u-series .u-label")
    expect(legend).to_have_count(1 + 2 * len(jobs))
    expect(legend.nth(1)).to_have_text("narrow baseline (raw)")
    expect(legend.nth(2)).to_have_text("narrow baseline")

    # Only the fields that differ: hidden_size, keep_prob and max_max_epoch, not batch_size.
    diff = page.locator("#config-diff tbody tr")
    expect(diff).to_have_count(3)
    assert sorted(diff.evaluate_all("rows => rows.map(r => r.dataset.field)")) == [
        "hidden_size",
        "keep_prob",
        "max_max_epoch",
    ]
    expect(page.locator('#config-diff tr[data-field="hidden_size"] td')).to_have_text(["16", "24", "24"])
    screenshot(page, "compare-smoothed")

    # The picker finds jobs by tag (or name, or id); the compared ones stay checked.
    page.fill("#choice-q", "#dropout")
    expect(page.locator("#choices li")).to_have_count(1)
    expect(page.locator(f'#choices li[data-job-id="{jobs[2]["id"]}"] input')).to_be_checked()

    with page.expect_download() as info:
        page.click("#csv")
    download = info.value
    assert download.suggested_filename == "compare-wps.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert list(rows[0]) == ["job_id", "name", "key", "step", "epoch", "value", "smoothed"]
    assert len(rows) == points
    for job in jobs:
        mine = [r for r in rows if r["job_id"] == job["id"]]
        points = recorded[job["id"]]
        assert [int(r["step"]) for r in mine] == [p["step"] for p in points]
        assert [float(r["value"]) for r in mine] == [p["value"] for p in points]
        assert {r["name"] for r in mine} == {job["name"]} and {r["key"] for r in mine} == {"wps"}
        assert float(mine[-1]["epoch"]) == job["config"]["max_max_epoch"]  # the last point ends the last epoch
        first = points[0]["value"]
        assert float(mine[0]["smoothed"]) == pytest.approx(first)  # debiased: the first point is itself


def test_not_found_pages_and_the_icon(views: LiveService, page: Any) -> None:
    allow_console_errors(page, r"status of 404 .* at .*/(v1/jobs/job_0123456789abcdef|no/such/page)$")
    page.goto("/jobs/job_0123456789abcdef")
    expect(page.locator("#not-found")).to_be_visible()
    expect(page.locator("#not-found")).to_contain_text("No job has the id job_0123456789abcdef.")
    expect(page.locator("#job")).to_be_hidden()
    expect(page.locator("#flash")).to_be_hidden()
    assert page.title().startswith("Not found")

    response = page.goto("/no/such/page")
    assert response is not None and response.status == 404
    expect(page.locator("#not-found")).to_contain_text("There is no page at /no/such/page.")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    page.get_by_role("link", name="All jobs").click()
    page.wait_for_url(f"{views.url}/")

    # The API keeps its own 404s (problem+json), whatever the client accepts.
    api = views.http.get("/v1/no-such-thing", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.headers["content-type"].startswith("application/problem+json")

    # The icon: linked from every page, and at /favicon.ico for browsers that ask there.
    assert page.locator('link[rel="icon"]').get_attribute("href") == "/static/favicon.svg"
    for path in ("/static/favicon.svg", "/favicon.ico"):
        icon = views.http.get(path)
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml"), path
