"""API keys through the real app with authentication on: no key, a wrong or revoked key, a read key
on every write route, another owner's datasets, jobs and checkpoints (404, absent from lists) and
admin-only routes are all refused with problem+json and change nothing stored; aliases publish a
model to every key; dashboard sessions (a cookie that is not the key, that expires, ends on logout
and with its key's revocation); idempotency keys are per owner."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from harness import TINY, Service, open_service, stored_state, write_corpus
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.auth import keys
from app.store.storage import open_storage
from app.store.tables import BrowserSession, utcnow
from app.training.datasets import dataset_key

SENTENCES = ["the cat sat on the mat"]


@dataclass
class World:
    """One service with authentication on, four keys and Alice's things."""

    svc: Service
    admin: str
    alice: str
    bob: str
    reader: str
    revoked: str
    dataset: dict[str, Any]  # Alice's upload, used by her queued job
    builtin: dict[str, Any]  # a server-side corpus the admin registered
    done: dict[str, Any]  # Alice's succeeded job
    checkpoint_id: str  # one of its checkpoints
    queued: dict[str, Any]  # Alice's queued job
    scoring: dict[str, Any]  # Alice's queued scoring of her job's model

    def as_(self, secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}


def files_of(folder: Path) -> dict[str, tuple[str, bytes, str]]:
    return {s: (f"{s}.txt", (folder / f"{s}.txt").read_bytes(), "text/plain") for s in ("train", "valid", "test")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("auth")
    corpus = write_corpus(tmp / "corpus")
    write_corpus(tmp / "corpora" / "small", seed=3)
    svc, close = open_service(tmp, auth=True, corpus_roots={"corpora": tmp / "corpora"})
    secrets = {
        name: keys.create_key(svc.engine, name, scope)[1]
        for name, scope in (("admin", "admin"), ("alice", "write"), ("bob", "write"), ("reader", "read"))
    }
    revoked_row, revoked = keys.create_key(svc.engine, "gone", "admin")
    keys.revoke_key(svc.engine, revoked_row.id)
    alice = {"Authorization": f"Bearer {secrets['alice']}"}
    admin = {"Authorization": f"Bearer {secrets['admin']}"}

    response = svc.client.post("/v1/datasets", files=files_of(corpus), data={"name": "alice's"}, headers=alice)
    assert response.status_code == 201, response.text
    dataset = response.json()
    builtin = svc.client.post("/v1/datasets/builtin", json={"root": "corpora", "path": "small"}, headers=admin)
    assert builtin.status_code == 201, builtin.text
    body = {"dataset_id": dataset["id"], "preset": "test", "overrides": {**TINY, "max_max_epoch": 1}}
    done = svc.client.post("/v1/jobs", json=body, headers=alice).json()
    svc.start_worker("--burst").wait(timeout=120)
    done = svc.client.get(f"/v1/jobs/{done['id']}", headers=alice).json()
    assert done["status"] == "succeeded", done
    checkpoints = svc.client.get(f"/v1/jobs/{done['id']}/checkpoints", headers=alice).json()["items"]
    queued = svc.client.post("/v1/jobs", json=body, headers=alice).json()
    assert queued["status"] == "queued"
    lines = {"file": ("lines.txt", b"the cat\n", "text/plain")}
    scoring = svc.client.post("/v1/scorings", files=lines, data={"model": done["id"]}, headers=alice).json()
    assert scoring["status"] == "queued", scoring
    yield World(
        svc,
        secrets["admin"],
        secrets["alice"],
        secrets["bob"],
        secrets["reader"],
        revoked,
        dataset,
        builtin.json(),
        done,
        checkpoints[0]["id"],
        queued,
        scoring,
    )
    close()


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    return body


def api_routes(world: World) -> list[tuple[str, str]]:
    """(method, path) of every /v1 operation the app documents but logging in and out, path parameters filled in."""
    paths = world.svc.client.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "x_1", path))
        for path, operations in paths.items()
        if path.startswith("/v1/")
        for method in operations
        if (method.upper(), path) not in {("POST", "/v1/session"), ("DELETE", "/v1/session")}
    ]


