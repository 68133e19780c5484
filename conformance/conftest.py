"""pytest adapter: `pytest conformance --tus-url URL` runs every check as one test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conformance.runner import Result, Target, format_table


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tus-url", help="creation URL of the tus server under test")
    parser.addoption("--tus-keep", action="store_true", help="keep the uploads the checks create")


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The server under test; the uploads the checks created are terminated at the end
    (as `python -m conformance` does) unless --tus-keep."""
    url = request.config.getoption("--tus-url")
    if not url:
        pytest.skip("no --tus-url given")
    target = Target.connect(url)
    yield target
    try:
        if not request.config.getoption("--tus-keep"):
            CLEANUP.append(target.cleanup())
    finally:
        target.close()


RESULTS: list[Result] = []
CLEANUP: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.write_line("")
        terminalreporter.write_line(format_table(RESULTS))
    for line in CLEANUP:
        terminalreporter.write_line(line)
