"""Real uploads with tuspy: sizes, resume after dropped connections and restarts, workers,
locking and stale-lock takeover."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time

import httpx
import pytest
from conftest import TUS, create_upload, patch, wait_receiving
from netfault import CuttingProxy
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

MiB = 1024 * 1024


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible test data, generated in the test."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def tuspy_upload(url: str, data: bytes, chunk_size: int, **kwargs: object) -> str:
    uploader = tus_client.TusClient(url).uploader(
        file_stream=io.BytesIO(data), chunk_size=chunk_size, **kwargs
    )
    uploader.upload()
    return str(uploader.url)


@pytest.mark.parametrize(
    ("size", "chunk"), [(0, MiB), (1, MiB), (5 * MiB, 5 * MiB), (64 * MiB, 4 * MiB)]
)
def test_tuspy_sizes_roundtrip(server, client, size, chunk):
    """tuspy uploads of several sizes come back byte for byte through GET."""
    data = random_bytes(size, seed=size)
    location = tuspy_upload(
        server.url, data, chunk, metadata={"filename": "data.bin", "owner": "zoë"}
    )
    response = client.get(location)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(data).digest()
    head = client.head(location, headers=TUS)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(size)
    stored = server.upload_dir / location.rsplit("/", 1)[1]
    assert stored.stat().st_size == size


def test_resume_after_connection_killed_mid_patch(shared_server, client):
    """A connection dropped mid-PATCH keeps the bytes received; tuspy resumes from the offset."""
    data = random_bytes(8 * MiB, seed=7)
    proxy = CuttingProxy(shared_server.port, cut_after=3 * MiB)
    try:
        proxy_url = f"http://127.0.0.1:{proxy.port}/files/"
        uploader = tus_client.TusClient(proxy_url).uploader(
            file_stream=io.BytesIO(data), chunk_size=len(data), retries=0
        )
        with pytest.raises((TusCommunicationError, TusUploadFailed, OSError)):
            uploader.upload()
        assert proxy.cut_done.is_set()
        location = str(uploader.url).replace(str(proxy.port), str(shared_server.port))
        kept = int(client.head(location, headers=TUS).headers["Upload-Offset"])
        assert 0 < kept <= 3 * MiB, "bytes received before the cut must be kept"
        resumed = tus_client.TusClient(shared_server.url).uploader(
            file_stream=io.BytesIO(data), chunk_size=MiB, url=location
        )
        assert resumed.get_offset() == kept
        resumed.upload()
    finally:
        proxy.close()
    assert client.get(location).content == data


def test_resume_after_server_restart(server, client):
    """Offsets and data survive a restart; the client continues where it left off."""
    data = random_bytes(3 * MiB, seed=3)
    location = create_upload(client, server.url, len(data))
    assert patch(client, location, 0, data[:MiB]).status_code == 204
    server.restart()
    uploader = tus_client.TusClient(server.url).uploader(
        file_stream=io.BytesIO(data), chunk_size=MiB, url=location
    )
    assert uploader.get_offset() == MiB
    uploader.upload()
    assert client.get(location).content == data


def test_several_workers(make_server):
    """--workers 4: uploads whose chunks land on different processes stay correct."""
    server = make_server("--workers", "4")
    datasets = [random_bytes(2 * MiB + i, seed=100 + i) for i in range(6)]
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = tuspy_upload(server.url, datasets[i], 256 * 1024)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(datasets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with httpx.Client() as http:
        for i, data in enumerate(datasets):
            assert http.get(results[i]).content == data
    children = _worker_pids(server.proc.pid)
    assert len(children) >= 4, children


def _worker_pids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


class SlowBody:
    """A request body that sends a first part, then waits for the test to release the rest."""

    def __init__(self, first: bytes, rest: bytes):
        self.first, self.rest = first, rest
        self.started = threading.Event()
        self.release = threading.Event()

    def __iter__(self):
        yield self.first
        self.started.set()
        self.release.wait(30)
        yield self.rest


class SlowPatch:
    """A PATCH at offset 0 sending a SlowBody from a thread; returns once the server is
    receiving it (it holds the upload's lock)."""

    def __init__(self, server, location: str, body: SlowBody):
        self.body = body
        self.response: httpx.Response | None = None
        self.thread = threading.Thread(target=self._send, args=(location,))
        self.thread.start()
        assert body.started.wait(10)
        wait_receiving(server)

    def _send(self, location: str) -> None:
        with httpx.Client(timeout=30) as http:
            self.response = http.patch(
                location,
                content=self.body,
                headers={
                    **TUS,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                },
            )

    def finish(self) -> None:
        """Let the rest of the body go and wait for the answer."""
        self.body.release.set()
        self.thread.join(30)


def test_concurrent_patches_never_interleave(server, client):
    """Two live PATCHes on one upload: the newer one takes over, the older one stops and saves
    what it had; the newer one then sees the real offset (409) — bytes never interleave."""
    location = create_upload(client, server.url, 4 * MiB)
    body = SlowBody(b"A" * MiB, b"A" * MiB)
    first = SlowPatch(server, location, body)
    second = patch(client, location, 0, b"B" * MiB)
    first.finish()
    # The older request was stopped and kept its bytes; the newer one was told the offset.
    assert second.status_code == 409
    kept = int(second.headers["Upload-Offset"])
    assert 0 < kept <= MiB
    assert first.response is not None and first.response.status_code == 400
    stored = (server.upload_dir / location.rsplit("/", 1)[1]).read_bytes()
    assert stored == b"A" * kept


def test_stale_lock_is_taken_over(shared_server, client):
    """A request whose client vanished without closing still holds the lock; a resuming client
    gets the upload within a few seconds and finishes it."""
    data = random_bytes(2 * MiB, seed=11)
    location = create_upload(client, shared_server.url, len(data))
    path = "/files/" + location.rsplit("/", 1)[1]
    stale = socket.create_connection(("127.0.0.1", shared_server.port))
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    stale.sendall(head + data[:300_000])  # then silence: a dead peer the server can't see
    try:
        started = time.monotonic()
        uploader = tus_client.TusClient(shared_server.url).uploader(
            file_stream=io.BytesIO(data), chunk_size=MiB, url=location
        )
        uploader.upload()
        assert time.monotonic() - started < 10  # lock-timeout bound, not a benchmark
    finally:
        stale.close()
    assert client.get(location).content == data


def test_lock_timeout_answers_423(make_server, client):
    """If the holder cannot be stopped in --lock-timeout, the newcomer gets 423 (retryable)."""
    server = make_server("--lock-timeout", "0")
    location = create_upload(client, server.url, 10)
    first = SlowPatch(server, location, SlowBody(b"12345", b"67890"))
    assert client.head(location, headers=TUS).status_code == 423
    first.finish()


def test_upload_dir_holds_only_data_files(server, client):
    """File store layout: one data file per upload, no info sidecars (info is in SQLite)."""
    location = create_upload(client, server.url, 3, {"Upload-Metadata": "a YQ=="})
    patch(client, location, 0, b"abc")
    upload_id = location.rsplit("/", 1)[1]
    names = set(os.listdir(server.upload_dir))
    assert upload_id in names
    assert not [n for n in names if n.startswith(upload_id) and n != upload_id]