def test_every_api_route_refuses_no_key_a_wrong_key_and_a_revoked_key(world: World) -> None:
    routes = api_routes(world)
    assert ("POST", "/v1/jobs") in routes and ("GET", "/v1/models") in routes
    before = stored_state(world.svc)
    for headers in ({}, {"Authorization": "Bearer lsk_not-a-key"}, world.as_(world.revoked)):
        for method, path in routes:
            response = world.svc.client.request(method, path, json={}, headers=headers)
            body = assert_problem(response, 401)
            assert "API key" in body["detail"]
            assert response.headers["www-authenticate"].startswith("Bearer")
    # an upload without a key is refused before its body is read
    upload = world.svc.client.post("/v1/datasets", files=files_of(world.svc.tmp / "corpus"))
    assert_problem(upload, 401)
    assert stored_state(world.svc) == before


def test_prometheus_metrics_need_an_admin_key(world: World) -> None:
    client = world.svc.client
    assert_problem(client.get("/metrics"), 401)
    assert_problem(client.get("/metrics", headers=world.as_(world.alice)), 403)
    scraped = client.get("/metrics", headers=world.as_(world.admin))
    assert scraped.status_code == 200
    assert "lstmlm_jobs" in scraped.text


def test_open_routes_stay_open(world: World) -> None:
    for path in ("/healthz", "/openapi.json", "/docs"):
        assert world.svc.client.get(path).status_code == 200, path
    assert world.svc.client.get("/readyz").status_code in (200, 503)  # no key asked; 503: no live worker
    schemes = world.svc.client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert {"HTTPBearer", "APIKeyCookie"} <= set(schemes)


def write_requests(world: World) -> list[tuple[str, str, dict[str, Any]]]:
    """Every route that changes something, each aimed at a real target."""
    job_body = {"dataset_id": world.dataset["id"], "preset": "test", "overrides": TINY}
    return [
        ("POST", "/v1/datasets", {"files": files_of(world.svc.tmp / "corpus")}),
        ("DELETE", f"/v1/datasets/{world.dataset['id']}", {}),
        ("POST", "/v1/jobs", {"json": job_body}),
        ("POST", f"/v1/jobs/{world.queued['id']}/cancel", {}),
        ("DELETE", f"/v1/jobs/{world.done['id']}", {}),
        ("POST", "/v1/scorings", {"files": {"file": ("x.txt", b"a b\n", "text/plain")}, "data": {"model": "x"}}),
        ("POST", f"/v1/scorings/{world.scoring['id']}/cancel", {}),
        ("DELETE", f"/v1/scorings/{world.scoring['id']}", {}),
    ]


def admin_requests(world: World) -> list[tuple[str, str, dict[str, Any]]]:
    """Routes only an admin key may use."""
    return [
        ("GET", "/v1/datasets/roots", {}),
        ("POST", "/v1/datasets/builtin", {"json": {"root": "corpora", "path": "small"}}),
        ("PUT", "/v1/models/aliases/best", {"json": {"target": world.done["id"]}}),
        ("DELETE", "/v1/models/aliases/best", {}),
    ]


def test_a_read_key_can_read_but_changes_nothing(world: World) -> None:
    headers = world.as_(world.reader)
    before = stored_state(world.svc)
    for method, path, kwargs in write_requests(world) + admin_requests(world):
        body = assert_problem(world.svc.client.request(method, path, headers=headers, **kwargs), 403)
        assert "scope is read" in body["detail"]
    assert stored_state(world.svc) == before
    assert world.svc.client.get("/v1/jobs", headers=headers).json()["items"] == []  # owns none
    assert world.svc.client.get("/v1/whoami", headers=headers).json() == {
        "id": world.svc.client.get("/v1/whoami", headers=headers).json()["id"],
        "name": "reader",
        "scope": "read",
    }


def test_admin_routes_refuse_a_write_key(world: World) -> None:
    before = stored_state(world.svc)
    for method, path, kwargs in admin_requests(world):
        body = assert_problem(world.svc.client.request(method, path, headers=world.as_(world.alice), **kwargs), 403)
        assert "needs admin" in body["detail"]
    assert stored_state(world.svc) == before


