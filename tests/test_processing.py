"""Post-finish processing end to end: tuspy uploads to a real server, then /status, /events,
job results, restarts mid-job, several workers, the post-process hook.

Expected values are computed here from the generated data (csv module, hashlib), never copied
from the server's answers.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import TUS, EventWatcher, ServerProcess, create_upload, patch, wait_for
from tusclient import client as tus_client

PLUGINS = ("--plugins", "validate,csv")


def tuspy_upload(url: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
    uploader = tus_client.TusClient(url).uploader(
        file_stream=io.BytesIO(data), chunk_size=4 * 1024 * 1024, metadata=metadata or {}
    )
    uploader.upload()
    return str(uploader.url)


def status(location: str) -> dict[str, Any]:
    response = httpx.get(location + "/status", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def final_status(location: str, timeout: float = 30.0) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        doc = status(location)
        return doc if doc["status"] in ("completed", "failed") else None

    return wait_for(ended, timeout, f"job of {location} to end")


def make_csv(rows: int, seed: int = 1) -> tuple[bytes, list[list[str]]]:
    """A clean CSV with quoted fields, an embedded newline and escaped quotes."""
    table = [["id", "amount", "price", "day", "comment"]]
    for i in range(rows):
        comment = ["plain", "with, comma", 'say "hi"', "two\nlines", "ünïcode"][(i + seed) % 5]
        table.append(
            [str(i), str(i * 7 - 300), f"{i / 8:.3f}", f"2024-03-{i % 28 + 1:02d}", comment]
        )
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n").writerows(table)
    return out.getvalue().encode(), table


@pytest.fixture(scope="module")
def proc_server(tmp_path_factory: pytest.TempPathFactory):
    """One processing server shared by the tests that only upload and read results."""
    base = tmp_path_factory.mktemp("processing")
    server = ServerProcess(base / "uploads", *PLUGINS, "--csv-max-record", "1M").start()
    yield server
    server.stop(5)


def test_clean_csv_results_and_events(proc_server):
    """Upload in two PATCHes while watching /events: uploading -> ... -> completed, and the
    results match what the csv module and hashlib compute."""
    data, table = make_csv(20_000)
    client = httpx.Client(timeout=30)
    location = create_upload(
        client, proc_server.url, len(data), {"Upload-Metadata": "filename ZGF0YS5jc3Y="}
    )
    watcher = EventWatcher(location, timeout=30)
    events = watcher.events
    wait_for(lambda: events, what="first event")
    half = len(data) // 2
    assert patch(client, location, 0, data[:half]).status_code == 204
    wait_for(lambda: events[-1]["upload"]["offset"] == half, what="offset event")
    assert patch(client, location, half, data[half:]).status_code == 204
    watcher.wait_end()

    statuses = [e["status"] for e in events]
    assert statuses[0] == "uploading" and statuses[-1] == "completed"
    order = ["uploading", "queued", "processing", "completed"]
    assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)
    assert [e["upload"]["offset"] for e in events][:2] == [0, half]
    assert all(a != b for a, b in itertools.pairwise(events)), "events are sent only on change"

    doc = status(location)
    assert doc == events[-1]
    assert doc["upload"] | {"bytes_per_second": None} == {
        "state": "complete",
        "offset": len(data),
        "length": len(data),
        "percent": 100.0,
        "bytes_per_second": None,
        "eta_seconds": 0.0,
    }
    job = doc["processing"]
    assert job["status"] == "completed" and job["has_errors"] is False
    assert job["bytes_processed"] == job["bytes_total"] == len(data)
    assert job["records"] == len(table) - 1
    validate = job["results"]["validate"]
    assert validate["digests"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert validate["size"] == len(data)
    assert validate["content_type"] == "text/csv"
    assert validate["encoding"] == "utf-8"
    assert validate["filename"] == "data.csv"
    result = job["results"]["csv"]
    assert result["headers"] == table[0]
    assert result["records"] == len(table) - 1
    assert result["columns"] == 5
    assert result["delimiter"] == ","
    assert result["errors_total"] == 0 and result["errors"] == []
    types = [(c["name"], c["type"]) for c in result["column_summary"]]
    assert types == [
        ("id", "int"),
        ("amount", "int"),
        ("price", "float"),
        ("day", "date"),
        ("comment", "text"),
    ]


def _upload_and_finish(server: ServerProcess, data: bytes, **meta: str) -> dict[str, Any]:
    return final_status(tuspy_upload(server.url, data, meta))


def test_ragged_rows_completed_with_errors(proc_server):
    data, _ = make_csv(3000)
    lines = data.split(b"\r\n")
    lines[10] = b"1,2,3"
    lines[12] = b"1,2,3,4,5,6,7"
    broken = b"\r\n".join(lines)
    # physical line numbers (records before them hold embedded newlines)
    line_of = [broken.count(b"\n", 0, broken.index(lines[i] + b"\r\n")) + 1 for i in (10, 12)]
    doc = _upload_and_finish(proc_server, broken)
    job = doc["processing"]
    assert doc["status"] == "completed" and job["has_errors"] is True
    result = job["results"]["csv"]
    assert result["status"] == "errors"
    assert result["errors"] == [
        {"line": line_of[0], "kind": "wrong column count", "message": "expected 5 fields, got 3"},
        {"line": line_of[1], "kind": "wrong column count", "message": "expected 5 fields, got 7"},
    ]
    assert result["errors_total"] == 2


def test_broken_encoding_line(proc_server):
    data = "name,city\nzoë,köln\n".encode() + b"bad,\xff\xfe\n" + b"ok,fine\n"
    doc = _upload_and_finish(proc_server, data)
    result = doc["processing"]["results"]["csv"]
    assert doc["status"] == "completed"
    assert result["encoding"] == "utf-8"
    assert [(e["line"], e["kind"]) for e in result["errors"]] == [(3, "bad encoding")]
    # one detection for both plugins: utf-8 with a broken byte (at offset 24), not latin-1
    validate = doc["processing"]["results"]["validate"]
    assert validate["encoding"] == "utf-8"
    assert (validate["encoding_valid"], validate["first_invalid_byte"]) == (
        False,
        data.index(b"\xff"),
    )


def test_huge_field_is_reported_not_buffered(proc_server):
    """A 3 MiB field (over --csv-max-record 1M) on line 3: reported, the rest still parsed."""
    data = b"a,b\n1,2\n3," + b"x" * (3 * 1024 * 1024) + b"\n4,5\n6,7\n"
    doc = _upload_and_finish(proc_server, data)
    result = doc["processing"]["results"]["csv"]
    assert doc["status"] == "completed"
    assert [(e["line"], e["kind"]) for e in result["errors"]] == [(3, "record too long")]
    assert result["records"] == 3


def test_single_huge_line_fails(proc_server):
    """No newline at all (4 MiB here, 3 GB in production): failed job, line 1, no blow-up."""
    doc = _upload_and_finish(proc_server, b"z" * (4 * 1024 * 1024))
    assert doc["status"] == "failed"
    result = doc["processing"]["results"]["csv"]
    assert result["status"] == "failed" and result["line"] == 1
    assert result["error"].startswith("longer than")  # the line is a field, not in the text
    assert doc["processing"]["error"].startswith("csv: line 1: longer than")
    assert doc["processing"]["error"].count("line 1") == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "csv: empty file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64, "csv: line 3: binary data"),
    ],
    ids=["empty", "binary-named-csv"],
)
def test_not_a_csv_fails(proc_server, data, message):
    doc = _upload_and_finish(proc_server, data, filename="data.csv")
    assert doc["status"] == "failed"
    assert doc["processing"]["error"].startswith(message)
    validate = doc["processing"]["results"]["validate"]
    assert validate["declared_type"] is None and validate["filename"] == "data.csv"
    assert validate["content_type"] == ("application/x-empty" if not data else "image/png")


def test_unclosed_quote(proc_server):
    data = b'a,b\n1,2\n3,"never closed\n4,5\n'
    doc = _upload_and_finish(proc_server, data)
    result = doc["processing"]["results"]["csv"]
    assert doc["status"] == "completed"
    assert result["errors"] == [
        {"line": 3, "kind": "unclosed quote", "message": "quoted field is never closed"}
    ]


def test_pipeline_metadata_selects_plugins(proc_server):
    data, _ = make_csv(10)
    only_validate = _upload_and_finish(proc_server, data, pipeline="validate")
    assert only_validate["processing"]["plugins"] == ["validate"]
    assert set(only_validate["processing"]["results"]) == {"validate"}
    location = tuspy_upload(proc_server.url, data, {"pipeline": "none"})
    doc = status(location)
    assert doc["status"] == "completed" and doc["processing"] is None


def test_status_unknown_upload_is_404(proc_server):
    response = httpx.get(proc_server.url + "0" * 32 + "/status")
    assert response.status_code == 404


def test_validation_rules_fail_job(make_server):
    server = make_server(
        "--plugins",
        "validate",
        "--validate-allowed-types",
        "text/csv",
        "--validate-max-size",
        "1K",
        "--validate-digests",
        "md5",
    )
    data = b"%PDF-1.4\n" + b"x" * 2000
    doc = _upload_and_finish(server, data, filename="report.csv")
    result = doc["processing"]["results"]["validate"]
    assert doc["status"] == "failed"
    assert result["content_type"] == "application/pdf"
    assert result["digests"] == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
    }
    assert result["violations"] == [
        f"file is {len(data)} bytes, more than the 1024 allowed",
        "content type application/pdf is not allowed (text/csv)",
    ]
    metrics = httpx.get(server.origin + "/metrics").text
    assert 'tusserver_processing_jobs_total{state="failed"} 1.0' in metrics
    assert 'tusserver_processing_jobs_in_state{state="failed"} 1.0' in metrics
    assert 'tusserver_processing_jobs_in_state{state="completed"} 0.0' in metrics


def test_upload_finished_before_plugins_is_processed_on_status(make_server, tmp_path):
    """An upload that finished while processing was off gets its job when status is asked."""
    directory = tmp_path / "shared"
    plain = make_server(upload_dir=directory)
    data, table = make_csv(100)
    location = tuspy_upload(plain.url, data)
    assert status(location)["status"] == "completed"
    plain.stop()
    processing = make_server(*PLUGINS, upload_dir=directory)
    location = location.replace(plain.origin, processing.origin)
    doc = final_status(location)
    assert doc["status"] == "completed"
    assert doc["processing"]["results"]["csv"]["records"] == len(table) - 1


GATED_PLUGIN = '''
import os, time
from tusserver.processing import Plugin

class Gated(Plugin):
    """Test-only: holds every chunk while the gate file (metadata "gate") exists."""
    name = "gated"

    def start(self, ctx):
        super().start(ctx)
        self.seen = 0
        with open(ctx.metadata["runs"], "a") as log:
            log.write(f"{ctx.upload_id} {os.getpid()}\\n")

    def feed(self, chunk):
        self.seen += len(chunk)
        while os.path.exists(self.ctx.metadata["gate"]) and not self.ctx.cancelled():
            time.sleep(0.01)

    def finish(self):
        return {"bytes": self.seen}

    def progress(self):
        return {"records": self.seen}
'''


def _gated_server(make_server, tmp_path: Path, *flags: str) -> ServerProcess:
    plugin = tmp_path / "gated_plugin.py"
    plugin.write_text(GATED_PLUGIN)
    return make_server("--plugins", "gated", "--plugin-path", str(plugin), *flags)


@pytest.mark.parametrize("how", ["kill", "restart"])
def test_restart_mid_job_resumes(make_server, tmp_path, how):
    """A job interrupted by SIGKILL (crash) or SIGTERM (restart) runs again and completes."""
    server = _gated_server(make_server, tmp_path)
    gate = tmp_path / "gate"
    gate.touch()
    runs = tmp_path / "runs.log"
    data = os.urandom(9 * 1024 * 1024)  # three 4 MiB reads
    location = tuspy_upload(server.url, data, {"gate": str(gate), "runs": str(runs)})
    mid = wait_for(
        lambda: (
            (s := status(location))["status"] == "processing"
            and s["processing"]["bytes_processed"] == 0
            and s
        ),
        what="job held mid-file",
    )
    assert mid["processing"]["attempts"] == 1
    if how == "kill":
        server.kill()
        server.start()
    else:
        server.restart()
    gate.unlink()
    doc = final_status(location)
    assert doc["status"] == "completed"
    # a crash counts against the crash-loop limit, a graceful restart does not
    assert doc["processing"]["attempts"] == (2 if how == "kill" else 1)
    assert doc["processing"]["results"]["gated"] == {"bytes": len(data), "status": "ok"}
    upload_id = location.rsplit("/", 1)[1]
    assert [line.split()[0] for line in runs.read_text().splitlines()] == [upload_id] * 2


def test_several_workers_claim_each_job_once(make_server, tmp_path):
    """--workers 2: every job is claimed by exactly one process (compare-and-set)."""
    server = _gated_server(make_server, tmp_path, "--workers", "2", "--processing-workers", "2")
    runs = tmp_path / "runs.log"
    gate = tmp_path / "no-gate"
    locations = [
        tuspy_upload(server.url, b"x" * 1000 + bytes([i]), {"gate": str(gate), "runs": str(runs)})
        for i in range(8)
    ]
    for location in locations:
        doc = final_status(location)
        assert doc["status"] == "completed"
        assert doc["processing"]["attempts"] == 1
    ids = [line.split()[0] for line in runs.read_text().splitlines()]
    assert sorted(ids) == sorted(loc.rsplit("/", 1)[1] for loc in locations)


def test_post_process_hook_delivers_result(make_server, tmp_path):
    """The post-process hook (file hook here) receives the job status and plugin results."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    out = tmp_path / "hook-out"
    out.mkdir()
    script = hooks / "post-process"
    script.write_text(f'#!/bin/sh\ncat > "{out}/$TUS_ID.json"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    server = make_server(
        *PLUGINS,
        "--hooks-dir",
        str(hooks),
        "--hooks-enabled-events",
        "post-finish,post-process",
    )
    data, table = make_csv(50)
    location = tuspy_upload(server.url, data)
    upload_id = location.rsplit("/", 1)[1]
    delivered = out / f"{upload_id}.json"
    wait_for(lambda: delivered.exists() and delivered.stat().st_size > 0, what="hook output")
    payload = json.loads(delivered.read_text())
    assert payload["Type"] == "post-process"
    assert payload["Event"]["Upload"]["ID"] == upload_id
    processing = payload["Event"]["Processing"]
    assert processing["status"] == "completed"
    assert processing["results"]["csv"]["records"] == len(table) - 1
    assert (
        processing["results"]["validate"]["digests"]["sha256"] == hashlib.sha256(data).hexdigest()
    )
    assert processing == {
        k: v for k, v in status(location)["processing"].items() if k in processing
    }


