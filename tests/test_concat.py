"""Concatenation and concatenation-unfinished against a live server (protocol.md
"Concatenation"). Parallel uploads by real clients are in test_interop_node.py."""

from __future__ import annotations

import base64
import concurrent.futures
import fcntl
import os

import httpx
import pytest
from conftest import TUS, create_upload, patch

PARTIAL = {"Upload-Concat": "partial"}


def partial(client: httpx.Client, url: str, data: bytes | None, length: int | None = -1) -> str:
    """A partial upload; `data` is uploaded right away unless None."""
    size = len(data or b"") if length == -1 else length
    location = create_upload(client, url, size, PARTIAL)
    if data is not None:
        assert patch(client, location, 0, data).status_code == 204
    return location


def final(client: httpx.Client, url: str, *locations: str, **headers: str) -> httpx.Response:
    value = "final;" + " ".join(locations)
    return client.post(url, headers={**TUS, "Upload-Concat": value, **headers})


def relative(location: str) -> str:
    return httpx.URL(location).path


def test_concatenation_of_finished_partials(shared_server, client):
    """Concatenation: "Multiple partial uploads are concatenated into a final upload in the
    specified order"; "The length of the final upload MUST be the sum of the length of all
    partial uploads"; URLs "MAY be absolute or relative"; after concatenation "Upload-Offset
    and Upload-Length MUST be set and their values MUST be equal"; HEAD "MUST include the
    Upload-Concat header and its value as received in the upload creation request"."""
    a = partial(client, shared_server.url, b"hello")
    b = partial(client, shared_server.url, b" world")
    c = partial(client, shared_server.url, b"")
    value = f"final;{relative(a)} {b} {c}"
    response = client.post(shared_server.url, headers={**TUS, "Upload-Concat": value})
    assert response.status_code == 201, response.text
    head = client.head(response.headers["Location"], headers=TUS)
    assert head.status_code == 200
    assert head.headers["Upload-Length"] == head.headers["Upload-Offset"] == "11"
    assert head.headers["Upload-Concat"] == value
    assert head.headers["Cache-Control"] == "no-store"
    assert client.get(response.headers["Location"]).content == b"hello world"
    partial_head = client.head(a, headers=TUS)
    assert partial_head.headers["Upload-Concat"] == "partial"
    assert partial_head.headers["Upload-Offset"] == "5"


def test_patch_to_final_is_403(shared_server, client):
    """Concatenation: "The Server MUST respond with the 403 Forbidden status to PATCH requests
    against a final upload URL and MUST NOT modify the final or its partial uploads"."""
    a = partial(client, shared_server.url, None, 4)
    location = final(client, shared_server.url, a).headers["Location"]
    response = patch(client, location, 0, b"data")
    assert response.status_code == 403
    assert client.head(a, headers=TUS).headers["Upload-Offset"] == "0"
    assert "Upload-Offset" not in client.head(location, headers=TUS).headers


def test_final_before_partials_finish(shared_server, client):
    """concatenation-unfinished: "The Client MAY send the concatenation request while the
    partial uploads are still in progress"; a final's HEAD "SHOULD NOT contain the
    Upload-Offset header unless the concatenation has been successfully finished" and
    "Upload-Length header MUST be included if the length ... can be calculated"."""
    extensions = client.options(shared_server.url).headers["Tus-Extension"].split(",")
    assert "concatenation" in extensions and "concatenation-unfinished" in extensions
    a = partial(client, shared_server.url, None, 6)
    b = partial(client, shared_server.url, None, 5)
    assert patch(client, a, 0, b"par").status_code == 204
    response = final(client, shared_server.url, a, b)
    assert response.status_code == 201
    location = response.headers["Location"]
    head = client.head(location, headers=TUS)
    assert "Upload-Offset" not in head.headers
    assert head.headers["Upload-Length"] == "11"
    assert client.get(location).status_code == 409  # nothing to download yet
    assert patch(client, b, 0, b"world").status_code == 204
    assert "Upload-Offset" not in client.head(location, headers=TUS).headers
    assert patch(client, a, 3, b"ts ").status_code == 204  # the last partial completes it
    head = client.head(location, headers=TUS)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == "11"
    assert client.get(location).content == b"parts world"


def test_deferred_length_partial(shared_server, client):
    """Concatenation: Upload-Length only once it "can be calculated": a partial that defers
    its length keeps the final's length unknown until the partial declares it."""
    a = partial(client, shared_server.url, b"abc")
    b = partial(client, shared_server.url, None, None)
    location = final(client, shared_server.url, a, b).headers["Location"]
    head = client.head(location, headers=TUS)
    assert "Upload-Length" not in head.headers and "Upload-Offset" not in head.headers
    assert patch(client, b, 0, b"de").status_code == 204
    assert "Upload-Length" not in client.head(location, headers=TUS).headers
    assert patch(client, b, 2, b"f", **{"Upload-Length": "3"}).status_code == 204
    head = client.head(location, headers=TUS)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == "6"
    assert client.get(location).content == b"abcdef"