def test_another_owners_things_are_not_found_and_not_listed(world: World) -> None:
    client, bob = world.svc.client, world.as_(world.bob)
    job_id, ds_id, ckpt_id = world.done["id"], world.dataset["id"], world.checkpoint_id
    before = stored_state(world.svc)
    for method, path, kwargs in [
        ("GET", f"/v1/datasets/{ds_id}", {}),
        ("DELETE", f"/v1/datasets/{ds_id}", {}),
        ("GET", f"/v1/jobs/{job_id}", {}),
        ("POST", f"/v1/jobs/{world.queued['id']}/cancel", {}),
        ("DELETE", f"/v1/jobs/{job_id}", {}),
        ("GET", f"/v1/jobs/{job_id}/metrics", {}),
        ("GET", f"/v1/jobs/{job_id}/events", {}),
        ("GET", f"/v1/jobs/{job_id}/logs", {}),
        ("GET", f"/v1/jobs/{job_id}/logs?follow=true", {}),
        ("GET", f"/v1/jobs/{job_id}/checkpoints", {}),
        ("GET", f"/v1/jobs/{job_id}/checkpoints/{ckpt_id}", {}),
        ("GET", f"/v1/jobs/{job_id}/checkpoints/{ckpt_id}/file", {}),
        ("GET", f"/v1/models/{job_id}", {}),
        ("GET", f"/v1/models/{ckpt_id}", {}),
        ("POST", "/v1/score", {"json": {"model": job_id, "sentences": SENTENCES}}),
        ("POST", "/v1/score", {"json": {"model": ckpt_id, "sentences": SENTENCES}}),
        ("POST", "/v1/generate", {"json": {"model": job_id, "prompt": "the", "max_tokens": 2}}),
        ("POST", "/v1/completions", {"json": {"model": ckpt_id, "prompt": "the", "max_tokens": 2}}),
        ("GET", f"/v1/scorings/{world.scoring['id']}", {}),
        ("GET", f"/v1/scorings/{world.scoring['id']}/results", {}),
        ("POST", f"/v1/scorings/{world.scoring['id']}/cancel", {}),
        ("DELETE", f"/v1/scorings/{world.scoring['id']}", {}),
    ]:
        body = assert_problem(client.request(method, path, headers=bob, **kwargs), 404)
        assert "not found" in body["detail"]
    # training on Alice's dataset: the same answer as for a dataset that does not exist
    job_body = {"dataset_id": ds_id, "preset": "test", "overrides": TINY}
    refused = assert_problem(client.post("/v1/jobs", json=job_body, headers=bob), 422)
    missing = client.post("/v1/jobs", json={**job_body, "dataset_id": "ds_0000000000000000"}, headers=bob).json()
    assert refused["detail"].replace(ds_id, "?") == missing["detail"].replace("ds_0000000000000000", "?")
    assert stored_state(world.svc) == before

    # lists show only what each key may see: Bob sees the shared server-side corpus and nothing of Alice's
    assert [d["id"] for d in client.get("/v1/datasets", headers=bob).json()["items"]] == [world.builtin["id"]]
    assert client.get("/v1/jobs", headers=bob).json()["items"] == []
    assert client.get("/v1/models", headers=bob).json()["data"] == []
    assert client.get("/v1/scorings", headers=bob).json()["items"] == []
    alice = world.as_(world.alice)
    assert {d["id"] for d in client.get("/v1/datasets", headers=alice).json()["items"]} == {ds_id, world.builtin["id"]}
    assert {j["id"] for j in client.get("/v1/jobs", headers=alice).json()["items"]} >= {job_id, world.queued["id"]}
    assert job_id in {m["id"] for m in client.get("/v1/models", headers=alice).json()["data"]}
    assert client.post("/v1/score", json={"model": job_id, "sentences": SENTENCES}, headers=alice).status_code == 200
    # an admin sees everyone's
    admin = world.as_(world.admin)
    assert client.get(f"/v1/jobs/{job_id}", headers=admin).status_code == 200
    assert job_id in {j["id"] for j in client.get("/v1/jobs", headers=admin).json()["items"]}


def test_an_alias_publishes_a_model_to_every_key(world: World) -> None:
    client = world.svc.client
    put = client.put("/v1/models/aliases/shared", json={"target": world.done["id"]}, headers=world.as_(world.admin))
    assert put.status_code == 200, put.text
    try:
        bob = world.as_(world.bob)
        scored = client.post("/v1/score", json={"model": "shared", "sentences": SENTENCES}, headers=bob)
        assert scored.status_code == 200, scored.text
        mine = client.post(
            "/v1/score", json={"model": world.done["id"], "sentences": SENTENCES}, headers=world.as_(world.alice)
        )
        assert scored.json()["sentences"] == mine.json()["sentences"]
        assert [m["id"] for m in client.get("/v1/models", headers=bob).json()["data"]] == ["shared"]
        assert client.get("/v1/models/aliases/shared", headers=bob).json()["target"] == world.done["id"]
        assert_problem(client.get(f"/v1/jobs/{world.done['id']}", headers=bob), 404)  # the job stays private
    finally:
        client.delete("/v1/models/aliases/shared", headers=world.as_(world.admin))


