"""Graceful shutdown (SIGTERM): in-flight PATCHes save what they received, record the offset,
answer, and the server exits within --shutdown-timeout instead of waiting for slow bodies."""

from __future__ import annotations

import signal
import time
import urllib.parse

import httpx
from conftest import TUS, create_upload, wait_receiving
from rawclient import patch_request

MiB = 1024 * 1024


def test_sigterm_saves_in_flight_patch_and_exits_quickly(make_server):
    """A PATCH whose client stalls mid-body: on SIGTERM the server makes the received bytes
    durable, records them, answers 503 with the saved Upload-Offset and exits well before the
    30 s shutdown timeout; after a restart HEAD reports that offset and the bytes are intact."""
    server = make_server("--shutdown-timeout", "30s", "--network-timeout", "60s")
    data = bytes(range(256)) * (12 * MiB // 256)
    http = httpx.Client(timeout=30)
    location = create_upload(http, server.url, len(data))
    upload_id = location.rsplit("/", 1)[-1]
    request = patch_request(server.port, urllib.parse.urlparse(location).path, 0, len(data))
    request.send(data[: 5 * MiB])  # then the client stalls: the body never completes
    wait_receiving(server)

    assert server.proc is not None
    started = time.monotonic()
    server.proc.terminate()
    status, headers, body = request.response()
    assert status == 503, body
    saved = int(headers["upload-offset"])
    assert headers.get("retry-after")
    assert saved == 5 * MiB  # everything sent (it all arrived before the stall)
    server.proc.wait(10)
    assert time.monotonic() - started < 5, "shutdown waited for the stalled body"
    request.close()

    server.start()
    response = http.head(location, headers=TUS)
    assert int(response.headers["Upload-Offset"]) == saved
    assert (server.upload_dir / upload_id).read_bytes()[:saved] == data[:saved]
    http.close()


def test_sigterm_idle_server_exits_promptly(make_server):
    """With nothing in flight SIGTERM ends the process at once (uvicorn re-raises the signal
    after its graceful shutdown, so the exit status is -SIGTERM or 0), registry intact."""
    server = make_server("--shutdown-timeout", "30s")
    http = httpx.Client(timeout=10)
    location = create_upload(http, server.url, 10)
    started = time.monotonic()
    assert server.stop(10) in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 5
    server.start()
    assert http.head(location, headers=TUS).headers["Upload-Offset"] == "0"
    http.close()
