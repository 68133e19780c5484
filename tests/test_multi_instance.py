"""Several instances on one PostgreSQL database and one upload directory, no sticky sessions:
any request may reach any instance (issue: "Run many instances").

Two real `tusserver` processes on different ports share `--db postgresql://…` and
`--upload-dir` (the file store needs a shared file system). Locks are PostgreSQL advisory
locks with release requests over LISTEN/NOTIFY; jobs and hook deliveries are leased in the
database.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Any

import httpx
import pytest
from conftest import TUS, ServerProcess, create_upload, metric, patch, wait_for
from pgserver import PostgresServer
from rawclient import patch_request
from test_hooks import HookBox
from test_processing import final_status, make_csv, tuspy_upload

MiB = 1024 * 1024


def on(server: ServerProcess, location: str) -> str:
    """The same upload URL on another instance (what a load balancer does)."""
    return server.origin + "/files/" + location.rsplit("/", 1)[1]


@pytest.fixture
def pair(make_server, tmp_path, pg_url) -> tuple[ServerProcess, ServerProcess]:
    shared = tmp_path / "shared"
    return (
        make_server("--db", pg_url, upload_dir=shared),
        make_server("--db", pg_url, upload_dir=shared),
    )


def test_chunks_alternate_between_instances(pair, client):
    """Each chunk on the other instance; both report the same offsets and serve the same
    bytes. With a PostgreSQL registry no SQLite file is written."""
    a = pair[0]
    data = os.urandom(5 * MiB + 123)
    location = create_upload(client, a.url, len(data))
    offset, chunk, turn = 0, 512 * 1024, 0
    while offset < len(data):
        server = pair[turn % 2]
        response = patch(client, on(server, location), offset, data[offset : offset + chunk])
        assert response.status_code == 204, response.text
        offset = int(response.headers["Upload-Offset"])
        other = pair[(turn + 1) % 2]
        assert client.head(on(other, location), headers=TUS).headers["Upload-Offset"] == str(offset)
        turn += 1
    for server in pair:
        assert client.get(on(server, location)).content == data
    assert not list(a.upload_dir.glob("*.db*"))


def test_stalled_patch_on_a_is_taken_over_by_head_on_b(pair, client):
    """A PATCH on A whose client went silent holds the upload; a HEAD on B asks A (NOTIFY) to
    let go: A saves what it received and B answers with that offset within seconds."""
    a, b = pair
    data = os.urandom(2 * MiB)
    location = create_upload(client, a.url, len(data))
    path = "/files/" + location.rsplit("/", 1)[1]
    stale = patch_request(a.port, path, 0, len(data))
    stale.send(data[: 700 * 1024])  # then silence: a dead peer the server cannot see
    try:
        wait_for(lambda: metric(a, "tusserver_active_uploads") == 1, 10, "A receiving")
        started = time.monotonic()
        head = client.head(on(b, location), headers=TUS)
        took = time.monotonic() - started
        assert head.status_code == 200
        assert took < 3, f"takeover took {took:.2f}s"  # lock-timeout bound, not a benchmark
        kept = int(head.headers["Upload-Offset"])
        # A saved, fsynced and recorded what it had read off the socket when asked: some of
        # the 700 KiB sent may still have been in the socket buffers then
        assert 0 < kept <= 700 * 1024
        stored = (a.upload_dir / location.rsplit("/", 1)[1]).read_bytes()
        assert stored[:kept] == data[:kept]
        response = patch(client, on(b, location), kept, data[kept:])
        assert response.status_code == 204
    finally:
        stale.close()
    assert client.get(on(a, location)).content == data


def test_kill9_of_a_mid_patch_resumes_on_b(pair, client):
    """A dies with SIGKILL in the middle of a body: its advisory lock dies with its
    connection, B takes the upload and the client finishes there, byte-identical."""
    a, b = pair
    data = os.urandom(6 * MiB)
    location = create_upload(client, a.url, len(data))
    path = "/files/" + location.rsplit("/", 1)[1]
    request = patch_request(a.port, path, 0, len(data))
    for start in range(0, 3 * MiB, 256 * 1024):
        request.send(data[start : start + 256 * 1024])
    wait_for(lambda: metric(a, "tusserver_active_uploads") == 1, 10, "A receiving")
    a.kill()
    request.close()
    offset = int(client.head(on(b, location), headers=TUS).headers["Upload-Offset"])
    assert 0 <= offset <= 3 * MiB
    response = patch(client, on(b, location), offset, data[offset:])
    assert response.status_code == 204
    assert hashlib.sha256(client.get(on(b, location)).content).digest() == (
        hashlib.sha256(data).digest()
    )


def test_csv_jobs_and_post_finish_hooks_run_once_across_instances(make_server, tmp_path, pg_url):
    """8 CSV uploads spread over two instances with --plugins validate,csv: every job is
    claimed by one instance and completes at the first attempt; every upload's post-finish
    hook is delivered (once)."""
    box = HookBox(tmp_path / "box", ["post-finish"])
    flags = ("--db", pg_url, "--plugins", "validate,csv", "--hooks-dir", str(box.hooks))
    shared = tmp_path / "shared"
    servers = [make_server(*flags, upload_dir=shared) for _ in range(2)]
    body, _ = make_csv(2000)
    locations = [
        tuspy_upload(servers[i % 2].url, body + b"%d,x,1\n" % i, {"filename": f"f{i}.csv"})
        for i in range(8)
    ]
    for i, location in enumerate(locations):
        doc = final_status(on(servers[(i + 1) % 2], location))
        assert doc["status"] == "completed", doc
        assert doc["processing"]["attempts"] == 1
        assert doc["processing"]["results"]["csv"]["records"] == 2001
    for location in locations:
        assert len(box.wait("post-finish", 1, location.rsplit("/", 1)[1])) == 1
    assert len(box.events("post-finish")) == 8


class Uploader(threading.Thread):
    """Uploads one file after another through both instances, resuming after errors the way
    tus clients do (HEAD for the offset, PATCH from there); records every status it saw.

    Nothing in the thread asserts (a failed assert would only end the thread, and the test
    would wait for uploads that never come): what is wrong goes to `failures`, which the
    test checks."""

    def __init__(self, servers: tuple[ServerProcess, ServerProcess], size: int):
        super().__init__(daemon=True)
        self.servers = servers
        self.size = size
        self.statuses: list[int] = []
        self.done: list[tuple[str, bytes]] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._upload_until_stopped()
        except Exception as exc:  # the test sees it in `failures`
            self.failures.append(f"uploader crashed: {exc!r}")

    def _upload_until_stopped(self) -> None:
        with httpx.Client(timeout=30) as http:
            turn = 0
            while not self.stop.is_set():
                data = os.urandom(self.size)
                location = self._create(http, turn)
                if location is None:
                    return
                offset = 0
                while offset < len(data) and not self.stop.is_set():
                    turn += 1
                    target = on(self.servers[turn % 2], location)
                    piece = data[offset : offset + 64 * 1024]
                    response = self._try(patch, http, target, offset, piece)
                    if response is not None and response.status_code == 204:
                        offset = int(response.headers["Upload-Offset"])
                    elif response is not None and response.status_code == 409:
                        head = self._try(http.head, target, headers=TUS)
                        if head is not None and head.status_code == 200:
                            offset = int(head.headers["Upload-Offset"])
                if offset == len(data):
                    self.done.append((location, data))

    def _create(self, http: httpx.Client, turn: int) -> str | None:
        while not self.stop.is_set():
            server = self.servers[turn % 2]
            headers = {**TUS, "Upload-Length": str(self.size)}
            response = self._try(http.post, server.url, headers=headers)
            if response is not None and response.status_code == 201:
                return response.headers["Location"]
            turn += 1
        return None

    def _try(self, call: Any, *args: Any, **kwargs: Any) -> httpx.Response | None:
        try:
            response = call(*args, **kwargs)
        except httpx.TransportError:
            return None
        self.statuses.append(response.status_code)
        if response.status_code == 503:
            if not response.headers.get("Retry-After"):
                self.failures.append(f"503 without Retry-After: {response.request.method}")
            self.stop.wait(0.05)  # the client's retry delay, not synchronisation
        return response


def test_postgres_outage_answers_503_and_recovers(pair, postgres: PostgresServer, client):
    """PostgreSQL stopped for a few seconds under load: requests get 503 + Retry-After (never
    500), the readiness probe says not ready, nothing acknowledged is lost, and both
    instances serve again by themselves once the database is back."""
    a, b = pair
    uploader = Uploader(pair, 256 * 1024)
    uploader.start()
    wait_for(lambda: len(uploader.done) >= 2 or uploader.failures, 30, "uploads before")
    assert uploader.failures == []
    postgres.stop()
    try:
        wait_for(lambda: 503 in uploader.statuses, 30, "a 503 during the outage")
        assert client.get(a.origin + "/ready").status_code == 503
    finally:
        postgres.start()
    before = len(uploader.done)
    wait_for(lambda: len(uploader.done) >= before + 3 or uploader.failures, 60, "uploads after")
    uploader.stop.set()
    uploader.join(30)
    assert not uploader.is_alive()
    assert uploader.failures == []
    assert 500 not in uploader.statuses
    for server in pair:
        wait_for(lambda s=server: client.get(s.origin + "/ready").status_code == 200, 30)
    for location, data in uploader.done:
        assert client.get(on(b, location)).content == data