def test_idempotency_keys_are_per_owner(world: World) -> None:
    client = world.svc.client
    body = {"dataset_id": world.builtin["id"], "preset": "test", "overrides": TINY}
    first = client.post("/v1/jobs", json=body, headers={**world.as_(world.alice), "Idempotency-Key": "same"})
    other = client.post("/v1/jobs", json=body, headers={**world.as_(world.bob), "Idempotency-Key": "same"})
    again = client.post("/v1/jobs", json=body, headers={**world.as_(world.bob), "Idempotency-Key": "same"})
    assert (first.status_code, other.status_code, again.status_code) == (201, 201, 200)
    assert first.json()["id"] != other.json()["id"] == again.json()["id"]
    for response, secret in ((first, world.alice), (other, world.bob)):
        client.post(f"/v1/jobs/{response.json()['id']}/cancel", headers=world.as_(secret))


def test_dataset_delete_owner_conflict_and_history(world: World) -> None:
    client, alice, bob = world.svc.client, world.as_(world.alice), world.as_(world.bob)
    # in use by Alice's queued job: 409 and nothing changes
    before = stored_state(world.svc)
    body = assert_problem(client.delete(f"/v1/datasets/{world.dataset['id']}", headers=alice), 409)
    assert "queued or running" in body["detail"]
    assert stored_state(world.svc) == before

    # a fresh upload nobody uses: 204, row and files gone
    fresh = client.post("/v1/datasets", files=files_of(world.svc.tmp / "corpus"), headers=alice).json()
    storage = open_storage(world.svc.settings)
    assert storage.list(dataset_key(fresh["id"]))
    assert_problem(client.delete(f"/v1/datasets/{fresh['id']}", headers=bob), 404)
    assert client.delete(f"/v1/datasets/{fresh['id']}", headers=alice).status_code == 204
    assert storage.list(dataset_key(fresh["id"])) == []
    assert_problem(client.get(f"/v1/datasets/{fresh['id']}", headers=alice), 404)
    assert_problem(client.delete(f"/v1/datasets/{fresh['id']}", headers=alice), 404)

    # a dataset a finished job names: deleted for everyone, the job keeps its history
    used = client.post("/v1/datasets", files=files_of(world.svc.tmp / "corpus"), headers=alice).json()
    job = client.post(
        "/v1/jobs", json={"dataset_id": used["id"], "preset": "test", "overrides": TINY}, headers=alice
    ).json()
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice).json()["status"] == "canceled"
    assert client.delete(f"/v1/datasets/{used['id']}", headers=alice).status_code == 204
    assert storage.list(dataset_key(used["id"])) == []
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["dataset_id"] == used["id"]
    assert used["id"] not in {
        d["id"] for d in client.get("/v1/datasets", headers=world.as_(world.admin)).json()["items"]
    }
    resubmit = client.post(
        "/v1/jobs", json={"dataset_id": used["id"], "preset": "test", "overrides": TINY}, headers=alice
    )
    assert_problem(resubmit, 422)


def test_only_an_admin_deletes_a_server_side_corpus(world: World, tmp_path: Path) -> None:
    client = world.svc.client
    admin = world.as_(world.admin)
    other = client.post("/v1/datasets/builtin", json={"root": "corpora", "path": "small", "name": "x"}, headers=admin)
    created = client.post(
        "/v1/datasets/builtin", json={"root": "corpora", "path": "small/."}, headers=admin
    )  # registered once: the same row
    assert other.json()["id"] == created.json()["id"] == world.builtin["id"]
    before = stored_state(world.svc)
    body = assert_problem(client.delete(f"/v1/datasets/{world.builtin['id']}", headers=world.as_(world.bob)), 403)
    assert "admin" in body["detail"]
    assert stored_state(world.svc) == before


