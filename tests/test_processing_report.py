"""Results people can read: `result` beside `status`, the running error count, the log line,
one encoding for validate and csv, and the full malformed-row report (errors.csv, .ndjson).

Against a real server (tuspy uploads, /status polled until the job ends); expected line
numbers come from Python's csv module, never from the server's answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import start_blocking_portal
from conftest import TUS, EventWatcher, ServerProcess, wait_for
from test_processing import final_status, status, tuspy_upload

from tusserver.processing.csvplugin import CsvPlugin
from tusserver.processing.encoding import EncodingSniffer, detect_encoding
from tusserver.processing.jobs import ERROR_BATCH, LOST, RegistryErrorSink
from tusserver.processing.plugin import MAX_EXCERPT, Context, ErrorSink
from tusserver.processing.validate import ValidatePlugin
from tusserver.registry import COMPLETE, TERMINATED, UploadInfo
from tusserver.registry.sqlite import SqliteRegistry

PLUGINS = ("--plugins", "validate,csv")
LINE_NUMBER = re.compile(r"line \d")


def ragged_csv(bad: int) -> tuple[bytes, list[tuple[int, str]]]:
    """A CSV with `bad` rows of the wrong width among good ones (some good rows span two
    lines, so physical lines and record numbers differ); and the oracle: (line, raw row) of
    every malformed record, from csv.reader's line counter."""
    table: list[list[str]] = [["id", "name", "note"]]
    for i in range(bad * 3):
        if i % 3 == 1:
            table.append([str(i), "x"] if i % 2 else [str(i), "x", "y", "z"])
        else:
            table.append([str(i), f"n{i}", "two\nlines" if i % 5 == 0 else "plain, ok"])
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows(table)
    text = out.getvalue()
    expected = []
    reader = csv.reader(io.StringIO(text, newline=""))
    end = 0
    for row in reader:
        start, end = end + 1, reader.line_num
        if len(row) != 3:
            expected.append((start, ",".join(row)))
    assert len(expected) == bad
    return text.encode(), expected


def create(server: ServerProcess, length: int) -> str:
    response = httpx.post(server.url, headers={**TUS, "Upload-Length": str(length)})
    assert response.status_code == 201
    return response.headers["Location"]


