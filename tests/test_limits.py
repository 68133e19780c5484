"""Limits that protect the server from big, slow or too many uploads."""

from __future__ import annotations

import time
import urllib.parse

from conftest import TUS, create_upload, patch, wait_receiving
from rawclient import patch_request

MiB = 1024 * 1024


def test_max_size_refuses_larger_uploads(make_server, client):
    """Creation: "If the length of the upload exceeds the maximum, which MAY be specified
    using the Tus-Max-Size header, the Server MUST respond with the 413 Request Entity Too
    Large status." Deferred lengths are held to it as the body arrives."""
    server = make_server("--max-size", "1M")
    response = client.post(server.url, headers={**TUS, "Upload-Length": str(MiB + 1)})
    assert response.status_code == 413
    deferred = create_upload(client, server.url, None)
    over = patch(client, deferred, 0, b"x" * (MiB + 1))
    assert over.status_code == 413
    assert client.head(deferred, headers=TUS).headers["Upload-Offset"] == "0"


def test_network_timeout_saves_a_stalled_body(make_server, client):
    """A client that stops sending mid-body is cut after --network-timeout; what arrived is
    kept and the answer carries the offset to resume from."""
    server = make_server("--network-timeout", "1s")
    location = create_upload(client, server.url, 4 * MiB)
    request = patch_request(server.port, urllib.parse.urlparse(location).path, 0, 4 * MiB)
    request.send(b"a" * MiB)  # then nothing: a stalled client
    started = time.monotonic()
    status, headers, body = request.response()
    assert status == 400, body
    assert b"timed out" in body
    assert headers["upload-offset"] == str(MiB)
    assert 0.9 < time.monotonic() - started < 10
    request.close()
    assert client.head(location, headers=TUS).headers["Upload-Offset"] == str(MiB)


def test_max_concurrent_uploads_answers_503_with_retry_after(make_server, client):
    """Past --max-concurrent-uploads bodies get 503 + Retry-After (nothing written) and the
    Upload-Offset to resume from, also on creation-with-upload (with the new Location), and
    are accepted again once a slot is free."""
    server = make_server("--max-concurrent-uploads", "1", "--network-timeout", "30s")
    first = create_upload(client, server.url, 2 * MiB)
    second = create_upload(client, server.url, 10)
    request = patch_request(server.port, urllib.parse.urlparse(first).path, 0, 2 * MiB)
    request.send(b"a" * MiB)
    wait_receiving(server)

    busy = patch(client, second, 0, b"0123456789")
    assert busy.status_code == 503
    assert int(busy.headers["Retry-After"]) >= 1
    assert busy.headers["Upload-Offset"] == "0"
    assert client.head(second, headers=TUS).headers["Upload-Offset"] == "0"
    with_body = {**TUS, "Upload-Length": "10", "Content-Type": "application/offset+octet-stream"}
    created = client.post(server.url, headers=with_body, content=b"0123456789")
    assert created.status_code == 503
    assert created.headers["Upload-Offset"] == "0"
    assert client.head(created.headers["Location"], headers=TUS).headers["Upload-Offset"] == "0"

    request.send(b"b" * MiB)
    status, _, _ = request.response()
    assert status == 204
    request.close()
    assert patch(client, second, 0, b"0123456789").status_code == 204


def test_min_free_space_reserve(make_server, client):
    """With a reserve larger than the disk, creation gets 507 with a clear message and
    /health reports the disk check as failed (503)."""
    server = make_server("--min-free-space", "1000T")
    response = client.post(server.url, headers={**TUS, "Upload-Length": "10"})
    assert response.status_code == 507
    assert "storage" in response.text
    health = client.get(server.origin + "/health")
    assert health.status_code == 503
    report = health.json()
    assert report["status"] == "fail"
    assert report["checks"]["disk"]["ok"] is False
    assert report["checks"]["registry"]["ok"] is True
