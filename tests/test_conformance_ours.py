"""Our server must pass the server-agnostic conformance suite (conformance/) completely, and
the suite's command line must report skips by name, show progress and clean up after itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import ROOT, data_files

from conformance.runner import format_details, format_table, run_suite


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conformance", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_conformance_suite_passes_100_percent(make_server):
    """Every MUST/SHOULD check of conformance/ passes; none is skipped (we advertise all the
    extensions it covers, and --max-size makes the Tus-Max-Size checks run). Afterwards every
    upload the checks created has been terminated: no data file is left behind."""
    server = make_server("--max-size", "1G")
    results = run_suite(server.url)
    report = format_details(results) + "\n" + format_table(results)
    assert len(results) >= 50, report
    assert [r.check.name for r in results if r.outcome != "passed"] == [], report
    assert data_files(server.upload_dir) == []


def test_conformance_cli(make_server, tmp_path):
    """`python -m conformance URL` prints the table, names every skipped check with its reason
    (not just a count), shows one progress line per check on stderr, writes JSON, removes the
    uploads it created and exits 0 on a clean run."""
    server = make_server()
    out = tmp_path / "results.json"
    done = run_cli(server.url, "--only", "core", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "total" in done.stdout and "core" in done.stdout
    data = json.loads(out.read_text())
    assert data["summary"]["total"]["failed"] == 0
    skipped = [c["name"] for c in data["checks"] if c["outcome"] == "skipped"]
    assert skipped == ["tus_max_size_is_an_integer"]  # no --max-size: nothing to check
    assert data["summary"]["total"]["passed"] == len(data["checks"]) - 1 > 10
    # the skip is named with its reason in the report
    assert re.search(r"SKIP \[core\] tus_max_size_is_an_integer .*\n +no Tus-Max-Size", done.stdout)
    # progress: one line per check, numbered, with its outcome; then the cleanup line
    progress = re.findall(r"^\[ *(\d+)/(\d+)\] core::(\w+) (\w+)", done.stderr, re.M)
    assert [int(n) for n, *_ in progress] == list(range(1, len(data["checks"]) + 1))
    assert {name: outcome for *_, name, outcome in progress} == {
        c["name"]: c["outcome"] for c in data["checks"]
    }
    assert "uploads created by the checks were removed" in done.stderr
    assert data_files(server.upload_dir) == []


def test_conformance_cli_keep(make_server):
    """--keep leaves the uploads on the server (to inspect them); -q silences progress."""
    server = make_server()
    done = run_cli(server.url, "--only", "creation", "--keep", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert len(data_files(server.upload_dir)) >= 5