def test_full_report_beyond_max_errors(make_server):
    """250 bad rows, --csv-max-errors 100 (default): /status keeps 100, the result says
    completed_with_errors, every event has the running count, the log line gives it, and
    both report formats hold all 250 rows with the csv module's line numbers."""
    server = make_server(*PLUGINS)
    data, expected = ragged_csv(250)
    location = create(server, len(data))
    watcher = EventWatcher(location)
    response = httpx.patch(
        location,
        content=data,
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert response.status_code == 204
    doc = final_status(location)
    events = watcher.wait_end()

    assert (doc["status"], doc["result"]) == ("completed", "completed_with_errors")
    job = doc["processing"]
    assert (job["result"], job["error_count"]) == ("completed_with_errors", 250)
    csv_result = job["results"]["csv"]
    assert (csv_result["errors_total"], len(csv_result["errors"])) == (250, 100)
    assert job["results"]["validate"]["encoding"] == csv_result["encoding"] == "ascii"

    processing = [e["processing"] for e in events if e["processing"] is not None]
    assert processing, "no processing events"
    counts = [p["error_count"] for p in processing]  # present in every one
    assert counts == sorted(counts) and counts[-1] == 250
    assert [e["result"] for e in events[:-1]] == [None] * (len(events) - 1)
    assert events[-1]["result"] == "completed_with_errors"

    upload_id = location.rsplit("/", 1)[1]
    logged = wait_for(
        lambda: [ln for ln in server.log().splitlines() if f"processing {upload_id} comp" in ln],
        what="finished-job log line",
    )
    assert (
        f"INFO tusserver.processing processing {upload_id} completed_with_errors: 250"
        in (logged[0])
    )

    report = httpx.get(location + "/errors.csv")
    assert report.status_code == 200
    assert report.headers["content-type"] == "text/csv; charset=utf-8"
    assert report.headers["x-report-complete"] == "true"
    rows = list(csv.DictReader(io.StringIO(report.text, newline="")))
    assert [(int(r["line"]), r["excerpt"]) for r in rows] == expected
    assert {(r["plugin"], r["kind"]) for r in rows} == {("csv", "wrong column count")}
    assert not any(LINE_NUMBER.search(r["message"]) for r in rows)
    assert rows[0]["message"] == f"expected 3 fields, got {expected[0][1].count(',') + 1}"

    ndjson = httpx.get(location + "/errors.ndjson")
    assert ndjson.headers["content-type"] == "application/x-ndjson"
    records = [json.loads(line) for line in ndjson.text.splitlines()]
    assert [(r["line"], r["excerpt"]) for r in records] == expected
    assert records[0] == {**rows[0], "line": expected[0][0]}


def test_failed_job_logs_warning_with_line_once(make_server):
    server = make_server(*PLUGINS)
    location = tuspy_upload(server.url, b"a,b\n1,2\n\x00\x01binary\n")
    doc = final_status(location)
    assert (doc["status"], doc["result"]) == ("failed", "failed")
    error = doc["processing"]["error"]
    assert error == "csv: line 3: binary data, not CSV text (NUL byte)"
    assert doc["processing"]["results"]["csv"]["line"] == 3
    upload_id = location.rsplit("/", 1)[1]
    lines = wait_for(
        lambda: [ln for ln in server.log().splitlines() if f"processing {upload_id} failed" in ln],
        what="failed-job log line",
    )
    assert " WARNING tusserver.processing " in lines[0]
    assert lines[0].count("line 3") == 1
    assert not [ln for ln in server.log().splitlines() if " ERROR " in ln]
    report = httpx.get(location + "/errors.csv")
    assert report.status_code == 200 and report.text == "line,plugin,kind,message,excerpt\r\n"


ENCODED = {
    "ascii": b"name,city\nJoe,Paris\n",
    "utf-8": "name,city\nZoë,Köln\n".encode(),
    "utf-8-sig": "\ufeffname,city\nZoë,Köln\n".encode(),
    "latin-1": "name,city\nZoë,Köln\n".encode("latin-1"),
}


@pytest.mark.parametrize("encoding", sorted(ENCODED))
def test_validate_and_csv_report_the_same_encoding(make_server, encoding):
    server = make_server(*PLUGINS)
    doc = final_status(tuspy_upload(server.url, ENCODED[encoding]))
    results = doc["processing"]["results"]
    assert results["validate"]["encoding"] == results["csv"]["encoding"] == encoding
    assert doc["result"] == "ok"


def run_plugin(plugin: Any, data: bytes, chunk: int) -> dict[str, Any]:
    plugin.start(Context("x" * 32, len(data)))
    for i in range(0, len(data), chunk):
        plugin.feed(data[i : i + chunk])
    return dict(plugin.finish())


LATE_LATIN1 = b"id,text\n" + b"1,plain ascii\n" * 20_000 + "2,Köln\n".encode("latin-1")
BROKEN_UTF8 = b"id,text\n1,plain\n" + "2,Zoë\n3,".encode() + b"\xff\n"
BROKEN_FIRST = b"id,text\n1,\xff\n" + "2,Zoë\n".encode()
BOM_ONLY = b"\xef\xbb\xbfa,b\n1,2\n"


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        *((data, name) for name, data in ENCODED.items()),
        (LATE_LATIN1, "latin-1"),  # the first non-ASCII byte is past 256 KiB
        (BROKEN_UTF8, "utf-8"),  # valid UTF-8 first, a broken byte later
        (BROKEN_FIRST, "utf-8"),  # a broken byte, then valid UTF-8 in the window
        (BOM_ONLY, "utf-8-sig"),
        ("é".encode()[:1], "latin-1"),  # a cut character at the end of the file
    ],
)
@pytest.mark.parametrize("chunk", [1, 3, 4096, 1 << 22])
def test_encoding_agrees_whatever_the_chunking(data, encoding, chunk):
    """One sniffer, and its answer does not depend on where chunks are cut."""
    assert detect_encoding(data) == encoding
    if chunk < 4 and len(data) > 100_000:
        return  # byte-by-byte over 256 KiB: covered by the sniffer alone below
    validate = run_plugin(ValidatePlugin(), data, chunk)
    assert validate["encoding"] == encoding
    if len(data) > 2:
        assert run_plugin(CsvPlugin(), data, chunk)["encoding"] == encoding


