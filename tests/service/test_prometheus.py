"""`GET /metrics`: Prometheus' text format, parsed with prometheus_client's own parser; its counters
move with requests, jobs, scoring and generation."""

from __future__ import annotations

from pathlib import Path

from harness import Service, wait_for
from prometheus_client.parser import text_string_to_metric_families


def scrape(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    response = service.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
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
