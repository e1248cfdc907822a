"""Cancel (queued: at once; running: at the next step, keeping its checkpoints) and delete."""

from __future__ import annotations

import signal
from pathlib import Path

from harness import Service, wait_for

from app.store.storage import open_storage
from app.training.checkpoints import job_key


def test_cancel_a_running_job_stops_it_and_keeps_its_checkpoints(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"], max_max_epoch=50)
    worker = service.start_worker()

    def in_second_epoch() -> bool:
        progress = service.job(job["id"])["progress"] or {}
        return progress.get("epoch", 0) >= 2 and progress.get("phase") == "train"

    wait_for(in_second_epoch, timeout=60, what="the job to reach epoch 2")
    response = service.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] in ("canceling", "canceled")
    canceled = service.wait_status(job["id"], ("canceled", "failed", "succeeded"), timeout=30)
    assert canceled["status"] == "canceled" and canceled["finished_at"] is not None
    assert canceled["progress"]["epoch"] < 50

    checkpoints = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
    kinds = [c["kind"] for c in checkpoints]
    assert "epoch" in kinds and kinds[-1] in ("interrupt", "epoch")
    for c in checkpoints:
        assert service.client.get(c["download_url"]).status_code == 200

    # idempotent: cancelling again answers the same canceled job
    again = service.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "canceled"
    assert again.json()["updated_at"] == canceled["updated_at"]

    # the worker survives the cancel and goes back to waiting
    assert worker.proc.poll() is None
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0


def test_cancel_a_queued_job_is_immediate_and_idempotent(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"])
    first = service.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert first.status_code == 200
    assert first.json()["status"] == "canceled" and first.json()["queue_position"] is None
    second = service.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert second.status_code == 200 and second.json() == first.json()
    # a canceled job is never claimed
    worker = service.start_worker("--burst")
    assert worker.wait(60) == 0
    assert service.job(job["id"])["status"] == "canceled" and service.job(job["id"])["attempt"] == 0


def test_delete_a_finished_job_removes_rows_and_files(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"], max_max_epoch=1)
    busy = service.submit(dataset["id"])
    refused = service.client.delete(f"/v1/jobs/{busy['id']}")
    assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"

    worker = service.start_worker("--once")
    assert worker.wait(60) == 0
    assert service.job(job["id"])["status"] == "succeeded"
    storage = open_storage(service.settings)
    assert storage.list(job_key(job["id"]))

    assert service.client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert service.client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert service.client.get(f"/v1/jobs/{job['id']}/metrics").status_code == 404
    assert storage.list(job_key(job["id"])) == []
    assert service.client.delete(f"/v1/jobs/{job['id']}").status_code == 404
    assert service.job(busy["id"])["status"] == "queued"
