"""Headless Chromium for the browser tests: Debian's `chromium`, driven by Playwright.

Playwright's own browser downloads are not used (no network for them, and `make test` must not
depend on them): the system browser is launched through `executable_path`, with the flags that
keep it off the network and able to run as root. One browser serves the whole test session (a
launch costs about a second and CI has two cores); each test opens its own context, so cookies,
localStorage and caches never leak between tests. `make test` installs the browser
(tests/install-services.sh); when it is missing the tests fail rather than skip, so a CI machine
without it cannot pass unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("TUSSERVER_CHROMIUM", "/usr/bin/chromium"))
# Screenshots and other artifacts of the browser tests (not committed: build/ is ignored).
ARTIFACTS = Path(os.environ.get("TUSSERVER_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
# Root needs --no-sandbox; the rest keep Chromium from calling home (refused here, and slow).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


class SharedBrowser:
    """Chromium under Playwright's sync API, shared by the session's tests.

    The sync API runs its asyncio loop in a greenlet and, between calls, leaves that loop set
    as the thread's running loop; asyncio.run() (the anyio tests) then fails with "Cannot run
    the event loop while another loop is running". So the loop is set only while a browser
    test runs (`in_use`, behind the `browser` fixture) and unset between them.
    """

    def __init__(self, browser: Browser, loop: asyncio.AbstractEventLoop):
        self.browser = browser
        self.loop = loop

    @contextlib.contextmanager
    def in_use(self) -> Iterator[Browser]:
        asyncio._set_running_loop(self.loop)
        try:
            yield self.browser
        finally:
            asyncio._set_running_loop(None)


@contextlib.contextmanager
def running_browser() -> Iterator[SharedBrowser]:
    """The system Chromium, headless, until the block ends (behind the `browser` fixture)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run `make test` (tests/install-services.sh) as root")
    playwright = sync_playwright().start()
    shared = SharedBrowser(
        playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        ),
        asyncio.get_running_loop(),  # Playwright's, set by the calls above
    )
    asyncio._set_running_loop(None)
    try:
        yield shared
    finally:
        with shared.in_use() as browser:
            browser.close()
            playwright.stop()


# Reports Content-Security-Policy violations to the test through an exposed binding, and
# counts them in window.cspViolations (for page.wait_for_function: the report comes first);
# runs before any of the page's scripts (an init script is not subject to the page's CSP).
_CSP_LISTENER = """
window.cspViolations = 0;
document.addEventListener("securitypolicyviolation", (event) => {
  window.__reportCspViolation(
    `${event.effectiveDirective} blocked ${event.blockedURI || "inline"}` +
      ` (${event.sourceFile || "page"}:${event.lineNumber})`
  );
  window.cspViolations += 1;
});
"""


@dataclass
class Problems:
    """What went wrong in a page: console errors, uncaught exceptions and CSP violations."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return [*self.console_errors, *self.page_errors, *self.csp_violations]


def watch(page: Page) -> Problems:
    """Start collecting `page`'s problems (call before its first navigation); tests end with
    `assert not problems.all()`. Chromium also logs each CSP violation as a console error."""
    problems = Problems()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.console_errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.page_errors.append(str(error)))
    page.expose_function("__reportCspViolation", lambda text: problems.csp_violations.append(text))
    page.add_init_script(_CSP_LISTENER)
    return problems


@contextlib.contextmanager
def open_page(browser: Browser, **context_options: Any) -> Iterator[tuple[Page, Problems]]:
    """A page in a fresh browser context (own storage), watched for problems; closed after."""
    context = browser.new_context(**context_options)
    try:
        page = context.new_page()
        yield page, watch(page)
    finally:
        context.close()


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of the page under ARTIFACTS (CI keeps them; they are never committed)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / (re.sub(r"[^\w.-]+", "-", name) + ".png")
    page.screenshot(path=str(path), full_page=full_page)
    return path