def test_status_of_plain_upload_without_plugins(shared_server, client):
    """Without --plugins /status still shows upload progress; processing is null."""
    location = create_upload(client, shared_server.url, 10)
    assert patch(client, location, 0, b"12345").status_code == 204
    doc = status(location)
    assert doc["status"] == "uploading" and doc["processing"] is None
    assert (doc["upload"]["offset"], doc["upload"]["length"], doc["upload"]["percent"]) == (
        5,
        10,
        50.0,
    )
    response = client.delete(location, headers=TUS)
    assert response.status_code == 204
    assert httpx.get(location + "/status").status_code == 410


CRASHING_PLUGIN = '''
import os
from tusserver.processing import Plugin

class Crash(Plugin):
    """Test-only: takes the whole server process down, like an OOM kill or a segfault."""
    name = "crash"

    def feed(self, chunk):
        os._exit(3)
'''


def test_crash_loop_gives_up(make_server, tmp_path):
    """A file that kills its worker every time fails after MAX_ATTEMPTS runs, instead of
    taking the server down forever."""
    plugin = tmp_path / "crash_plugin.py"
    plugin.write_text(CRASHING_PLUGIN)
    server = make_server("--plugins", "crash", "--plugin-path", str(plugin))
    location = tuspy_upload(server.url, b"boom\n")

    def died_or_ended() -> bool:
        if server.proc is not None and server.proc.poll() is not None:
            return True
        try:
            return status(location)["status"] in ("completed", "failed")
        except httpx.HTTPError:
            return False

    restarts = 0
    while restarts < 6:
        wait_for(died_or_ended, what="crash or end of job")
        if server.proc is not None and server.proc.poll() is None:
            break
        restarts += 1
        with contextlib.suppress(RuntimeError):  # it may crash again before it listens
            server.start()
    doc = final_status(location)
    assert restarts == 3
    assert doc["status"] == "failed"
    assert doc["processing"]["error"] == "gave up after 3 interrupted runs"
    assert doc["processing"]["attempts"] == 4


