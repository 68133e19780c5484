"""Interop with tus-js-client (Node) speaking the IETF draft "Resumable Uploads for HTTP".

tus-js-client 4.3.1 (tests/interop/package-lock.json) has `protocol: 'ietf-draft-03'`, which
sends `Upload-Draft-Interop-Version: 5` and no `Tus-Resumable`, and `'ietf-draft-05'`, which
sends 6 and `Content-Type: application/partial-upload` on every request with a body (research
note notes/ietf-versions.md §3.2). Every test runs with both, against a server of its own, and
proves from both ends that the draft was spoken: the server's request counters (/metrics, the
protocol label comes from the request headers) must show no tus request at all, and the
client's trace (tus_upload.mjs `trace`) must show the interop version on every request and no
`Tus-Resumable` in any request or response. A client that fell back to tus fails every test.

Things tus-js-client needs from the server (§3.2): `Location` in the final creation response;
`Upload-Offset` in POST-with-data and PATCH responses; exactly 204 for DELETE; `Upload-Offset`
from HEAD. Things it does that a strict draft server would not accept (P8): it ends a chunked
file upload with `Upload-Complete: ?0` (its file source only says "done" for a slice that spans
the whole file) and creates an empty upload with `Upload-Complete: ?0` and never completes it;
the server completes an upload whose offset reaches its `Upload-Length`.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import test_interop_node
from conftest import ServerProcess
from test_interop_node import last, run_node

MiB = 1024 * 1024
CHUNK = 5 * MiB
SIZE = 12 * MiB + 123  # three 5 MiB chunks, the last one short
INTEROP_VERSION = {"ietf-draft-03": "5", "ietf-draft-05": "6"}
PROTOCOLS = pytest.mark.parametrize("protocol", sorted(INTEROP_VERSION))

node_client = test_interop_node.node_client  # the fixture: tus_upload.mjs, npm ci if needed

Exchange = dict[str, Any]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SIZE random bytes."""
    path = tmp_path_factory.mktemp("interop-ietf") / "data.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture(scope="module")
