"""The admin page in a real browser (Debian's Chromium, driven by Playwright) against a real server.

A support engineer signs in, finds an account by a device id, pages through a
timeline of 1,000 events, filters it, opens an event, looks at a past state and
its difference to now, reads why a download was denied, runs a what-if and sees
the read side's lag. A support token sees no command button; an admin's does.
Screenshots of each view go to the test's folder (and, with
``ADMIN_SCREENSHOTS=<dir>``, there too: that is how docs/admin/ is made).
Without JavaScript the page says it needs it, and its sign-in form never puts
the token in a URL. The API documentation pages served beside it work with no
other host reachable.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from downloads.application import AcquireLicense, DeactivateDevice, OpenAccount, RegisterDevice
from downloads.bootstrap import bootstrap
from downloads.domain import DomainError
from downloads.settings import Settings
from tests.support.server import Server, running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _build_store(path: Path) -> None:
    """An account of 1,000+ events (devices registered and deactivated), with a license, a request
    answered without a change, and a denial."""
    runtime = bootstrap(Settings(store=f"sqlite:///{path}", snapshot_every=100))
    service = runtime.service
    try:
        service.handle(OpenAccount("acct-big", "basic"))
        for n in range(500):
            service.handle(RegisterDevice("acct-big", f"dev-{n}", "old phone"))
            service.handle(DeactivateDevice("acct-big", f"dev-{n}"))
        service.handle(RegisterDevice("acct-big", "phone-77", "phone"))
        service.handle(RegisterDevice("acct-big", "tablet-9", "tablet"))
        service.handle(AcquireLicense("acct-big", "phone-77", "demo-title-1"))
        # asked again under a key: answered without a change, the key kept by a RequestAnswered event
        service.handle(AcquireLicense("acct-big", "phone-77", "demo-title-1"), idempotency_key="asked-again")
        with pytest.raises(DomainError):
            service.handle(AcquireLicense("acct-big", "tablet-9", "demo-title-1"), idempotency_key="why-denied")
        service.handle(OpenAccount("acct-gone", "basic"))
        service.handle(RegisterDevice("acct-gone", "gone-phone", "phone"))
        service.erase("acct-gone", by="dpo")
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("admin")
    _build_store(folder / "downloads.db")
    with running_server(folder, store=f"sqlite:///{folder / 'downloads.db'}") as running:
        with running.client(role="support") as http:  # the read side catches up in the background
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                found = http.get("/v1/lookup", params={"device_id": "phone-77"})
                if found.status_code == 200 and found.json()["accounts"]:
                    break
                time.sleep(0.2)
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is needed for the admin page tests: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    opened.goto(server.url + "/admin")
    try:
        yield opened
    finally:
        context.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _shot(page: Any, tmp_path: Path, name: str, part: str | None = None) -> None:
    """A screenshot of the page (and, for the docs, of the part of it this view is about)."""
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    docs = os.environ.get("ADMIN_SCREENSHOTS")
    if docs:
        Path(docs).mkdir(parents=True, exist_ok=True)
        target = page.locator(part) if part else page
        target.screenshot(path=str(Path(docs) / f"{name}.png"))


def _sign_in(page: Any, token: str) -> None:
    page.get_by_label("Support or admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_a_bad_token_is_refused_and_a_service_token_is_not_enough(page: Any, server: Server, tmp_path: Path) -> None:
    _sign_in(page, "not-a-token")
    page.get_by_text("That token was refused").wait_for()
    assert page.locator("#app").is_hidden()
    _sign_in(page, server.token("service"))
    page.get_by_text("needs a support or admin token").wait_for()
    assert page.locator("#app").is_hidden()
    _shot(page, tmp_path, "sign-in-refused")


def test_an_erased_account_shows_that_it_was_erased_and_nothing_else(page: Any, server: Server, tmp_path: Path) -> None:
    _sign_in(page, server.token("support"))
    page.get_by_text("signed in as support").wait_for()
    page.get_by_label("By").select_option("account")
    page.get_by_label("Value").fill("acct-big")
    page.get_by_role("button", name="Find").click()
    page.get_by_role("heading", name="Account acct-big").wait_for()
    page.get_by_label("Value").fill("acct-gone")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#status")).to_contain_text("Account acct-gone was erased on ")
    assert page.locator("#account").is_hidden()  # nor the account shown before
    page.get_by_label("By").select_option("device_id")
    page.get_by_label("Value").fill("gone-phone")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#status")).to_have_text("No account holds device_id gone-phone.")
    _shot(page, tmp_path, "erased")


def test_why_was_this_download_denied_answered_from_one_page(page: Any, server: Server, tmp_path: Path) -> None:
    _sign_in(page, server.token("support"))
    page.get_by_text("signed in as support").wait_for()
    # find the account by a device id (the lookup read model)
    page.get_by_label("By").select_option("device_id")
    page.get_by_label("Value").fill("phone-77")
    page.get_by_role("button", name="Find").click()
    page.get_by_role("heading", name="Account acct-big").wait_for()
    expect(page.locator("#status")).to_have_text("Account acct-big.")  # timeline and denials loaded
    _shot(page, tmp_path, "account")
    assert page.get_by_role("button", name="Deactivate").count() == 0  # support reads only

    # the timeline, 50 events a page: forward to the end and back
    rows = page.locator("#timeline tbody tr")
    expect(rows).to_have_count(50)
    assert rows.first.get_attribute("data-seq") == "1"
    seen = {rows.nth(i).get_attribute("data-seq") for i in range(rows.count())}
    pages = 1
    while page.get_by_role("button", name="Next page").is_enabled():
        page.get_by_role("button", name="Next page").click()
        expect(page.locator("#page-info")).to_contain_text(f"(page {pages + 1})")
        expect(rows.first).to_have_attribute("data-seq", str(pages * 50 + 1))
        pages += 1
        seen |= {rows.nth(i).get_attribute("data-seq") for i in range(rows.count())}
    total = len(seen)
    assert total >= 1000 and seen == {str(n) for n in range(1, total + 1)} and pages == -(-total // 50)
    page.get_by_role("button", name="Previous page").click()
    expect(page.locator("#page-info")).to_contain_text(f"(page {pages - 1})")
    _shot(page, tmp_path, "timeline", "#timeline")

    # filtered by type
    page.get_by_label("Event type").select_option("LicenseIssued")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    assert "LicenseIssued" in rows.first.inner_text()

    # an event and the state after it, and what changed since
    page.get_by_role("button", name="Open event").first.click()
    page.get_by_role("heading", name="LicenseIssued").wait_for()
    meta = page.locator("#event-meta").inner_text()
    assert "acquire_license" in meta and "schema version" in meta and "phone-77" in meta
    _shot(page, tmp_path, "event", "#event")
    page.get_by_label("Event type").select_option("RequestAnswered")
    page.get_by_role("button", name="Apply").click()
    expect(rows.first).to_contain_text("RequestAnswered")  # the filtered page replaced the one before
    expect(rows).to_have_count(1)
    assert "command=acquire_license" in rows.first.inner_text()
    page.get_by_label("Event type").select_option("")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#page-info")).to_contain_text("(page 1)")
    expect(rows).to_have_count(50)
    page.get_by_role("button", name="Open event 10").click()
    page.get_by_role("button", name="Difference to now").click()
    page.locator("#diff").wait_for()
    assert page.locator("#state-title").inner_text() == "State after event 10"
    diff = page.locator("#diff").inner_text()
    assert "version" in diff and "phone-77" in diff  # a device registered since
    # and between two points of the past: mark event 10, then compare event 20 with it
    page.get_by_role("button", name="Mark for comparison").click()
    page.get_by_text("event 10 is marked").wait_for()
    page.get_by_role("button", name="Open event 20").click()
    page.get_by_role("button", name="Difference to the marked event").click()
    expect(page.locator("#diff thead")).to_contain_text("after event 20")
    between = page.locator("#diff tbody").inner_text()
    assert "dev-5" in between and "dev-9" in between and "phone-77" not in between
    _shot(page, tmp_path, "state-and-diff", "#state")

    # the denial, with its reason
    denial = page.locator("#denials tbody tr").first.inner_text()
    assert "DEVICE_LIMIT_REACHED" in denial and "acquire_license" in denial and "tablet-9" in denial
    assert "the plan allows downloads on 1 device(s)" in denial
    _shot(page, tmp_path, "denials", "#denials")

    # what if the basic plan allowed two devices?
    page.get_by_label("Another policy (TOML)").fill(
        "[plans.basic]\ndownload_devices = 2\n[plans.standard]\ndownload_devices = 2\n"
        "[plans.premium]\ndownload_devices = 6\n"
    )
    page.get_by_role("button", name="Re-decide").click()
    page.get_by_text("1 decision(s) would change").wait_for()
    result = page.locator("#what-if tbody tr").first.inner_text()
    assert "denied (DEVICE_LIMIT_REACHED)" in result and "accepted" in result
    _shot(page, tmp_path, "what-if", "#what-if")

    # the read side's status and lag
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#projection-table tbody")).to_contain_text("licenses_by_title")
    projections = page.locator("#projection-table").inner_text()
    assert "lookup" in projections and "caught_up" in projections
    _shot(page, tmp_path, "projections", "#projections")


def test_an_admin_acts_through_the_ordinary_commands(page: Any, server: Server) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token('admin')}"}) as http:
        http.post("/v1/accounts", json={"account_id": "acct-admin", "plan": "premium"}).raise_for_status()
        http.post("/v1/accounts/acct-admin/devices", json={"device_id": "d1", "model": "m"}).raise_for_status()
    _sign_in(page, server.token("admin"))
    page.get_by_text("signed in as admin").wait_for()
    page.get_by_label("Value").fill("acct-admin")
    page.get_by_role("button", name="Find").click()
    page.get_by_role("heading", name="Account acct-admin").wait_for()
    expect(page.locator("#status")).to_have_text("Account acct-admin.")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Deactivate").click()
    page.get_by_text("Device d1 deactivated.").wait_for()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token('support')}"}) as http:
        assert http.get("/v1/accounts/acct-admin").json()["devices"][0]["status"] == "deactivated"


def test_the_page_is_usable_from_the_keyboard_and_every_field_has_a_label(page: Any, server: Server) -> None:
    page.keyboard.type(server.token("support"))  # the token field has the focus
    page.keyboard.press("Enter")
    page.get_by_text("signed in as support").wait_for()
    page.keyboard.type("acct-big")  # then the search field
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Account acct-big").wait_for()
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
             .filter(f => !document.querySelector(`label[for="${f.id}"]`)).map(f => f.id)"""
    )
    assert unlabelled == []