def test_status_shows_progress_during_one_long_patch(proc_server):
    """The offset checkpointed during a long PATCH shows on /status before the PATCH ends,
    with a rate and an ETA."""
    total = 64 * 1024 * 1024
    piece = b"x" * 16384
    client = httpx.Client(timeout=60)
    location = create_upload(client, proc_server.url, total, {"Upload-Metadata": "pipeline"})
    seen: list[dict[str, Any]] = []

    def body():  # type: ignore[no-untyped-def]
        sent = 0
        while sent < total:
            if not seen:
                doc = status(location)
                if 0 < doc["upload"]["offset"] < total:
                    seen.append(doc)  # mid-PATCH progress observed: send the rest at once
            size = len(piece) if not seen else min(total - sent, 1024 * 1024)
            yield piece[:size] if size <= len(piece) else b"x" * size
            sent += size

    response = patch(client, location, 0, body(), **{"Content-Length": str(total)})
    assert response.status_code == 204
    assert seen, "no intermediate offset was visible during the PATCH"
    mid = seen[0]
    assert mid["status"] == "uploading"
    assert mid["upload"]["bytes_per_second"] > 0
    assert mid["upload"]["eta_seconds"] > 0
    assert mid["upload"]["percent"] == round(100 * mid["upload"]["offset"] / total, 2)
    assert status(location)["status"] == "completed"  # `pipeline` metadata empty: no job


