"""The admin dashboard in headless Chromium against a real server: opened with ?token= (also
from a link on another site), it follows uploads live (no reload), filters by status from the
keyboard, terminates and reprocesses through its buttons, pages with "Load more", fits a
phone-width screen, and runs under its strict CSP without a console error. Screenshots go to
browser.ARTIFACTS."""

from __future__ import annotations

import base64
import re
import sqlite3
from typing import Any

import httpx
from browser import open_page, screenshot
from conftest import TUS, create_upload, patch, wait_for
from playwright.sync_api import Browser, Page, expect

TOKEN = "browser-test-admin-token-0123"


def upload_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


def named(http: httpx.Client, url: str, length: int, name: str) -> str:
    meta = {"Upload-Metadata": f"filename {base64.b64encode(name.encode()).decode()}"}
    return create_upload(http, url, length, meta)


def row(page: Page, location: str) -> Any:
    return page.locator(f'[data-upload-id="{upload_id(location)}"]')


def job_run(server: Any, location: str) -> int:
    """The run number of the upload's job (one more per claim of the job)."""
    with sqlite3.connect(server.upload_dir / "tusserver.db") as db:
        found = db.execute("SELECT run FROM jobs WHERE id = ?", (upload_id(location),)).fetchone()
    return int(found[0]) if found else 0


def test_live_progress_filter_terminate_reprocess(browser: Browser, make_server: Any) -> None:
    server = make_server("--admin-token", TOKEN, "--plugins", "csv")
    http = httpx.Client(timeout=30)
    done = named(http, server.url, 8, "done.csv")
    assert patch(http, done, 0, b"a,b\n1,2\n").status_code == 204
    with open_page(browser, viewport={"width": 1280, "height": 800}) as (page, problems):
        page.goto(f"{server.origin}/dashboard?token={TOKEN}")
        expect(page).to_have_url(f"{server.origin}/dashboard")  # the token left the address
        expect(page.get_by_test_id("connection")).to_have_text("Live")
        expect(row(page, done).locator('[data-field="processing"]')).to_have_text("completed · ok")

        live = named(http, server.url, 1000, "live.csv")
        live_row = row(page, live)
        expect(live_row.locator('[data-field="name"]')).to_have_text("live.csv")
        expect(live_row.locator('[data-field="offset"]')).to_have_text("0 B (0 %)")
        expect(page.get_by_test_id("announcer")).to_contain_text("new upload live.csv")
        assert patch(http, live, 0, b"x" * 400).status_code == 204
        expect(live_row.locator('[data-field="offset"]')).to_have_text("400 B (40 %)")
        expect(live_row.locator("progress")).to_have_attribute("value", "40")
        expect(page.get_by_test_id("total-in-flight")).to_have_text("1")
        expect(live_row.get_by_role("button", name="Reprocess live.csv")).to_be_hidden()

        page.keyboard.press("Tab")  # the filter is the first control
        expect(page.get_by_label("Show")).to_be_focused()
        page.get_by_label("Show").select_option("uploading")
        expect(row(page, done)).to_have_count(0)
        expect(live_row).to_be_visible()
        page.get_by_label("Show").select_option("completed")
        expect(row(page, done)).to_be_visible()
        expect(live_row).to_have_count(0)
        page.get_by_label("Show").select_option("")

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Terminate live.csv").click()
        expect(live_row).to_have_attribute("data-status", "terminated")
        # the button's announcement, or the live view's that follows it
        expect(page.get_by_test_id("announcer")).to_have_text(re.compile(r"live\.csv:? terminated"))
        assert http.head(live, headers=TUS).status_code == 410
        expect(live_row.get_by_role("button", name="Terminate live.csv")).to_be_hidden()

        assert job_run(server, done) == 1
        page.get_by_role("button", name="Reprocess done.csv").click()
        expect(page.get_by_test_id("announcer")).to_contain_text(
            "Processing of done.csv queued again"
        )
        wait_for(lambda: job_run(server, done) == 2, 15, "the job to run again")  # a real rerun
        expect(row(page, done).locator('[data-field="processing"]')).to_have_text("completed · ok")
        screenshot(page, "dashboard")

        page.set_viewport_size({"width": 360, "height": 800})
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, "dashboard-phone")
        assert not problems.all(), problems


def test_load_more_pages_past_the_live_list(browser: Browser, make_server: Any) -> None:
    server = make_server("--admin-token", TOKEN)
    http = httpx.Client(timeout=30)
    oldest = [named(http, server.url, 5, f"old-{i}.bin") for i in range(3)]
    newest = [create_upload(http, server.url, 5) for _ in range(50)]
    with open_page(browser) as (page, problems):
        page.goto(f"{server.origin}/dashboard?token={TOKEN}")
        expect(page.locator("[data-upload-id]")).to_have_count(50)
        expect(row(page, newest[-1])).to_be_visible()
        page.get_by_role("button", name="Load more").click()
        expect(page.locator("[data-upload-id]")).to_have_count(53)
        expect(page.get_by_role("button", name="Load more")).to_be_hidden()
        expect(page.locator("[data-upload-id]").last).to_have_attribute(
            "data-upload-id", upload_id(oldest[0])
        )
        assert not problems.all(), problems


def test_without_the_token_the_page_says_how_to_open_it(browser: Browser, make_server: Any) -> None:
    server = make_server("--admin-token", TOKEN)
    with open_page(browser) as (page, problems):
        response = page.goto(f"{server.origin}/dashboard")
        assert response is not None and response.status == 401
        expect(page.get_by_role("heading", level=1)).to_have_text("Admin token required")
        expect(page.get_by_test_id("login-example")).to_have_text("/dashboard?token=<token>")
        assert page.evaluate("window.cspViolations") == 0
        assert not problems.page_errors and not problems.csp_violations


def test_login_link_from_another_site(browser: Browser, make_server: Any) -> None:
    """A ?token= link clicked on another site's page (a log viewer, a chat) opens the working
    dashboard. The navigation is cross-site, so a redirect would lose the SameSite=Strict
    cookie on its way (the API's 303 login shows it: its redirected request is refused);
    the page's login answers 200 and moves on by itself, a same-site navigation."""
    server = make_server("--admin-token", TOKEN)
    elsewhere = "http://logs.elsewhere.test/"
    links = (
        f'<a id="api" href="{server.origin}/admin/api/stats?token={TOKEN}">API</a>'
        f'<a id="dashboard" href="{server.origin}/dashboard?token={TOKEN}">dashboard</a>'
    )
    with open_page(browser) as (page, problems):
        page.route(
            elsewhere + "**",
            lambda route: route.fulfill(content_type="text/html", body=f"<p>{links}</p>"),
        )
        page.goto(elsewhere)
        with page.expect_navigation(url=f"{server.origin}/admin/api/stats"):
            page.click("#api")
        assert "admin token required" in page.content()  # cross-site indeed: cookie withheld

        page.goto(elsewhere)
        page.click("#dashboard")
        expect(page).to_have_url(f"{server.origin}/dashboard")  # the token left the address
        expect(page.get_by_test_id("connection")).to_have_text("Live")
        expect(page.get_by_test_id("total-in-flight")).to_have_text("0")
        assert not problems.page_errors and not problems.csp_violations
