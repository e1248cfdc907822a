"""The `precision` config field through the service: validated at submission, trained by a real
worker (bf16 where the CPU has it), refused for good by a worker whose device lacks it, and
reported by the checkpoint API."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from harness import TINY, Service, wait_for

from model import checkpoint
from model.network import supports_precision

BF16 = supports_precision(torch.device("cpu"), "bf16")


@pytest.mark.parametrize(
    ("precision", "device", "says"),
    [("fp16", "cpu", "precision must be one of fp32, bf16, tf32"), ("tf32", "cpu", "needs a CUDA device")],
)
def test_a_precision_the_model_cannot_train_with_is_refused(
    service: Service, tiny_corpus: Path, precision: str, device: str, says: str
) -> None:
    dataset = service.upload(tiny_corpus)
    overrides = {**TINY, "device": device, "precision": precision}
    body = {"dataset_id": dataset["id"], "preset": "test", "overrides": overrides}
    response = service.client.post("/v1/jobs", json=body)
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert says in response.json()["detail"]
    assert service.client.get("/v1/jobs").json()["items"] == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="the worker's auto device would be a GPU that has tf32")
def test_a_precision_no_worker_has_leaves_the_job_queued_with_the_reason(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"], device="auto", precision="tf32")  # CUDA's; no worker here has it
    assert job["config"]["precision"] == "tf32" and "tf32" in job["requirements"]
    worker = service.start_worker()
    try:
        waiting = wait_for(
            lambda: "tf32" in ((j := service.job(job["id"]))["message"] or "") and j,
            timeout=60,
            interval=0.2,
            what="the job to say what it waits for",
        )
        assert waiting["status"] == "queued" and waiting["attempt"] == 0, waiting  # no attempt burnt
        assert "waiting for a worker with tf32" in waiting["message"], waiting["message"]
    finally:
        worker.stop()
    assert service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"] == []


@pytest.mark.skipif(not BF16, reason="this CPU has no bf16 support (AVX512-BF16 or AMX)")
def test_a_bf16_job_trains_and_its_checkpoints_say_so(service: Service, tiny_corpus: Path, tmp_path: Path) -> None:
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"], precision="bf16")
    worker = service.start_worker("--once")
    assert worker.wait(180) == 0
    done = service.job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["config"]["precision"] == "bf16" and done["test_ppl"] is not None
    items = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
    assert items and all(item["precision"] == "bf16" for item in items)
    path = tmp_path / "final.pt"
    path.write_bytes(service.client.get(items[-1]["download_url"]).content)
    payload = checkpoint.load(path)
    assert payload["config"]["precision"] == "bf16"
    assert all(t.dtype == torch.float32 for t in payload["model"].values())  # weights stay float32