def test_with_javascript_off_the_page_says_so_and_its_form_never_puts_the_token_in_a_url(
    browser: Any, server: Server, tmp_path: Path
) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sent: list[str] = []
        page.on("request", lambda request: sent.append(request.url))
        page.goto(server.url + "/admin")
        token = server.token("support")

        # Sent anyway, as the browser sends it when someone presses Enter before (or without) the script:
        # Playwright fills and submits it from outside the page, whose own scripts do not run.
        page.locator("#token").evaluate("(field, token) => { field.value = token; }", token)
        with page.expect_navigation():
            page.locator("#sign-in-form").evaluate("form => form.requestSubmit()")
        assert len(sent) >= 2 and all(token not in url for url in sent), sent
        assert token not in page.url

        page.goto(server.url + "/admin")
        expect(page.get_by_text("turn JavaScript on to sign in")).to_be_visible()
        assert page.locator("#token").is_hidden()  # nothing to type a token into
        _shot(page, tmp_path, "no-javascript")
    finally:
        context.close()


@pytest.mark.parametrize(("path", "shows"), [("/docs", "/v1/accounts/{account_id}"), ("/redoc", "Open Account")])
def test_the_api_documentation_pages_work_with_no_other_host_reachable(
    browser: Any, server: Server, path: str, shows: str, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        elsewhere: list[str] = []
        refused: list[str] = []

        def only_this_server(route: Any) -> None:
            if route.request.url.startswith(server.url + "/"):
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort()

        context.route("**/*", only_this_server)
        page.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)
        page.goto(server.url + path)
        page.get_by_text(shows, exact=True).filter(visible=True).first.wait_for()
        if path == "/redoc":  # its search runs in a worker the policy allows
            page.get_by_placeholder("Search...").fill("acquire")
            expect(page.locator("[data-role='search:results']")).to_contain_text("Acquire License")
        _shot(page, tmp_path, path.strip("/"))
        assert elsewhere == []  # nothing was asked of another host
        # Nothing the viewers run was refused. (Redoc's footer asks its maker's site for a logo: the
        # policy refuses it before it leaves the browser, and the footer shows its name alone.)
        assert [m for m in refused if "script" in m.lower()] == [], refused
        if path == "/docs":
            assert [m for m in refused if "Content Security Policy" in m] == [], refused
    finally:
        context.close()
