"""The dashboard with authentication on, in a real browser: it asks for a key once (the login form),
keeps a session (not the key) in the HttpOnly, SameSite=Strict cookie `lstmlm_session`, shows only
what the key may see and hides the actions its scope does not allow; logging out ends the session
and clears the cookie, and revoking the key sends its browsers back to the login form.

No worker runs here: queued jobs and jobs canceled while queued are all these pages need.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from app.auth import keys
from app.store.db import make_engine, write_session
from app.store.tables import ApiKey
from web.live import LiveService, allow_console_errors, open_page, screenshot, serve

COOKIE = "lstmlm_session"


@dataclass
class Owner:
    """A key and what it made: a queued job and a canceled one."""

    name: str
    secret: str
    dataset: dict[str, Any]
    queued: dict[str, Any]
    canceled: dict[str, Any]


@dataclass
class World:
    live: LiveService
    alice: Owner  # a write key
    bob: Owner  # another write key
    carol: Owner  # made her things with scope write, then lowered to read


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def things_of(live: LiveService, name: str, secret: str) -> Owner:
    dataset = live.upload(f"{name}'s corpus", headers=bearer(secret))
    queued = live.submit(dataset["id"], headers=bearer(secret))
    canceled = live.submit(dataset["id"], headers=bearer(secret))
    response = live.http.post(f"/v1/jobs/{canceled['id']}/cancel", headers=bearer(secret))
    assert response.status_code == 200 and response.json()["status"] == "canceled", response.text
    return Owner(name, secret, dataset, queued, canceled)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with serve(tmp_path_factory.mktemp("web-auth"), worker=False, auth=True) as live:
        engine = make_engine(live.settings.resolved_database_url)
        try:
            made = {name: keys.create_key(engine, name, "write") for name in ("alice", "bob", "carol")}
            owners = {name: things_of(live, name, secret) for name, (_, secret) in made.items()}
            # A read key cannot make anything, so carol's key is lowered to read after she made her jobs:
            # her dashboard then shows jobs she owns but may not cancel or delete.
            with write_session(engine) as session:
                session.execute(update(ApiKey).where(ApiKey.id == made["carol"][0].id).values(scope="read"))
            yield World(live, owners["alice"], owners["bob"], owners["carol"])
        finally:
            engine.dispose()


@pytest.fixture
def page(browser: Any, world: World) -> Iterator[Any]:
    with open_page(browser, world.live.url) as page:
        yield page


def log_in(page: Any, secret: str, path: str = "/") -> None:
    """Open `path`, get sent to the login form, log in and come back."""
    allow_console_errors(page, r"status of 401 .* at .*/v1/whoami$")  # the refusal that sends it there
    page.goto(path)
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("#key", secret)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(path) + "$"))


def key_cookies(page: Any) -> list[dict[str, Any]]:
    return [c for c in page.context.cookies() if c["name"] == COOKIE]


def test_login_once_in_an_httponly_strict_cookie_shows_only_the_keys_jobs_and_logout_clears_it(
    world: World, page: Any
) -> None:
    alice, bob = world.alice, world.bob
    # The login page asks the API nothing before a key is given: no refusal on its console.
    refusals: list[str] = []
    page.on("console", lambda message: refusals.append(message.text) if message.type == "error" else None)
    page.goto("/login")
    page.wait_for_load_state("networkidle")
    assert refusals == []
    # Then a page that needs a key is refused (401) and sends the browser to the login form.
    allow_console_errors(page, r"status of 401 .* at .*/v1/(whoami|session)$")
    page.goto("/")
    page.wait_for_url(re.compile(r"/login\?next=%2F$"))
    page.fill("#key", "lsk_" + "x" * 43)
    page.click("button[type=submit]")
    expect(page.locator('.field[data-field="key"] .error')).to_contain_text("not valid")
    assert key_cookies(page) == []

    page.fill("#key", alice.secret)
    page.click("button[type=submit]")
    page.wait_for_url(f"{world.live.url}/")
    [cookie] = key_cookies(page)
    assert cookie["value"].startswith("lss_") and alice.secret not in cookie["value"]  # a session id, not the key
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert 11.9 * 3600 < cookie["expires"] - time.time() <= 12 * 3600  # LSTMLM_SESSION_HOURS
    assert cookie["path"] == "/" and cookie["secure"] is False  # plain http here; https sets Secure
    assert COOKIE not in page.evaluate("document.cookie")  # the page's scripts cannot read it
    expect(page.locator("#whoami")).to_have_text("alice · write")

    # Only alice's jobs: bob's is absent from the same list.
    for job in (alice.queued, alice.canceled):
        expect(page.locator(f'tr[data-job-id="{job["id"]}"]')).to_be_visible()
    expect(page.locator("#jobs tbody tr")).to_have_count(2)
    expect(page.locator(f'tr[data-job-id="{bob.queued["id"]}"]')).to_have_count(0)
    expect(page.get_by_role("link", name="New job")).to_be_visible()
    expect(page.locator("nav a", has_text="Submit")).to_be_visible()
    screenshot(page, "auth-jobs-write")

    # Asked once: every other page opens with the cookie, no login in between.
    page.goto(f"/jobs/{alice.queued['id']}")
    expect(page.locator("#status")).to_have_text("queued")
    expect(page.locator("#cancel")).to_be_visible()
    expect(page.locator("#delete")).to_be_hidden()
    page.goto(f"/jobs/{alice.canceled['id']}")
    expect(page.locator("#status")).to_have_text("canceled")
    expect(page.locator("#delete")).to_be_visible()
    expect(page.locator("#cancel")).to_be_hidden()

    # Another key's job is not found, as if it did not exist.
    allow_console_errors(page, rf"status of 404 .* at .*/v1/jobs/{bob.queued['id']}$")
    page.goto(f"/jobs/{bob.queued['id']}")
    expect(page.locator("#not-found")).to_contain_text(f"No job has the id {bob.queued['id']}.")
    expect(page.locator("#job")).to_be_hidden()
    expect(page.locator("#flash")).to_be_hidden()

    page.goto("/submit")
    expect(page.locator("#job-form")).to_be_visible()
    expect(page.locator("#upload-form")).to_be_visible()
    expect(page.locator("#no-write")).to_be_hidden()
    expect(page.locator("#builtin-form")).to_be_hidden()  # server-side corpora are for admins
    expect(page.locator(f'#dataset_id option[value="{alice.dataset["id"]}"]')).to_have_count(1)
    expect(page.locator(f'#dataset_id option[value="{bob.dataset["id"]}"]')).to_have_count(0)
    expect(page.locator("#ov-hidden_size")).to_have_attribute("placeholder", "200")  # the presets loaded
    expect(page.locator("#flash")).to_be_hidden()  # and nothing was refused on the way
    assert page.url.endswith("/submit")

    page.click("#logout")
    page.wait_for_url(re.compile(r"/login$"))
    assert key_cookies(page) == []
    page.goto("/")
    page.wait_for_url(re.compile(r"/login\?next="))  # asked again


def test_a_read_key_sees_no_submit_upload_cancel_or_delete(world: World, page: Any) -> None:
    carol = world.carol
    log_in(page, carol.secret)
    expect(page.locator("#whoami")).to_have_text("carol · read")
    expect(page.locator(f'tr[data-job-id="{carol.queued["id"]}"]')).to_be_visible()
    expect(page.locator("#jobs tbody tr")).to_have_count(2)
    expect(page.get_by_role("link", name="New job")).to_be_hidden()
    expect(page.locator("nav a", has_text="Submit")).to_be_hidden()
    screenshot(page, "auth-jobs-read")

    page.goto(f"/jobs/{carol.queued['id']}")
    expect(page.locator("#status")).to_have_text("queued")
    expect(page.locator("#facts")).to_contain_text("test")  # the job itself is shown
    expect(page.locator("#cancel")).to_be_hidden()
    page.goto(f"/jobs/{carol.canceled['id']}")
    expect(page.locator("#status")).to_have_text("canceled")
    expect(page.locator("#delete")).to_be_hidden()

    page.goto("/submit")
    expect(page.locator("#no-write")).to_be_visible()
    expect(page.locator("#job-form")).to_be_hidden()
    expect(page.locator("#upload-form")).to_be_hidden()
    expect(page.locator("#flash")).to_be_hidden()
    screenshot(page, "auth-submit-read")

    page.goto("/scorings")  # the list, without the form
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#scoring-form")).to_be_hidden()
    expect(page.locator("#flash")).to_be_hidden()

    # The API agrees with what the page hides.
    refused = world.live.http.post(f"/v1/jobs/{carol.queued['id']}/cancel", headers=bearer(carol.secret))
    assert refused.status_code == 403


def test_a_write_key_deletes_its_finished_job_from_the_page(world: World, page: Any) -> None:
    alice = world.alice
    log_in(page, alice.secret, f"/jobs/{alice.canceled['id']}")
    expect(page.locator("#status")).to_have_text("canceled")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    page.wait_for_url(f"{world.live.url}/")
    expect(page.locator(f'tr[data-job-id="{alice.queued["id"]}"]')).to_be_visible()
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    gone = world.live.http.get(f"/v1/jobs/{alice.canceled['id']}", headers=bearer(alice.secret))
    assert gone.status_code == 404


def test_the_pager_walks_a_keys_jobs_page_by_page(world: World, page: Any) -> None:
    engine = make_engine(world.live.settings.resolved_database_url)
    try:
        secret = keys.create_key(engine, "dave", "write")[1]
    finally:
        engine.dispose()
    dataset = world.live.upload("dave's corpus", headers=bearer(secret))
    made = []
    for _ in range(52):  # canceled at once: the key's queue quota stays free
        job = world.live.submit(dataset["id"], headers=bearer(secret))
        world.live.http.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer(secret))
        made.append(job["id"])
    newest_first = made[::-1]
    rows, buttons = page.locator("#jobs tbody tr"), {b: page.locator(f"#{b}") for b in ("newest", "newer", "older")}

    def shows(ids: list[str], newest: bool, newer: bool, older: bool) -> None:
        expect(rows).to_have_count(len(ids))
        assert [rows.nth(i).get_attribute("data-job-id") for i in range(len(ids))] == ids
        for name, enabled in (("newest", newest), ("newer", newer), ("older", older)):
            expect(buttons[name]).to_be_enabled(enabled=enabled)

    log_in(page, secret)
    shows(newest_first[:50], newest=False, newer=False, older=True)
    buttons["older"].click()
    shows(newest_first[50:], newest=True, newer=True, older=False)
    buttons["newer"].click()
    shows(newest_first[:50], newest=False, newer=False, older=True)
    buttons["older"].click()
    expect(rows).to_have_count(2)
    buttons["newest"].click()
    shows(newest_first[:50], newest=False, newer=False, older=True)


def test_a_logged_out_or_revoked_session_is_sent_back_to_the_login_form(world: World, page: Any) -> None:
    allow_console_errors(page, r"status of 401 .* at .*/v1/")  # every request of an ended session is refused
    engine = make_engine(world.live.settings.resolved_database_url)
    try:
        row, secret = keys.create_key(engine, "erin", "read")
        log_in(page, secret, "/scorings")
        expect(page.locator("#whoami")).to_have_text("erin · read")
        [cookie] = key_cookies(page)
        listed = world.live.http.get("/v1/session", headers=bearer(secret)).json()["items"]
        assert [s["current"] for s in listed] == [False]  # asked with the key, not the session

        page.click("#logout")
        page.wait_for_url(re.compile(r"/login$"))
        page.context.add_cookies([cookie])  # the cookie kept after logging out is refused
        page.goto("/")
        page.wait_for_url(re.compile(r"/login\?next="))

        log_in(page, secret, "/compare")
        keys.revoke_key(engine, row.id)
        page.goto("/playground")
        page.wait_for_url(re.compile(r"/login\?next="))
        assert (
            world.live.http.get(
                "/v1/whoami", headers={"Cookie": f"{COOKIE}={key_cookies(page)[0]['value']}"}
            ).status_code
            == 401
        )
    finally:
        engine.dispose()