def test_dashboard_login_by_cookie(world: World) -> None:
    with TestClient(world.svc.client.app) as browser:  # its own cookie jar
        assert_problem(browser.post("/v1/session", json={"key": "lsk_wrong"}), 401)
        assert_problem(browser.post("/v1/session", json={"nope": 1}), 422)
        response = browser.post("/v1/session", data={"key": world.alice})  # an HTML form
        assert response.status_code == 200, response.text
        assert response.json()["name"] == "alice" and response.json()["scope"] == "write"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("lstmlm_session=lss_") and world.alice not in cookie  # a session, not the key
        for flag in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age=43200"):
            assert flag.lower() in cookie.lower(), cookie
        assert "secure" not in cookie.lower()  # plain http here
        assert browser.get("/v1/whoami").json()["name"] == "alice"
        assert browser.get(f"/v1/jobs/{world.done['id']}").status_code == 200

        # a cookie-carrying request from another site cannot act
        before = stored_state(world.svc)
        cancel = f"/v1/jobs/{world.queued['id']}/cancel"
        assert_problem(browser.post(cancel, headers={"Origin": "http://evil.example"}), 403)
        assert_problem(browser.post(cancel, headers={"Sec-Fetch-Site": "cross-site"}), 403)
        assert_problem(
            browser.post("/v1/datasets", files=files_of(world.svc.tmp / "corpus"), headers={"Origin": "null"}), 403
        )
        assert stored_state(world.svc) == before
        # the dashboard's own page posts with its own origin
        same = browser.post("/v1/session", json={"key": world.alice}, headers={"Origin": "http://testserver"})
        assert same.status_code == 200

        assert browser.delete("/v1/session").status_code == 204
        assert "lstmlm_session" not in browser.cookies
        assert_problem(browser.get("/v1/whoami"), 401)


def test_cross_site_posts_are_refused_with_authentication_off(tmp_path: Path, tiny_corpus: Path) -> None:
    svc, close = open_service(tmp_path, auth=False)
    try:
        dataset = svc.upload(tiny_corpus)
        job = svc.submit(dataset["id"])
        before = stored_state(svc)
        evil = {"Origin": "http://evil.example"}
        assert_problem(svc.client.post("/v1/datasets", files=files_of(tiny_corpus), headers=evil), 403)
        assert_problem(svc.client.post(f"/v1/jobs/{job['id']}/cancel", headers=evil), 403)
        assert_problem(svc.client.delete(f"/v1/datasets/{dataset['id']}", headers={"Sec-Fetch-Site": "same-site"}), 403)
        assert stored_state(svc) == before
        assert "access-control-allow-origin" not in svc.client.get("/v1/jobs", headers=evil).headers  # no CORS
        assert svc.client.get("/v1/whoami").json() == {
            "id": None,
            "name": "local (authentication off)",
            "scope": "admin",
        }
    finally:
        close()


