"""The dashboard with datasets of different tokenizers, in a real browser against the live app and a
real worker: the upload form's tokenizer choice, word perplexity in the job list and the compare view
when the jobs' tokenizers differ (and per-token perplexity when they do not), the job page's
evaluation, and the <unk> warnings of the playground and the scorings page."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from playwright.sync_api import expect

from web.live import LiveService, screenshot, wait_until


def shown(value: float) -> str:
    """A number as the dashboard writes it (Dash.num: grouped, at most two decimals)."""
    return f"{value:,.2f}".rstrip("0").rstrip(".")


@pytest.fixture(scope="module")
def words(live: LiveService) -> dict[str, Any]:
    """The tiny corpus with the whitespace tokenizer, and a one-epoch job trained on it."""
    files = {s: (f"{s}.txt", (live.corpus / f"{s}.txt").read_bytes()) for s in ("train", "valid", "test")}
    response = live.http.post("/v1/datasets", files=files, data={"name": "tiny-words", "tokenizer": "whitespace"})
    assert response.status_code == 201, response.text
    dataset = response.json()
    job = live.submit(dataset["id"], max_max_epoch=1)
    return {"dataset": dataset, "job": live.wait_status(job["id"], "succeeded")}


def test_word_perplexity_where_the_tokenizers_differ(live: LiveService, page: Any, words: dict[str, Any]) -> None:
    first = words["job"]
    # One tokenizer: per-token perplexities compare, and the list has no word perplexity column.
    page.goto("/")
    page.locator(f'tr[data-job-id="{first["id"]}"][data-status="succeeded"]').wait_for()
    expect(page.locator("#word-ppl-head")).to_be_hidden()
    expect(page.locator("#word-ppl-note")).to_be_hidden()

    # The same text uploaded from the form with a subword tokenizer and its options.
    page.goto("/submit")
    for split in ("train", "valid", "test"):
        page.set_input_files(f"#up-{split}", str(live.corpus / f"{split}.txt"))
    page.fill("#up-name", "tiny-bpe")
    expect(page.locator("#up-vocab-field")).to_be_hidden()
    page.select_option("#up-tokenizer", "bpe")
    expect(page.locator("#up-min-count-field")).to_be_hidden()  # a subword model has no unknown words
    page.fill("#up-vocab", "300")
    page.select_option("#up-lowercase", "true")
    page.click("#upload")
    expect(page.locator("#upload-status")).to_have_text(re.compile(r"^uploaded tiny-bpe: bpe tokenizer, lower case, "))
    datasets = live.http.get("/v1/datasets").json()["items"]
    bpe = next(d for d in datasets if d["name"] == "tiny-bpe")
    assert bpe["tokenizer"]["kind"] == "bpe" and bpe["tokenizer"]["lowercase"] is True
    assert bpe["tokenizer"]["vocab_size"] <= 300
    expect(page.locator("#dataset_id option:checked")).to_contain_text("tiny-bpe (bpe tokenizer, ")

    second = live.wait_status(live.submit(bpe["id"], max_max_epoch=1)["id"], "succeeded")
    jobs = {job["id"]: job for job in (live.job(first["id"]), second)}
    assert {j["evaluation"]["tokenizer"] for j in jobs.values()} == {"whitespace", "bpe"}

    # The list: a word perplexity column and a note that says why.
    page.goto("/")
    expect(page.locator("#word-ppl-head")).to_be_visible()
    expect(page.locator("#word-ppl-note")).to_contain_text("Tokenizers differ (bpe, whitespace)")
    for job_id, job in jobs.items():
        cell = page.locator(f'tr[data-job-id="{job_id}"] td.word-ppl')
        expect(cell).to_have_text(shown(job["evaluation"]["valid"]["word_perplexity"]))
    expect(page.locator(f'tr[data-job-id="{second["id"]}"] td').nth(3)).to_have_text("tiny-bpe · bpe")
    screenshot(page, "jobs-tokenizers")

    # Compare: every validation point in word perplexity, ppl ** (tokens / words) of the valid split.
    page.goto(f"/compare?job={first['id']}&job={second['id']}")
    expect(page.locator("#compare-chart")).to_have_attribute("data-measure", "word")
    wait_until(page, "Number(document.getElementById('compare-chart').dataset.points) === 2")
    expect(page.locator("#compare-note")).to_contain_text("Tokenizers differ (bpe, whitespace)")
    expect(page.locator("#compare-note")).to_contain_text("word perplexity")
    expect(page.locator("#best-head")).to_have_text("best valid word ppl")
    expect(page.locator("#test-head")).to_have_text("test word ppl")
    for job_id, job in jobs.items():
        row = page.locator(f'#summary tr[data-job-id="{job_id}"]')
        evaluation = job["evaluation"]
        valid = evaluation["valid"]
        points = live.http.get(f"/v1/jobs/{job_id}/metrics", params={"key": "valid_ppl"}).json()["metrics"]
        converted = points[-1]["value"] ** (valid["num_tokens"] / valid["num_words"])
        expect(row.locator("td.tokenizer")).to_have_text(evaluation["tokenizer"])
        expect(row.locator("td.last")).to_have_text(shown(converted))
        expect(row.locator("td.best")).to_have_text(shown(valid["word_perplexity"]))
        expect(row.locator("td.test")).to_have_text(shown(evaluation["test"]["word_perplexity"]))
        assert math.isclose(converted, valid["word_perplexity"], rel_tol=1e-6)  # one epoch: its point is the best
    screenshot(page, "compare-tokenizers")

    # The same tokenizer twice: per-token perplexity, as before.
    page.goto(f"/compare?job={first['id']}")
    expect(page.locator("#compare-chart")).to_have_attribute("data-measure", "token")
    expect(page.locator("#best-head")).to_have_text("best valid ppl")
    expect(page.locator(f'#summary tr[data-job-id="{first["id"]}"] td.best')).to_have_text(
        shown(first["best_valid_ppl"])
    )

    # The job page: its tokenizer and the test and valid word perplexity and bits per byte.
    page.goto(f"/jobs/{second['id']}")
    expect(page.locator("#status")).to_have_text("succeeded")
    facts = page.locator("#facts")
    expect(facts.locator("dt", has_text="tokenizer").locator("xpath=following-sibling::dd[1]")).to_have_text("bpe")
    expect(page.locator("#evaluation caption")).to_have_text("evaluation · bpe tokenizer")
    evaluation = second["evaluation"]
    for split in ("valid", "test"):
        row = page.locator(f'#evaluation tr[data-split="{split}"]')
        expect(row.locator("td.word-ppl")).to_have_text(shown(evaluation[split]["word_perplexity"]))
        expect(row.locator("td.bpb")).to_have_text(f"{evaluation[split]['bits_per_byte']:,.3f}".rstrip("0").rstrip("."))
    expect(page.locator("#test-ppl")).not_to_contain_text("null")
    expect(page.locator("#test-ppl .per-word")).to_contain_text(
        f"word ppl {shown(evaluation['test']['word_perplexity'])} · "
    )
    screenshot(page, "job-tokenizer")


def test_playground_and_scorings_show_unk_warnings(live: LiveService, page: Any, words: dict[str, Any]) -> None:
    job = words["job"]
    page.goto(f"/playground?model={job['id']}")
    wait_until(page, f"document.getElementById('model').value === '{job['id']}'")
    expect(page.locator("#normalize")).to_have_count(0)
    expect(page.locator("#pretokenized")).not_to_be_checked()  # raw text through the model's tokenizer
    page.fill("#sentences", "the cat sat on the mat\nzebra giraffe okapi")
    page.click("#score")
    known, unknown = page.locator('.scored[data-index="0"]'), page.locator('.scored[data-index="1"]')
    unknown.wait_for()
    expect(unknown.locator(".warning")).to_have_text(re.compile(r"^⚠ sentences\[1\]: 3 of 4 tokens \(75%\) are <unk>"))
    expect(unknown).to_have_class(re.compile(r"\bwarned\b"))
    expect(known.locator(".warning")).to_have_count(0)
    expect(page.locator("#warnings li")).to_have_text([re.compile(r"^in all: 3 of 11 tokens \(27%\) are <unk>")])
    answer = live.http.post(
        "/v1/score", json={"model": job["id"], "sentences": ["the cat sat on the mat", "zebra giraffe okapi"]}
    ).json()
    first = answer["sentences"][0]
    expect(known.locator(".per-word")).to_have_text(
        f" · word ppl {shown(first['word_perplexity'])} · {first['bits_per_byte']:,.3f}".rstrip("0").rstrip(".")
        + " bits/byte"
    )
    aggregate = answer["aggregate"]
    expect(page.locator("#aggregate")).to_contain_text(f"word perplexity {shown(aggregate['word_perplexity'])}")
    expect(page.locator("#aggregate")).to_contain_text("whitespace tokenizer")
    screenshot(page, "playground-warnings")

    page.check("#pretokenized")
    page.fill("#sentences", "the cat sat")
    page.click("#score")
    expect(page.locator("#aggregate")).to_contain_text("whitespace tokenizer (pretokenized)")
    expect(page.locator("#warnings li")).to_have_count(0)
    expect(page.locator(".scored .warning")).to_have_count(0)

    # The scorings page: the form offers pretokenized, the list a scoring's warnings and word perplexity.
    files = {"file": ("unknown.txt", b"zebra giraffe okapi\n" * 3)}
    response = live.http.post("/v1/scorings", files=files, data={"model": job["id"], "pretokenized": "true"})
    assert response.status_code == 201, response.text
    scoring_id = response.json()["id"]
    page.goto("/scorings")
    expect(page.locator("input[name=pretokenized]")).to_have_count(1)
    expect(page.locator("input[name=normalize]")).to_have_count(0)
    row = page.locator(f'tr[data-scoring-id="{scoring_id}"][data-status="succeeded"]')
    row.wait_for()
    body = live.http.get(f"/v1/scorings/{scoring_id}").json()
    assert body["options"]["pretokenized"] is True and body["warnings"]
    expect(row.locator("td.warnings .warning")).to_have_text([f"⚠ {body['warnings'][0]['message']}"])
    expect(row.locator("td.word-ppl")).to_have_text(shown(body["aggregate"]["word_perplexity"]))