def test_sniffer_byte_by_byte_on_late_latin1():
    sniffer = EncodingSniffer()
    for i in range(0, len(LATE_LATIN1), 7):
        sniffer.update(LATE_LATIN1[i : i + 7])
    assert sniffer.finish() == "latin-1"


def test_partial_report_while_running_then_gone(make_server, tmp_path):
    """While the job runs the rows known so far are served (X-Report-Complete: false); the
    rows are purged once the upload is terminated; unknown or job-less uploads are 404."""
    plugin = tmp_path / "reporter.py"
    plugin.write_text(REPORTER)
    server = make_server("--plugins", "reporter", "--plugin-path", str(plugin))
    gate = tmp_path / "gate"
    gate.touch()
    location = tuspy_upload(server.url, b"some data", {"gate": str(gate)})

    def partial() -> httpx.Response | None:
        answer = httpx.get(location + "/errors.ndjson")
        return answer if answer.status_code == 200 and answer.text.count("\n") == 3 else None

    response = wait_for(partial, what="partial report")
    assert isinstance(response, httpx.Response)
    assert response.headers["x-report-complete"] == "false"
    assert response.headers["x-processing-status"] == "processing"
    running = status(location)
    assert (running["result"], running["processing"]["error_count"]) == (None, 3)
    gate.unlink()
    doc = final_status(location)
    assert (doc["result"], doc["processing"]["error_count"]) == ("completed_with_errors", 4)
    report = httpx.get(location + "/errors.ndjson")
    assert report.headers["x-report-complete"] == "true"
    assert [json.loads(x)["line"] for x in report.text.splitlines()] == [None, 7, 9, 12]
    assert json.loads(report.text.splitlines()[0])["excerpt"] == "nul \\x00 " + "x" * 194

    unknown = httpx.get(server.url + "0" * 32 + "/errors.csv")
    assert unknown.status_code == 404
    no_job = tuspy_upload(server.url, b"x", {"pipeline": "none"})
    assert httpx.get(no_job + "/errors.csv").status_code == 404

    db = sqlite3.connect(server.upload_dir / "tusserver.db")
    upload_id = location.rsplit("/", 1)[1]
    count = "SELECT COUNT(*) FROM job_errors WHERE upload_id = ?"
    assert db.execute(count, [upload_id]).fetchone()[0] == 4
    assert httpx.delete(location, headers=TUS).status_code == 204
    assert httpx.get(location + "/errors.csv").status_code == 410
    wait_for(lambda: db.execute(count, [upload_id]).fetchone()[0] == 0, what="purge")


REPORTER = '''
import os, time
from tusserver.processing import Plugin

class Reporter(Plugin):
    """Test-only: reports four rows (out of line order), then waits while the gate exists."""
    name = "reporter"

    def feed(self, chunk):
        self.report(9, "kind", "second")
        self.report(7, "kind", "first", "raw row")
        self.report(None, "whole file", "no line", "nul \\0 " + "x" * 500)
        while os.path.exists(self.ctx.metadata["gate"]):
            time.sleep(0.01)
        self.report(12, "kind", "after the gate")

    def finish(self):
        return {"status": "errors"}
'''