def test_metadata_is_not_inherited(shared_server, client):
    """Concatenation: "the partial uploads' metadata SHALL NOT be transferred to the new final
    upload. All metadata SHOULD be included in the concatenation request"."""
    enc = base64.b64encode(b"part.txt").decode()
    a = create_upload(
        client, shared_server.url, 2, {**PARTIAL, "Upload-Metadata": f"filename {enc}"}
    )
    patch(client, a, 0, b"hi")
    own = "filename " + base64.b64encode(b"whole.txt").decode()
    location = final(client, shared_server.url, a, **{"Upload-Metadata": own}).headers["Location"]
    assert client.head(location, headers=TUS).headers["Upload-Metadata"] == own
    bare = final(client, shared_server.url, a).headers["Location"]
    assert "Upload-Metadata" not in client.head(bare, headers=TUS).headers


def test_partials_reused_in_several_finals(shared_server, client):
    """Concatenation: partial uploads "MAY however be used multiple times to form a final
    resource"."""
    a = partial(client, shared_server.url, b"A")
    b = partial(client, shared_server.url, b"B")
    ab = final(client, shared_server.url, a, b).headers["Location"]
    bab = final(client, shared_server.url, b, a, b).headers["Location"]
    assert client.get(ab).content == b"AB"
    assert client.get(bab).content == b"BAB"


def test_invalid_partial_references(server, client, tmp_path):
    """Partial URLs must name partial uploads of this server: unknown -> 404, not partial or
    not an upload URL -> 400, terminated -> 410; never a file outside the upload directory."""
    plain = create_upload(client, server.url, 1)
    gone = partial(client, server.url, b"x")
    assert client.delete(gone, headers=TUS).status_code == 204
    good = partial(client, server.url, b"y")
    (server.upload_dir / "notes").write_bytes(b"secret")
    cases = {
        server.url + "0" * 32: 404,
        plain: 400,
        gone: 410,
        "/etc/passwd": 400,
        relative(good) + "/../notes": 400,
        server.url + "..%2Fnotes": 400,
        server.url + "tusserver.db": 400,
        "http://127.0.0.1:1/elsewhere/" + good.rsplit("/", 1)[1]: 400,
    }
    for url, status in cases.items():
        response = final(client, server.url, good, url)
        assert response.status_code == status, (url, response.text)
    for value in ("final;", "final", "partial;x", "bogus", "final ;"):
        response = client.post(server.url, headers={**TUS, "Upload-Concat": value})
        assert response.status_code == 400, value
    with_length = final(client, server.url, good, **{"Upload-Length": "1"})
    assert with_length.status_code == 400
    assert client.head(good, headers=TUS).headers["Upload-Offset"] == "1"


def test_final_respects_max_size(make_server, client):
    """Creation: "If the length of the upload exceeds the maximum ... the Server MUST respond
    with the 413 Request Entity Too Large status" — also for a final's summed length."""
    server = make_server("--max-size", "10")
    a = partial(client, server.url, b"123456")
    b = partial(client, server.url, b"654321")
    assert final(client, server.url, a, b).status_code == 413


def test_partials_finishing_concurrently_on_two_workers(make_server, client):
    """Several workers finish partials of one final at the same time: the final is assembled
    exactly once, correctly, whichever request records the last partial."""
    server = make_server("--workers", "2")
    pieces = [os.urandom(256 * 1024) for _ in range(6)]
    locations = [partial(client, server.url, None, len(p)) for p in pieces]
    location = final(client, server.url, *locations).headers["Location"]

    def send(index: int) -> int:
        with httpx.Client(timeout=30) as http:
            return patch(http, locations[index], 0, pieces[index]).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert list(pool.map(send, range(6))) == [204] * 6
    head = client.head(location, headers=TUS)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(256 * 1024 * 6)
    assert client.get(location).content == b"".join(pieces)


@pytest.mark.parametrize("body", [b"", b"data"])
def test_final_with_body_or_defer_header(shared_server, client, body):
    """A final upload is created empty ("The Client MUST NOT include the Upload-Length header
    in the final upload creation"); a body for it is refused, an empty one is fine."""
    a = partial(client, shared_server.url, b"z")
    response = client.post(
        shared_server.url,
        content=body,
        headers={
            **TUS,
            "Upload-Concat": f"final;{a}",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert response.status_code == (201 if not body else 400)


def test_head_assembles_a_final_left_unassembled(make_server, client):
    """If the request that completed the last partial could not assemble the final (here its
    lock is held by someone else, as after a crash mid-way), the next HEAD of the final does:
    a final's HEAD has Upload-Offset only "after successful concatenation"."""
    server = make_server("--lock-timeout", "0.2")
    a = partial(client, server.url, b"first,")
    b = partial(client, server.url, None, 7)
    location = final(client, server.url, a, b).headers["Location"]
    lock_file = server.upload_dir / ".locks" / (location.rsplit("/", 1)[1] + ".lock")
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a holder that never lets go
        assert patch(client, b, 0, b"second!").status_code == 204
        assert client.get(location).status_code == 409  # not assembled yet
    finally:
        os.close(fd)
    head = client.head(location, headers=TUS)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == "13"
    assert client.get(location).content == b"first,second!"