def test_open_event_stream_does_not_hold_shutdown(make_server, client):
    """SIGTERM ends open /events streams with `event: shutdown` (clients reconnect) instead of
    waiting for the 10 s graceful-shutdown timeout."""
    server = make_server(*PLUGINS)
    location = create_upload(client, server.url, 10)
    lines: list[str] = []
    with httpx.stream("GET", location + "/events", timeout=30) as response:
        stream = response.iter_lines()
        while not any(line.startswith("data: ") for line in lines):
            lines.append(next(stream))
        started = time.monotonic()
        server.stop()
        stopped = time.monotonic() - started
        lines.extend(stream)
    assert "event: shutdown" in lines
    assert stopped < 5.0, f"shutdown took {stopped:.1f}s"


def test_partial_uploads_are_not_processed(proc_server):
    """Concatenation: "The Server SHOULD NOT process these partial uploads until they are
    concatenated" -- the final upload is processed, its partials never are."""
    data, table = make_csv(500)
    half = len(data) // 2
    partials = []
    with httpx.Client(timeout=10) as http:
        for piece in (data[:half], data[half:]):
            created = http.post(
                proc_server.url,
                headers={**TUS, "Upload-Length": str(len(piece)), "Upload-Concat": "partial"},
            )
            location = created.headers["Location"]
            done = http.patch(
                location,
                content=piece,
                headers={
                    **TUS,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                },
            )
            assert done.status_code == 204
            partials.append(location)
        final = http.post(
            proc_server.url, headers={**TUS, "Upload-Concat": "final;" + " ".join(partials)}
        )
        assert final.status_code == 201
    doc = final_status(final.headers["Location"])
    assert doc["status"] == "completed"
    assert doc["processing"]["results"]["csv"]["records"] == len(table) - 1
    for location in partials:
        assert status(location)["processing"] is None
