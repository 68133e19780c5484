"""pytest adapter: `pytest conformance --tus-url URL` runs every check as one test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conformance.runner import Result, Target, format_table, format_versions


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tus-url", help="creation URL of the tus server under test")
    parser.addoption("--tus-keep", action="store_true", help="keep the uploads the checks create")
    parser.addoption(
        "--ietf-versions",
        help="interop versions of the IETF draft to check, e.g. 3,5,6 (default: detect them)",
    )


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The server under test; the uploads the checks created are terminated at the end
    (as `python -m conformance` does) unless --tus-keep."""
    url = request.config.getoption("--tus-url")
    if not url:
        pytest.skip("no --tus-url given")
    target = Target.connect(url)
    versions = request.config.getoption("--ietf-versions")
    if versions:
        target.ietf_requested = tuple(int(n) for n in versions.split(","))
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
        per_version = format_versions(RESULTS)
        if per_version:
            terminalreporter.write_line("")
            terminalreporter.write_line(per_version)
    for line in CLEANUP:
        terminalreporter.write_line(line)