def source_sha256(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def requests(server: ServerProcess) -> dict[tuple[str, str, str], int]:
    """tusserver_requests_total from the server's /metrics: (method, protocol, status) ->
    count. The protocol label comes from the request headers: `ietf-draft` is a request with
    Upload-Draft-Interop-Version and no Tus-Resumable (tusserver/metrics.py); the method is the
    one X-HTTP-Method-Override names, if any."""
    counts: dict[tuple[str, str, str], int] = {}
    for line in httpx.get(server.origin + "/metrics").text.splitlines():
        if line.startswith("tusserver_requests_total{"):
            labels, _, value = line[len("tusserver_requests_total{") :].partition("} ")
            fields = dict(item.replace('"', "").split("=", 1) for item in labels.split(","))
            counts[fields["method"], fields["protocol"], fields["status"]] = int(float(value))
    return counts


def sample(server: ServerProcess, name: str) -> float:
    """One sample (name with labels) from /metrics; 0 when absent."""
    for line in httpx.get(server.origin + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def assert_server_saw_draft_only(server: ServerProcess, **expected: int) -> None:
    """No request so far spoke tus, and the server answered exactly `expected` draft requests,
    given as METHOD_STATUS=count (e.g. POST_201=1, PATCH_201=3); 201 is the status for creation
    (-01…-05 §4) and for appends (-01…-05 §6: 201 for an incomplete append, RECOMMENDED for a
    complete one; P4). Upload creations counted as draft creations match POST_201."""
    counts = requests(server)
    assert not [key for key in counts if key[1] == "tus"], counts
    wanted = {}
    for name, count in expected.items():
        method, status = name.split("_")
        wanted[method, "ietf-draft", status] = count
    assert {key: counts.get(key, 0) for key in wanted} == wanted, counts
    created = sample(server, 'tusserver_uploads_created_total{protocol="ietf-draft"}')
    assert created == expected.get("POST_201", 0)


def exchanges(events: list[dict[str, object]], protocol: str) -> list[Exchange]:
    """The client's trace of answered requests, each checked to be a draft exchange: the
    request carried the interop version of `protocol` and no Tus-Resumable, and the response
    carried no Tus-Resumable either."""
    traced = [event for event in events if event["event"] == "exchange"]
    assert traced, events
    for exchange in traced:
        request, response = exchange["request"], exchange["response"]
        assert request.get("Upload-Draft-Interop-Version") == INTEROP_VERSION[protocol], exchange
        assert "Tus-Resumable" not in request and "Tus-Resumable" not in response, exchange
    return traced


def head(url: str, protocol: str) -> httpx.Response:
    """An offset retrieval (HEAD) as the given tus-js-client protocol sends it."""
    return httpx.head(url, headers={"Upload-Draft-Interop-Version": INTEROP_VERSION[protocol]})


def assert_complete(url: str, protocol: str, size: int) -> None:
    """HEAD says the upload is complete at `size`: 204 with Upload-Offset and Upload-Complete
    (-03 §5), and Upload-Length (-05 §5: "MUST include the Upload-Length header field set to
    the upload's final size if one was recorded"; sent to interop 5 too, whose tus-js-client
    tells a finished upload only by Upload-Offset == Upload-Length, P8)."""
    response = head(url, protocol)
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == str(size)
    assert response.headers["Upload-Complete"] == "?1"
    assert "Tus-Resumable" not in response.headers
    assert response.headers["Upload-Length"] == str(size)


def download(url: str) -> tuple[httpx.Response, str]:
    """GET the upload: the response and the sha256 of its body (streamed)."""
    digest = hashlib.sha256()
    with httpx.stream("GET", url, timeout=30) as response:
        for piece in response.iter_bytes(MiB):
            digest.update(piece)
    return response, digest.hexdigest()


def run_traced(script: Path, server: ServerProcess, protocol: str, **options: object):
    """Run tus-js-client with a trace: its events and its (checked) draft exchanges."""
    events = run_node(script, endpoint=server.url, protocol=protocol, trace=True, **options)
    return events, exchanges(events, protocol)


def abort_partway(script: Path, server: ServerProcess, source: Path, protocol: str, at: int) -> str:
    """Upload `source` in CHUNK pieces and abort once `at` bytes are acknowledged; its URL."""
    options = {"file": str(source), "protocol": protocol, "chunkSize": CHUNK, "abortAt": at}
    return str(last(run_node(script, endpoint=server.url, **options), "aborted")["url"])


def assert_appends(appends: list[Exchange], url: str, offsets: list[int]) -> None:
    """Each append went to the upload URL with Upload-Offset, and each 2xx response carried
    the new Upload-Offset tus-js-client needs (-03 §6 "MUST send the Upload-Offset header")."""
    assert [int(a["request"]["Upload-Offset"]) for a in appends] == offsets[:-1], appends
    assert [int(a["response"]["Upload-Offset"]) for a in appends] == offsets[1:], appends
    assert all(a["url"] == url and a["status"] == 201 for a in appends), appends


@PROTOCOLS
def test_chunked_upload_with_metadata(server, node_client, source, source_sha256, protocol):
    """A 12 MiB file in 5 MiB chunks: one creation POST (Upload-Complete: ?0, no body) and
    three PATCHes, all draft requests (-03 §4, §6), labelled application/partial-upload by
    ietf-draft-05 only (-04 §6; P12: not required of interop 5); the last PATCH says ?0 although
    it reaches Upload-Length, and the server completes the upload anyway (P8) and says so (?1).
    GET returns
    the same bytes, and the tus Upload-Metadata that tus-js-client also sends (§3.2) is kept: a
    non-ASCII filename in Content-Disposition (RFC 6266 filename*), filetype as Content-Type."""
    events, traced = run_traced(
        node_client,
        server,
        protocol,
        file=str(source),
        chunkSize=CHUNK,
        metadata={"filename": "résumé 2026.pdf", "filetype": "application/pdf"},
    )
    url = str(last(events, "success")["url"])
    assert_server_saw_draft_only(server, POST_201=1, PATCH_201=3)
    assert sample(server, "tusserver_bytes_received_total") == SIZE
    creation, *appends = traced
    assert creation["method"] == "POST" and creation["request"]["Upload-Complete"] == "?0"
    assert creation["status"] == 201 and creation["response"]["Upload-Complete"] == "?0"
    assert [a["method"] for a in appends] == ["PATCH"] * 3
    assert_appends(appends, url, [0, CHUNK, 2 * CHUNK, SIZE])
    media_type = "application/partial-upload" if protocol == "ietf-draft-05" else None
    assert [a["request"].get("Content-Type") for a in appends] == [media_type] * 3  # P12
    assert appends[-1]["request"]["Upload-Complete"] == "?0"  # tus-js-client's file source
    assert appends[-1]["response"]["Upload-Complete"] == "?1"
    assert_complete(url, protocol, SIZE)
    response, digest = download(url)
    assert response.status_code == 200 and digest == source_sha256
    assert response.headers["Content-Type"] == "application/pdf"
    encoded = re.search(r"filename\*=utf-8''([^;]+)", response.headers["Content-Disposition"], re.I)
    assert encoded and unquote(encoded[1]) == "résumé 2026.pdf"


@PROTOCOLS
def test_abort_then_resume_from_server_offset(server, node_client, source, source_sha256, protocol):
    """tus-js-client is aborted after the first 5 MiB chunk was acknowledged, then resumed with
    uploadUrl: it asks the server (HEAD 204 with Upload-Offset, -03 §5) and continues from the
    server's offset, not from 0 (its first PATCH and first progress are at that offset, and no
    second upload is created); the result is identical to the source."""
    url = abort_partway(node_client, server, source, protocol, CHUNK + 1)
    kept = int(head(url, protocol).headers["Upload-Offset"])
    assert CHUNK <= kept < SIZE
    events, traced = run_traced(
        node_client, server, protocol, file=str(source), chunkSize=CHUNK, uploadUrl=url
    )
    done = last(events, "success")
    resume, *appends = traced
    assert resume["method"] == "HEAD" and resume["status"] == 204
    offset = int(resume["response"]["Upload-Offset"])
    assert offset >= kept  # the offset never decreases (-04 §11)
    assert done["url"] == url and done["firstProgress"] == offset
    assert appends and all(a["method"] == "PATCH" for a in appends)
    assert_appends(appends, url, [offset, *range(offset + CHUNK, SIZE, CHUNK), SIZE])
    counts = requests(server)
    assert not [key for key in counts if key[1] == "tus"], counts
    assert counts["POST", "ietf-draft", "201"] == 1
    assert_complete(url, protocol, SIZE)
    response, digest = download(url)
    assert response.status_code == 200 and digest == source_sha256


@PROTOCOLS
def test_resume_of_a_finished_upload(server, node_client, source, source_sha256, protocol):
    """Resuming (uploadUrl) an upload that is already complete: tus-js-client's HEAD gets
    Upload-Offset == Upload-Length and it reports success without sending a byte (no PATCH;
    an append to a complete upload would be refused, -04 §6). Interop 5 does not define
    Upload-Length, but tus-js-client needs it to see the upload is done (P8)."""
    first = last(
        run_node(node_client, endpoint=server.url, file=str(source), protocol=protocol), "success"
    )
    url = str(first["url"])
    events, traced = run_traced(node_client, server, protocol, file=str(source), uploadUrl=url)
    assert last(events, "success")["url"] == url
    assert [(t["method"], t["status"]) for t in traced] == [("HEAD", 204)]
    assert traced[0]["response"]["Upload-Length"] == str(SIZE)
    assert_complete(url, protocol, SIZE)
    response, digest = download(url)
    assert response.status_code == 200 and digest == source_sha256


@PROTOCOLS
@pytest.mark.parametrize(
    ("chunk", "patches"), [(None, 0), (CHUNK, 2)], ids=["one-request", "chunked"]
)
def test_upload_data_during_creation(
    server, node_client, source, source_sha256, protocol, chunk, patches
):
    """uploadDataDuringCreation: the creation POST carries the whole file (Upload-Complete: ?1)
    or the first chunk (?0), and its 201 has Location and Upload-Offset (-03 §4), from which
    tus-js-client continues with PATCHes. ietf-draft-05 labels that POST body
    application/partial-upload; that is not taken for the file's type, the filetype metadata
    is (P11)."""
    options: dict[str, object] = {"chunkSize": chunk} if chunk else {}
    events, traced = run_traced(
        node_client,
        server,
        protocol,
        file=str(source),
        uploadDataDuringCreation=True,
        metadata={"filetype": "image/png"},
        **options,
    )
    url = str(last(events, "success")["url"])
    assert_server_saw_draft_only(server, POST_201=1, PATCH_201=patches)
    assert sample(server, "tusserver_bytes_received_total") == SIZE
    creation, *appends = traced
    first = chunk or SIZE
    assert creation["method"] == "POST"
    assert creation["request"]["Upload-Complete"] == ("?0" if chunk else "?1")
    assert creation["response"]["Upload-Offset"] == str(first)
    assert creation["response"]["Location"]
    if protocol == "ietf-draft-05":
        assert creation["request"]["Content-Type"] == "application/partial-upload"
    assert_appends(appends, url, [CHUNK, 2 * CHUNK, SIZE] if chunk else [SIZE])
    assert_complete(url, protocol, SIZE)
    response, digest = download(url)
    assert response.status_code == 200 and digest == source_sha256
    assert response.headers["Content-Type"] == "image/png"


@PROTOCOLS
def test_terminate_unfinished_upload(server, node_client, source, protocol):
    """Upload.terminate on an unfinished upload: DELETE (a draft request) is answered 204,
    which tus-js-client requires (-03 §7 "MUST send back a 204"); afterwards HEAD gets 404 or
    410 and the data is gone from the upload directory."""
    url = abort_partway(node_client, server, source, protocol, CHUNK)
    assert head(url, protocol).status_code == 204
    events = run_node(node_client, terminate=url, protocol=protocol, trace=True)
    last(events, "terminated")
    [delete] = exchanges(events, protocol)
    assert delete["method"] == "DELETE" and delete["status"] == 204
    assert head(url, protocol).status_code in (404, 410)
    counts = requests(server)
    assert not [key for key in counts if key[1] == "tus"], counts
    assert counts["DELETE", "ietf-draft", "204"] == 1
    assert not (server.upload_dir / url.rsplit("/", 1)[1]).exists()


@PROTOCOLS
def test_empty_file(server, node_client, tmp_path, protocol):
    """An empty file: tus-js-client sends only the creation (Upload-Complete: ?0,
    Upload-Length: 0, no body) and reports success; the server treats that upload as complete
    (P8), so HEAD says Upload-Complete: ?1 at offset 0, and GET returns an empty body with the
    filename."""
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    events, traced = run_traced(
        node_client, server, protocol, file=str(empty), metadata={"filename": "empty.txt"}
    )
    url = str(last(events, "success")["url"])
    assert_server_saw_draft_only(server, POST_201=1, PATCH_201=0)
    [creation] = traced
    assert creation["request"]["Upload-Complete"] == "?0"
    assert creation["request"]["Upload-Length"] == "0"
    assert_complete(url, protocol, 0)
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b""
    assert 'filename="empty.txt"' in response.headers["Content-Disposition"]


@PROTOCOLS
@pytest.mark.parametrize("deferred", [True, False], ids=["deferred-length", "known-length"])
def test_stream_source(server, node_client, source, source_sha256, protocol, deferred):
    """A stream source (tus-js-client's reader knows no size). With uploadLengthDeferred the
    creation has Upload-Defer-Length and no length, and the length arrives with the PATCH that
    says Upload-Complete: ?1 once the stream has ended (possibly an extra empty PATCH). With a
    known size the last chunk may say Upload-Complete: ?0 (the stream has not signalled its end
    yet) and reach Upload-Length (P8). Either way the upload ends complete and identical, every
    byte received once."""
    options: dict[str, object] = {"uploadLengthDeferred": True} if deferred else {}
    events, traced = run_traced(
        node_client, server, protocol, file=str(source), stream=True, chunkSize=CHUNK, **options
    )
    url = str(last(events, "success")["url"])
    creation, *appends = traced
    assert creation["method"] == "POST"
    if deferred:
        assert creation["request"]["Upload-Defer-Length"] == "1"
        assert "Upload-Length" not in creation["request"]
        assert appends[-1]["request"]["Upload-Length"] == str(SIZE)
        assert appends[-1]["request"]["Upload-Complete"] == "?1"
    else:
        assert creation["request"]["Upload-Length"] == str(SIZE)
    assert int(appends[-1]["response"]["Upload-Offset"]) == SIZE
    assert_server_saw_draft_only(server, POST_201=1, PATCH_201=len(appends))
    assert sample(server, "tusserver_bytes_received_total") == SIZE
    assert_complete(url, protocol, SIZE)
    response, digest = download(url)
    assert response.status_code == 200 and digest == source_sha256


@PROTOCOLS
def test_override_patch_method(server, node_client, source, source_sha256, protocol):
    """overridePatchMethod: tus-js-client appends with POST + X-HTTP-Method-Override: PATCH
    to the upload URL; the server handles them as draft appends (counted as PATCH, the method
    the override names) and the upload ends identical."""
    events, traced = run_traced(
        node_client, server, protocol, file=str(source), chunkSize=CHUNK, overridePatchMethod=True
    )
    url = str(last(events, "success")["url"])
    assert_server_saw_draft_only(server, POST_201=1, PATCH_201=3)
    _, *appends = traced
    assert [(a["method"], a["request"]["X-HTTP-Method-Override"]) for a in appends] == [
        ("POST", "PATCH")
    ] * 3
    assert_appends(appends, url, [0, CHUNK, 2 * CHUNK, SIZE])
    assert_complete(url, protocol, SIZE)
    response, digest = download(url)
    assert response.status_code == 200 and digest == source_sha256
