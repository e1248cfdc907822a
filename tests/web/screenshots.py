"""The dashboard's screenshots in docs/screenshots/, taken from a real service, worker and browser.

    .venv/bin/python tests/web/screenshots.py            # PTB from ../shared/data/ptb or $PTB_DIR
    .venv/bin/python tests/web/screenshots.py --out DIR  # somewhere else

It serves the app with one worker (as the browser tests do, `web.live.serve`), registers the PTB
corpus as a server-side dataset, trains three short named and tagged jobs of the small preset (a
few capped steps an epoch, so a run takes about a minute on one CPU thread) and starts a longer
one, then saves:

- `jobs.png`: the job list with names, tags, test perplexity and duration, a config column shown;
- `job-running.png`: the longer job's page while it trains (name, tags, notes, ETA, live curves);
- `compare.png`: the three jobs' running training perplexity by epoch, smoothed, and their config
  differences;
- `submit.png`: the submit form with its estimate.

The longer job is canceled at the end. Nothing here runs under pytest (its name has no `test_`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: harness, web.live

from harness import REPO

from web.conftest import CHROMIUM, CHROMIUM_ARGS
from web.live import LiveService, open_page, serve, wait_until

OUT = REPO / "docs" / "screenshots"
PROGRESS = "document.getElementById('progress-text').textContent"
PTB = Path(os.environ.get("PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
SHORT = {"max_steps_per_epoch": 40, "max_max_epoch": 4, "device": "cpu"}
RUNS = [
    ("small, 64 units", ["baseline", "ptb"], "", {"hidden_size": 64}),
    ("small, 128 units", ["ptb", "wide"], "", {"hidden_size": 128}),
    ("small, 128 units, dropout 0.3", ["ptb", "wide", "dropout"], "", {"hidden_size": 128, "keep_prob": 0.7}),
]
LONG = (
    "small, 128 units, 30 epochs",
    ["ptb", "wide", "long"],
    "The wide run for longer: does validation perplexity keep falling past epoch 4?",
    {"hidden_size": 128, "max_max_epoch": 30},
)


def submit(live: LiveService, dataset_id: str, name: str, tags: list[str], notes: str, overrides: dict) -> str:
    body = {
        "dataset_id": dataset_id,
        "preset": "small",
        "name": name,
        "tags": tags,
        "notes": notes or None,
        "overrides": {**SHORT, **overrides},
    }
    response = live.http.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def shoot(page: Any, out: Path, name: str) -> None:
    page.wait_for_timeout(300)  # the last redraw of a chart
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    print(f"saved {out / name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the PNG files go (default {OUT})")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not CHROMIUM.exists():
        sys.exit(f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    if not (PTB / "ptb.train.txt").exists():
        sys.exit(f"needs the PTB files in {PTB} (or $PTB_DIR)")
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp), worker=True, corpus_roots={"ptb": str(PTB)}) as live:
        answer = live.http.post("/v1/datasets/builtin", json={"root": "ptb", "path": ""})
        assert answer.status_code in (200, 201), answer.text
        dataset = answer.json()
        short = [submit(live, dataset["id"], *run) for run in RUNS]
        long = submit(live, dataset["id"], *LONG)
        for job_id in short:
            live.wait_status(job_id, "succeeded", timeout=1800)
            print(f"{job_id} succeeded")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                with open_page(browser, live.url) as page:
                    page.set_viewport_size({"width": 1400, "height": 760})
                    page.goto(f"/compare?job={'&job='.join(short)}&metric=train_ppl_running&smoothing=0.6&log=1")
                    wait_until(page, f"document.getElementById('compare-chart').dataset.loaded === '{','.join(short)}'")
                    shoot(page, args.out, "compare")

                    page.evaluate("localStorage.setItem('lstmlm.jobs.columns', JSON.stringify(['hidden_size']))")
                    live.wait_status(long, "running")
                    page.goto(f"/jobs/{long}")
                    expect(page.locator("#status")).to_have_text("running")
                    # Two epochs in: curves with points, and a speed for the ETA.
                    wait_until(page, f"/epoch [3-9]|epoch \\d\\d/.test({PROGRESS})")
                    expect(page.locator("#facts")).to_contain_text("ETA")
                    shoot(page, args.out, "job-running")

                    page.goto("/")
                    page.locator(f'tr[data-job-id="{long}"][data-status="running"]').wait_for()
                    page.locator(f'tr[data-job-id="{short[0]}"] td.config').wait_for()
                    shoot(page, args.out, "jobs")

                    page.goto("/submit")
                    page.locator(f'#dataset_id option[value="{dataset["id"]}"]').wait_for(state="attached")
                    page.select_option("#dataset_id", dataset["id"])
                    page.select_option("#preset", "small")
                    page.fill("#name", "small, 256 units, dropout 0.5")
                    page.fill("#tags", "ptb wide dropout")
                    page.fill("#ov-hidden_size", "256")
                    page.fill("#ov-keep_prob", "0.5")
                    expect(page.locator("#estimate")).to_have_attribute("data-state", "ok")
                    shoot(page, args.out, "submit")
            finally:
                browser.close()
        live.http.post(f"/v1/jobs/{long}/cancel")


if __name__ == "__main__":
    main()
