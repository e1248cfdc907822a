"""`GET /metrics`: Prometheus' text format, parsed with prometheus_client's own parser; its counters
move with requests, jobs, scorings, scoring and generation; no `_created` series."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

import torch
from fastapi.testclient import TestClient
from harness import Service, wait_for
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(service: Service, client: TestClient | None = None) -> Samples:
    """Every sample of /metrics (from `client`, by default the service's) by (name, sorted labels)."""
    response = (client or service.client).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_template_method_and_status(service: Service) -> None:
    before = scrape(service)
    for _ in range(3):
        assert service.client.get("/v1/jobs/job_nope").status_code == 404
    assert service.client.get("/v1/jobs").status_code == 200
    assert service.client.get("/no/such/path").status_code == 404
    after = scrape(service)
    route = {"route": "/v1/jobs/{job_id}", "method": "GET"}
    counted = value(after, "lstmlm_http_requests_total", **route, status="404")
    assert counted - value(before, "lstmlm_http_requests_total", **route, status="404") == 3
    assert value(after, "lstmlm_http_requests_total", route="/v1/jobs", method="GET", status="200") >= 1
    assert value(after, "lstmlm_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(after, "lstmlm_http_request_duration_seconds_count", **route) >= 3
    inf_bucket = value(after, "lstmlm_http_request_duration_seconds_bucket", **route, le="+Inf")
    assert inf_bucket == value(after, "lstmlm_http_request_duration_seconds_count", **route)
    # no raw path or id ever becomes a label value
    assert not any("job_nope" in str(labels) or "/no/such" in str(labels) for _, labels in after)


def test_jobs_queue_workers_and_tokens_follow_what_happens(service: Service, tiny_corpus: Path) -> None:
    empty = scrape(service)
    assert value(empty, "lstmlm_database_up") == 1
    assert value(empty, "lstmlm_queue_depth") == 0 and value(empty, "lstmlm_queue_oldest_age_seconds") == 0
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"], max_max_epoch=1)
    queued = scrape(service)
    assert value(queued, "lstmlm_jobs", status="queued") == 1 and value(queued, "lstmlm_queue_depth") == 1
    assert value(queued, "lstmlm_queue_oldest_age_seconds") >= 0

    worker = service.start_worker("--once")
    assert worker.wait(timeout=120) == 0, worker.log()
    done = scrape(service)
    assert value(done, "lstmlm_jobs", status="succeeded") == 1 and value(done, "lstmlm_jobs", status="queued") == 0
    assert value(done, "lstmlm_queue_depth") == 0
    # the worker stopped (--once): it is not live and has no heartbeat series
    assert value(done, "lstmlm_workers_live") == 0
    assert not [labels for name, labels in done if name == "lstmlm_worker_heartbeat_age_seconds"]

    sentences = ["the cat sat on the mat", "a big red dog ran fast"]
    for _ in range(2):
        response = service.client.post("/v1/score", json={"model": job["id"], "sentences": sentences})
        assert response.status_code == 200, response.text
    tokens = response.json()["aggregate"]["num_tokens"]
    generated = service.client.post("/v1/generate", json={"model": job["id"], "prompt": "the", "max_tokens": 5})
    assert generated.status_code == 200, generated.text
    after = scrape(service)
    assert value(after, "lstmlm_tokens_scored_total") - value(done, "lstmlm_tokens_scored_total") == 2 * tokens
    count = generated.json()["usage"]["completion_tokens"]
    assert value(after, "lstmlm_tokens_generated_total") - value(done, "lstmlm_tokens_generated_total") == count
    # one load for the first request, hits for the next two
    assert value(after, "lstmlm_model_cache_misses_total") == 1 and value(after, "lstmlm_model_cache_loads_total") == 1
    assert value(after, "lstmlm_model_cache_hits_total") == 2 and value(after, "lstmlm_model_cache_models") == 1


def test_a_live_worker_and_a_running_job_have_their_series(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"], max_max_epoch=50)
    service.start_worker()
    service.wait_status(job["id"], ("running",))

    def running_with_speed() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = scrape(service)
        speed = value(samples, "lstmlm_job_train_words_per_second", job_id=job["id"])
        return samples if speed > 0 else None

    samples = wait_for(running_with_speed, timeout=60, what="a words/s sample")
    assert value(samples, "lstmlm_jobs", status="running") == 1
    assert value(samples, "lstmlm_workers_live") == 1
    ages = [v for (name, _), v in samples.items() if name == "lstmlm_worker_heartbeat_age_seconds"]
    assert len(ages) == 1 and ages[0] >= 0
    assert service.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    service.wait_status(job["id"], ("canceled",))


def test_scoring_queue_ended_jobs_and_build_info_read_alike_by_every_api_process(
    service: Service, tiny_corpus: Path
) -> None:
    response = service.client.get("/metrics")
    assert "_created" not in response.text  # the client library's creation timestamps are off
    build = [dict(labels) for name, labels in scrape(service) if name == "lstmlm_build_info"]
    assert build == [
        {
            "version": metadata.version("lstm-lm-service"),
            "python": platform.python_version(),
            "torch": torch.__version__,
        }
    ]
    assert value(scrape(service), "lstmlm_build_info", **build[0]) == 1

    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"], max_max_epoch=1)
    diverging = service.submit(
        dataset["id"], learning_rate=100.0, init_scale=10.0, max_grad_norm=1e6, hidden_size=200, max_steps_per_epoch=50
    )
    worker = service.start_worker("--burst")
    assert worker.wait(120) == 0, worker.log()
    assert service.job(diverging["id"])["status"] == "failed"
    files = {"file": ("lines.txt", b"the cat sat on the mat\na big red dog ran fast\n", "text/plain")}
    scorings = []
    for _ in range(3):
        answer = service.client.post("/v1/scorings", data={"model": job["id"]}, files=files)
        assert answer.status_code == 201, answer.text
        scorings.append(answer.json())
    queued = scrape(service)
    assert value(queued, "lstmlm_scoring_queue_depth") == 3 and value(queued, "lstmlm_scorings", status="queued") == 3
    assert 0 < value(queued, "lstmlm_scoring_queue_oldest_age_seconds") < 60
    assert value(queued, "lstmlm_queue_depth") == 0  # the training queue is apart
    ended = {("training", "succeeded"): 1, ("training", "failed"): 1, ("training", "canceled"): 0}
    ended |= {("scoring", "succeeded"): 0, ("scoring", "failed"): 0, ("scoring", "canceled"): 0}
    assert {k: value(queued, "lstmlm_jobs_ended", kind=k[0], status=k[1]) for k in ended} == ended

    assert service.client.post(f"/v1/scorings/{scorings[0]['id']}/cancel").status_code == 200
    worker = service.start_worker("--burst")
    assert worker.wait(120) == 0, worker.log()
    done = scrape(service)
    assert (
        value(done, "lstmlm_scoring_queue_depth") == 0 and value(done, "lstmlm_scoring_queue_oldest_age_seconds") == 0
    )
    assert value(done, "lstmlm_scorings", status="succeeded") == 2
    ended |= {("scoring", "succeeded"): 2, ("scoring", "canceled"): 1}
    assert {k: value(done, "lstmlm_jobs_ended", kind=k[0], status=k[1]) for k in ended} == ended

    # read from the database: another API process (here a second app) reports the same, and so
    # would this one after a restart
    with TestClient(create_app(service.settings)) as other:
        again = scrape(service, other)
    for name in ("lstmlm_jobs_ended", "lstmlm_scorings", "lstmlm_jobs", "lstmlm_scoring_queue_depth"):
        assert {k: v for k, v in again.items() if k[0] == name} == {k: v for k, v in done.items() if k[0] == name}
    # deleting a finished scoring lowers its count: the ended jobs are stored rows, a gauge
    assert service.client.delete(f"/v1/scorings/{scorings[0]['id']}").status_code == 204
    assert value(scrape(service), "lstmlm_jobs_ended", kind="scoring", status="canceled") == 0
