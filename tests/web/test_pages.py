"""The dashboard's pages and files as the server sends them, and the API additions it relies on:
`GET /v1/presets` and an event stream without history (`?history=false`). No browser needed."""

from __future__ import annotations

import re
from pathlib import Path

from harness import Service
from service.test_lifecycle import parse_events

from app.web.pages import HERE
from model.config import PRESETS

PAGES = ["/", "/jobs/job_0123456789abcdef", "/compare", "/submit", "/scorings", "/playground", "/login"]


def test_every_page_is_served_with_its_scripts_and_nothing_from_another_site(service: Service) -> None:
    for path in PAGES:
        response = service.client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        sources = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        assert not [s for s in sources if s.startswith(("http:", "https:", "//"))], path
        for source in sources:
            if source.startswith("/static/"):
                assert service.client.get(source).status_code == 200, source
    # The pages are not part of the API's schema.
    assert not [
        p
        for p in service.client.get("/openapi.json").json()["paths"]
        if not p.startswith(
            ("/v1", "/healthz", "/readyz", "/metrics", "/tokenizer_info", "/tokenize", "/detokenize", "/models/")
        )
    ]


def test_the_charting_library_is_vendored_with_its_license(service: Service) -> None:
    folder = HERE / "static" / "vendor" / "uplot-1.6.31"
    assert "MIT License" in (folder / "LICENSE").read_text()
    served = service.client.get("/static/vendor/uplot-1.6.31/uPlot.iife.min.js")
    assert served.status_code == 200 and served.content == (folder / "uPlot.iife.min.js").read_bytes()
    scripts = "".join(p.read_text() for p in Path(HERE / "static" / "js").glob("*.js"))
    assert "http://" not in scripts and "https://" not in scripts


def test_presets_endpoint_gives_every_preset_and_field(service: Service) -> None:
    answer = service.client.get("/v1/presets").json()
    assert {p["name"]: p["config"] for p in answer["presets"]} == {n: c.to_dict() for n, c in PRESETS.items()}
    fields = {f["name"]: f for f in answer["fields"]}
    assert list(fields) == list(PRESETS["small"].to_dict())
    assert fields["hidden_size"]["type"] == "integer" and not fields["hidden_size"]["nullable"]
    assert fields["keep_prob"]["type"] == "number"
    assert fields["device"] == {
        "name": "device",
        "type": "choice",
        "nullable": False,
        "choices": ["auto", "cpu", "cuda"],
    }
    assert fields["max_steps_per_epoch"]["nullable"] is True


def test_events_without_history_send_only_new_points(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"], max_max_epoch=1)
    worker = service.start_worker("--once")
    assert worker.wait(120) == 0
    recorded = service.metrics(job["id"])
    assert recorded

    everything = parse_events(service.client.get(f"/v1/jobs/{job['id']}/events").text)
    assert len([e for e in everything if e.get("event") == "metric"]) == len(recorded)

    fresh = parse_events(service.client.get(f"/v1/jobs/{job['id']}/events?history=false").text)
    assert [e["event"] for e in fresh if e.get("event")] == ["status", "end"]

    missing = service.client.get("/v1/jobs/job_0123456789abcdef/events?history=false")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_every_answer_carries_the_security_headers_and_pages_a_strict_policy(service: Service) -> None:
    for path in [*PAGES, "/static/js/common.js", "/static/dashboard.css", "/v1/jobs", "/healthz", "/v1/jobs/nope"]:
        response = service.client.get(path)
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "same-origin", path
        policy = dict(d.strip().partition(" ")[::2] for d in headers["content-security-policy"].split(";"))
        assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'", path
        assert policy["style-src"] == "'self'" and policy["frame-ancestors"] == "'none'", path
        assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'", path
    # The pages have no inline script or style for the policy to refuse.
    for path in PAGES:
        html = service.client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html) and "<style" not in html and " style=" not in html
        assert not re.search(r"\son[a-z]+=", html), path
    # FastAPI's API documentation loads Swagger UI from its CDN: it is only kept out of frames.
    docs = service.client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-security-policy"] == "frame-ancestors 'none'"


def test_unknown_addresses_get_a_page_for_browsers_and_problems_for_the_api(service: Service) -> None:
    html = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    for path in ("/no/such/page", "/jobs/job_0123456789abcdef/extra"):
        page = service.client.get(path, headers=html)
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html"), path
        assert f"There is no page at {path}." in page.text and 'href="/"' in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        # A client that does not ask for HTML gets the problem, as from the API.
        plain = service.client.get(path)
        assert plain.status_code == 404 and plain.headers["content-type"].startswith("application/problem+json")
    for path in ("/v1/no-such-thing", "/static/no-such-file.js"):
        answer = service.client.get(path, headers=html)
        assert answer.status_code == 404 and "text/html" not in answer.headers["content-type"], path
    assert service.client.post("/no/such/page", headers=html).status_code in (404, 405)
    icon = service.client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.content == (HERE / "static" / "favicon.svg").read_bytes()
    assert icon.headers["content-type"].startswith("image/svg+xml")