def test_cors_allow_list(tmp_path: Path) -> None:
    svc, close = open_service(tmp_path, auth=False, cors_origins=["http://ok.example"])
    try:
        preflight = svc.client.options(
            "/v1/jobs",
            headers={"Origin": "http://ok.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://ok.example"
        refused = svc.client.options(
            "/v1/jobs", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in refused.headers
        job_body = {"dataset_id": "ds_0000000000000000", "preset": "test"}
        allowed = svc.client.post("/v1/jobs", json=job_body, headers={"Origin": "http://ok.example"})
        assert_problem(allowed, 422)  # past the origin check: refused for its content only
        assert_problem(svc.client.post("/v1/jobs", json=job_body, headers={"Origin": "http://evil.example"}), 403)
    finally:
        close()


def test_quotas_per_key(tmp_path: Path, tiny_corpus: Path) -> None:
    size = sum((tiny_corpus / f"{s}.txt").stat().st_size for s in ("train", "valid", "test"))
    svc, close = open_service(tmp_path, auth=True, max_stored_bytes_per_key=size + 10, max_queued_jobs_per_key=1)
    try:
        user = {"Authorization": f"Bearer {keys.create_key(svc.engine, 'u', 'write')[1]}"}
        admin = {"Authorization": f"Bearer {keys.create_key(svc.engine, 'a', 'admin')[1]}"}
        first = svc.client.post("/v1/datasets", files=files_of(tiny_corpus), headers=user)
        assert first.status_code == 201
        before = stored_state(svc)
        body = assert_problem(svc.client.post("/v1/datasets", files=files_of(tiny_corpus), headers=user), 429)
        assert f"{size:,} bytes" in body["detail"] and f"limit of {size + 10:,} bytes" in body["detail"]
        assert stored_state(svc) == before

        job_body = {"dataset_id": first.json()["id"], "preset": "test", "overrides": TINY}
        assert svc.client.post("/v1/jobs", json=job_body, headers=user).status_code == 201
        before = stored_state(svc)
        body = assert_problem(svc.client.post("/v1/jobs", json=job_body, headers=user), 429)
        assert "1 queued job(s) and scoring(s), its limit is 1" in body["detail"]
        assert stored_state(svc) == before

        # admin keys are not limited
        assert svc.client.post("/v1/datasets", files=files_of(tiny_corpus), headers=admin).status_code == 201
        assert svc.client.post("/v1/datasets", files=files_of(tiny_corpus), headers=admin).status_code == 201
        for _ in range(2):
            assert svc.client.post("/v1/jobs", json=job_body, headers=admin).status_code == 201
        # deleting frees the quota
        svc.client.post(
            f"/v1/jobs/{svc.client.get('/v1/jobs', headers=user).json()['items'][0]['id']}/cancel", headers=user
        )
        assert svc.client.post("/v1/jobs", json=job_body, headers=user).status_code == 201
    finally:
        close()


def login(client: TestClient, key: str) -> str:
    """Log in with `key`; returns the session cookie's value."""
    response = client.post("/v1/session", json={"key": key})
    assert response.status_code == 200, response.text
    return str(client.cookies["lstmlm_session"])


def session_rows(svc: Service) -> list[BrowserSession]:
    with Session(svc.engine) as session:
        return list(session.scalars(select(BrowserSession).order_by(BrowserSession.created_at)))


def test_a_session_cookie_is_a_random_id_whose_hash_only_is_stored(world: World) -> None:
    with TestClient(world.svc.client.app) as browser:
        value = login(browser, world.bob)
        assert value.startswith("lss_") and value != world.bob and world.bob not in value
        row = next(r for r in session_rows(world.svc) if r.id == browser.get("/v1/session").json()["items"][0]["id"])
        assert row.secret_hash == keys.hash_secret(value) and value not in repr(row.__dict__)
        assert row.expires_at - row.created_at == timedelta(hours=12)
        # the key still works as a bearer key, and a bearer "key" holding a session id does not
        assert browser.get("/v1/whoami", headers=world.as_(world.bob)).json()["name"] == "bob"
        with TestClient(world.svc.client.app) as other:
            assert_problem(other.get("/v1/whoami", headers={"Authorization": f"Bearer {value}"}), 401)
        # a cookie that holds a key (what the old login set) is not a session
        with TestClient(world.svc.client.app, cookies={"lstmlm_session": world.bob}) as forged:
            body = assert_problem(forged.get("/v1/whoami"), 401)
            assert "session" in body["detail"]
        with TestClient(world.svc.client.app, cookies={"lstmlm_key": world.bob}) as old:
            assert_problem(old.get("/v1/whoami"), 401)
            assert "lstmlm_key=" in old.post("/v1/session", json={"key": world.bob}).headers.get_list("set-cookie")[1]
        browser.delete("/v1/session")


def test_a_logged_out_session_is_refused_even_with_its_cookie(world: World) -> None:
    with TestClient(world.svc.client.app) as browser:
        value = login(browser, world.reader)
        assert browser.get("/v1/whoami").json()["name"] == "reader"
        assert browser.delete("/v1/session").status_code == 204
    with TestClient(world.svc.client.app, cookies={"lstmlm_session": value}) as replay:  # the cookie kept
        body = assert_problem(replay.get("/v1/whoami"), 401)
        assert body["detail"] == "the session has ended (logged out, expired or its key revoked): log in again"
        assert_problem(replay.get("/v1/jobs"), 401)


def slid_id(client: TestClient) -> str:
    """The id of the session `client` is logged in with."""
    return str(next(s["id"] for s in client.get("/v1/session").json()["items"] if s["current"]))


def test_sessions_expire_and_slide_with_use(tmp_path: Path) -> None:
    svc, close = open_service(tmp_path, auth=True, session_hours=1.5 / 3600)  # 1.5 s
    try:
        _, secret = keys.create_key(svc.engine, "carol", "read")
        with TestClient(svc.client.app) as browser:
            login(browser, secret)
            assert "max-age=2" in browser.post("/v1/session", json={"key": secret}).headers["set-cookie"].lower()
            value = browser.cookies["lstmlm_session"]
            assert browser.get("/v1/whoami").status_code == 200
            # In use: a request more than a minute after the last one moves the expiry on and sends the cookie again.
            earlier = utcnow() - timedelta(minutes=2)
            with Session(svc.engine) as session, session.begin():
                session.execute(update(BrowserSession).values(last_seen_at=earlier))
            slid = browser.get("/v1/whoami")
            assert slid.status_code == 200 and slid.headers["set-cookie"].startswith("lstmlm_session=")
            with Session(svc.engine) as session:
                row = session.scalars(select(BrowserSession).where(BrowserSession.id == slid_id(browser))).one()
            assert row.expires_at > row.created_at + timedelta(seconds=1.5)  # moved on from its start
            time.sleep(1.7)  # past its lifetime without use
        # sent after its expiry (the browser would have dropped it; the server refuses it anyway)
        with TestClient(svc.client.app, cookies={"lstmlm_session": value}) as late:
            body = assert_problem(late.get("/v1/whoami"), 401)
            assert "expired" in body["detail"]
    finally:
        close()


def test_a_key_lists_and_ends_its_own_sessions_and_revoking_it_ends_them_all(world: World) -> None:
    row, secret = keys.create_key(world.svc.engine, "dave", "write")
    with (
        TestClient(world.svc.client.app, headers={"User-Agent": "laptop"}) as laptop,
        TestClient(world.svc.client.app, headers={"User-Agent": "phone"}) as phone,
        TestClient(world.svc.client.app) as alice,
    ):
        login(laptop, secret)
        login(phone, secret)
        login(alice, world.alice)
        listed = laptop.get("/v1/session").json()["items"]
        assert [(s["user_agent"], s["current"]) for s in listed] == [("phone", False), ("laptop", True)]
        assert set(listed[0]) == {"id", "created_at", "last_seen_at", "expires_at", "user_agent", "current"}
        by_bearer = world.svc.client.get("/v1/session", headers={"Authorization": f"Bearer {secret}"}).json()
        assert [s["user_agent"] for s in by_bearer["items"]] == ["phone", "laptop"]
        assert all(s["user_agent"] != "laptop" for s in alice.get("/v1/session").json()["items"])
        # another key cannot end them; the owner can end one from another session
        assert_problem(alice.delete(f"/v1/session/{listed[0]['id']}"), 404)
        assert_problem(laptop.delete("/v1/session/ses_unknown"), 404)
        assert laptop.delete(f"/v1/session/{listed[0]['id']}").status_code == 204
        assert_problem(phone.get("/v1/whoami"), 401)
        assert [s["user_agent"] for s in laptop.get("/v1/session").json()["items"]] == ["laptop"]
        # revoking the key ends every session it has; other keys' sessions live on
        login(phone, secret)
        keys.revoke_key(world.svc.engine, row.id)
        assert_problem(laptop.get("/v1/whoami"), 401)
        assert_problem(phone.get("/v1/jobs"), 401)
        assert all(r.ended_at is not None for r in session_rows(world.svc) if r.key_id == row.id)
        assert alice.get("/v1/whoami").json()["name"] == "alice"
        assert_problem(laptop.post("/v1/session", json={"key": secret}), 401)
        alice.delete("/v1/session")


def test_a_key_revoked_while_in_use_is_refused_by_the_next_request_of_every_api_process(world: World) -> None:
    """Keys are looked up on every request, not remembered: revoking one (here as `python -m app keys
    revoke` does, straight in the database) holds at once in a process that has just served it."""
    from app.main import create_app

    row, secret = keys.create_key(world.svc.engine, "erin", "read")
    headers = world.as_(secret)
    scored = {"model": world.done["id"], "sentences": SENTENCES}
    with TestClient(create_app(world.svc.settings)) as other:  # a second API process on the same database
        for client in (world.svc.client, other):
            assert client.get("/v1/whoami", headers=headers).json()["name"] == "erin"
            assert client.get("/v1/models", headers=headers).status_code == 200
        keys.revoke_key(world.svc.engine, row.id)
        for client in (world.svc.client, other):
            assert_problem(client.get("/v1/whoami", headers=headers), 401)
            assert_problem(client.post("/v1/score", json=scored, headers=headers), 401)
