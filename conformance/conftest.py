"""pytest adapter: `pytest conformance --tus-url URL` runs every check as one test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conformance.runner import Result, Target, format_table


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tus-url", help="creation URL of the tus server under test")


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    url = request.config.getoption("--tus-url")
    if not url:
        pytest.skip("no --tus-url given")
    target = Target.connect(url)
    yield target
    target.close()


RESULTS: list[Result] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.write_line("")
        terminalreporter.write_line(format_table(RESULTS))
