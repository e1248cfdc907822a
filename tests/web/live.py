"""A live service for the browser tests (served on a real port, with a real worker) and their screenshots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from harness import REPO, TINY, WorkerProcess, wait_for

from app.settings import Settings

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


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-output/web/ and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