def test_sink_batches_and_purges(tmp_path: Path):
    """Rows go to the registry in batches (memory stays flat for 50,000 rows), from plain
    threads through the portal; pages come back in line order, a new run starts empty, the old
    run's sink is refused and stops its run, and termination queues the rows for purging."""
    upload_id = "u" * 32
    row = ("csv", 1, "k", "m", "")
    with start_blocking_portal() as portal:
        registry = SqliteRegistry(tmp_path / "r.db")
        portal.call(registry.open)
        portal.call(registry.create, UploadInfo(upload_id, 10, offset=10, state=COMPLETE))
        portal.call(registry.create_job, upload_id, ["csv"], 10)
        job = portal.call(registry.claim_next_job, "me", 30.0)
        assert job is not None
        stops: list[str] = []
        sink = RegistryErrorSink(registry, upload_id, job.run, portal, stops.append)
        tracemalloc.start()
        for i in range(50_000):
            sink.add(("csv", 50_000 - i, "kind", "message", "x" * 200))
        sink.flush()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 3 * ERROR_BATCH * 400 + (1 << 20)
        lines, after = [], (-1, -1)
        while page := portal.call(registry.job_errors_page, upload_id, job.run, after, 7000):
            lines += [error.line for error in page]
            after = (page[-1].line, page[-1].seq)
        assert lines == list(range(1, 50_001)) and stops == []

        assert portal.call(registry.requeue_job, upload_id, job.run)
        following = portal.call(registry.claim_next_job, "me", 30.0)  # old rows: purged
        assert following is not None and following.run == job.run + 1
        assert portal.call(registry.job_errors_page, upload_id, following.run) == []
        sink.add(row)
        sink.flush()  # the old run's rows are refused: its run stops, writes nothing more
        assert stops == [LOST]
        while portal.call(registry.purge_job_errors, 5000):
            pass
        assert portal.call(registry.job_errors_page, upload_id, job.run) == []
        assert portal.call(registry.add_job_errors, upload_id, following.run, [row])
        portal.call(registry.set_state, upload_id, TERMINATED)
        assert portal.call(registry.purge_job_errors, 5000)
        assert not portal.call(registry.purge_job_errors, 5000)
        assert portal.call(registry.job_errors_page, upload_id, following.run) == []
        portal.call(registry.close)


def test_leftover_rows_of_gone_uploads_are_purged(tmp_path: Path):
    """Report rows of a job whose upload is gone, left over by an older version that did not
    refuse them, are queued for purging with the job by prune_jobs (SQLite only)."""
    upload_id = "t" * 32

    async def run() -> None:
        registry = SqliteRegistry(tmp_path / "r.db")
        await registry.open()
        await registry.create(UploadInfo(upload_id, 10, offset=10, state=TERMINATED))
        await registry.create_job(upload_id, ["csv"], 10)
        with sqlite3.connect(tmp_path / "r.db") as db:
            db.execute(
                "INSERT INTO job_errors (upload_id, run, plugin, line, kind, message, excerpt)"
                " VALUES (?, 1, 'csv', 1, 'k', 'm', '')",
                [upload_id],
            )
        assert await registry.prune_jobs() == 1
        while await registry.purge_job_errors(5000):
            pass
        await registry.close()

    asyncio.run(run())
    with contextlib.closing(sqlite3.connect(tmp_path / "r.db")) as db:
        assert db.execute("SELECT COUNT(*) FROM job_errors").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM job_errors_purge").fetchone()[0] == 0


def test_csv_excerpt_is_cut_once_to_max_excerpt():
    """The scanner hands over the whole raw row; the report keeps MAX_EXCERPT characters."""
    rows: list[tuple[str, int, str, str, str]] = []

    class Collect(ErrorSink):
        def add(self, row: tuple[str, int, str, str, str]) -> None:
            rows.append(row)

    plugin = CsvPlugin()
    data = b"a,b\n1,2\n" + "é".encode() * 300 + b"\r\n"
    plugin.start(Context("x" * 32, len(data), errors=Collect()))
    plugin.feed(data)
    plugin.finish()
    assert rows == [("csv", 3, "wrong column count", "expected 2 fields, got 1", "é" * MAX_EXCERPT)]
