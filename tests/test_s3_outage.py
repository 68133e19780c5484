"""S3 going away and coming back under a running server (issue "S3 store": "S3 errors and
timeouts map to 503/507 answers, never 500; retries with backoff for transient S3 errors").

The server reaches the session's S3 server through a proxy that can cut every connection
(tests/netfault.py), so the outage is real at the socket level and nothing in the bucket is
lost when it ends. tus 1.0 "Core Protocol": a client that gets an error resumes with HEAD,
so every error answer must leave the recorded offset consistent with what S3 holds.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import TUS, create_upload, patch
from netfault import SwitchableProxy
from s3e2e_helpers import MiB, assert_finished, assert_no_leftovers, s3_flags, upload_id
from s3server import MotoServer


@pytest.fixture
def outage(s3: MotoServer, s3_bucket: str, make_server, monkeypatch):
    """A server whose S3 endpoint is a switchable proxy; two attempts per S3 call (the
    AWS_MAX_ATTEMPTS the AWS configuration honours) keep the outage answers quick."""
    proxy = SwitchableProxy(int(urlsplit(s3.endpoint).port or 80))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    server = make_server(
        *s3_flags(s3, s3_bucket), "--s3-endpoint", f"http://127.0.0.1:{proxy.port}"
    )
    yield server, proxy
    proxy.close()


def test_s3_outage_answers_503_keeps_the_offset_and_resumes(outage, s3, s3_bucket):
    server, proxy = outage
    data = os.urandom(13 * MiB)
    with httpx.Client(timeout=60) as http:
        location = create_upload(http, server.url, len(data))
        first = patch(http, location, 0, data[: 7 * MiB])  # one part + a tail object
        assert first.status_code == 204, first.text
        assert first.headers["Upload-Offset"] == str(7 * MiB)

        proxy.down()
        failed = patch(http, location, 7 * MiB, data[7 * MiB : 12 * MiB])
        assert failed.status_code == 503, failed.text
        assert failed.headers["Retry-After"].isdigit()
        kept = int(failed.headers["Upload-Offset"])
        assert kept == 7 * MiB  # nothing new reached S3: the recorded offset stands
        head = http.head(location, headers=TUS)
        assert head.headers["Upload-Offset"] == str(kept)  # the registry still answers
        health = http.get(server.origin + "/health")
        assert health.status_code == 503
        assert health.json()["checks"]["store"]["ok"] is False

        proxy.up()
        assert http.get(server.origin + "/health").status_code == 200
        resumed = patch(http, location, kept, data[kept:])
        assert resumed.status_code == 204, resumed.text
        assert resumed.headers["Upload-Offset"] == str(len(data))
    assert_finished(s3, s3_bucket, upload_id(location), data)
    assert_no_leftovers(s3, s3_bucket)


def test_s3_outage_at_creation_and_download_is_503(outage, s3, s3_bucket):
    """No request touching S3 during an outage is answered 500: a creation with data, a
    download of a finished upload."""
    server, proxy = outage
    data = os.urandom(MiB)
    with httpx.Client(timeout=60) as http:
        location = create_upload(http, server.url, len(data))
        assert patch(http, location, 0, data).status_code == 204
        proxy.down()
        created = http.post(
            server.url,
            content=b"hello",
            headers={
                **TUS,
                "Upload-Length": "5",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        # the upload exists (Location) but its bytes are not in S3: resume from 0 later
        assert created.status_code == 503, created.text
        assert created.headers["Upload-Offset"] == "0"
        assert created.headers["Retry-After"].isdigit()
        fresh = created.headers["Location"]
        download = http.get(location)
        assert download.status_code == 503, download.text
        proxy.up()
        assert http.get(location).content == data
        assert patch(http, fresh, 0, b"hello").status_code == 204
        assert http.get(fresh).content == b"hello"
