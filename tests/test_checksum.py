"""Checksum and checksum-trailer extensions against a live server (protocol.md "Checksum").

Trailers are sent over a raw socket as a real chunked request, since no common Python client
sends request trailers.
"""

from __future__ import annotations

import base64
import socket

import httpx
import pytest
from conftest import TUS, create_upload, offset_of, patch, wait_receiving
from rawclient import chunked_request

from conformance.checks import DIGESTS, checksum

ALGORITHMS = DIGESTS  # the conformance suite's reference digests


def upload_path(location: str) -> str:
    return httpx.URL(location).raw_path.decode()


def test_options_advertises_checksum_algorithms(shared_server, client):
    """Checksum: "If supported, the Server MUST add checksum to the Tus-Extension header" and
    "The Tus-Checksum-Algorithm header MUST be included in the response to an OPTIONS request";
    "The Server MUST support at least the SHA1 checksum algorithm identified by sha1"."""
    response = client.options(shared_server.url)
    extensions = response.headers["Tus-Extension"].split(",")
    assert "checksum" in extensions and "checksum-trailer" in extensions
    algorithms = response.headers["Tus-Checksum-Algorithm"].split(",")
    assert set(algorithms) == set(ALGORITHMS)
    assert all(name == name.lower() for name in algorithms)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_matching_checksum_is_accepted(shared_server, client, algorithm):
    """Checksum: "204 No Content if the checksums match and the processing of the data
    succeeded" — for every advertised algorithm, over two chunks."""
    data = bytes(range(256)) * 400
    location = create_upload(client, shared_server.url, len(data))
    first, second = data[:60000], data[60000:]
    response = patch(client, location, 0, first, **{"Upload-Checksum": checksum(algorithm, first)})
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(first))
    response = patch(
        client, location, len(first), second, **{"Upload-Checksum": checksum(algorithm, second)}
    )
    assert response.status_code == 204
    assert client.get(location).content == data


def test_spec_example_sha1(shared_server, client):
    """Checksum example: "Upload-Checksum: sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=" for "hello world"."""
    location = create_upload(client, shared_server.url, 11)
    response = patch(
        client,
        location,
        0,
        b"hello world",
        **{"Upload-Checksum": "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="},
    )
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "11"


def test_mismatch_is_460_and_chunk_discarded(server, client):
    """Checksum: "460 Checksum Mismatch if the checksums mismatch ... the uploaded chunk MUST be
    discarded, and the upload and its offset MUST NOT be updated"."""
    location = create_upload(client, server.url, 10)
    assert patch(client, location, 0, b"01234").status_code == 204
    bad = patch(client, location, 5, b"56789", **{"Upload-Checksum": checksum("sha1", b"nope")})
    assert bad.status_code == 460
    assert offset_of(client, location) == 5
    upload_id = location.rsplit("/", 1)[1]
    assert (server.upload_dir / upload_id).stat().st_size == 5  # the bytes are gone, too
    good = patch(client, location, 5, b"56789", **{"Upload-Checksum": checksum("md5", b"56789")})
    assert good.status_code == 204
    assert client.get(location).content == b"0123456789"


@pytest.mark.parametrize(
    "value",
    [
        "sha3 " + base64.b64encode(b"x" * 20).decode(),
        "whirlpool AAAA",
        "SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
    ],
)
def test_unsupported_algorithm_is_400(shared_server, client, value):
    """Checksum: "400 Bad Request if the checksum algorithm is not supported by the server";
    "In the first two cases the uploaded chunk MUST be discarded"."""
    location = create_upload(client, shared_server.url, 5)
    response = patch(client, location, 0, b"hello", **{"Upload-Checksum": value})
    assert response.status_code == 400
    assert offset_of(client, location) == 0


@pytest.mark.parametrize("value", ["sha1", "sha1 not*base64", "sha1 AAA", "", "sha1  x y"])
def test_malformed_checksum_is_400(shared_server, client, value):
    """Upload-Checksum "MUST consist of the name of the used checksum algorithm and the Base64
    encoded checksum separated by a space": anything else is a bad request, nothing stored."""
    location = create_upload(client, shared_server.url, 5)
    response = patch(client, location, 0, b"hello", **{"Upload-Checksum": value})
    assert response.status_code == 400
    assert offset_of(client, location) == 0


def test_creation_with_upload_checksum(shared_server, client):
    """Creation With Upload: "similar rules as for the PATCH request and response apply" — a
    matching checksum is accepted; a mismatch is 460 with nothing stored, and the Location of
    the created upload is still given so the client can resume it."""
    headers = {**TUS, "Upload-Length": "11", "Content-Type": "application/offset+octet-stream"}
    ok = client.post(
        shared_server.url,
        content=b"hello world",
        headers={**headers, "Upload-Checksum": checksum("sha256", b"hello world")},
    )
    assert ok.status_code == 201 and ok.headers["Upload-Offset"] == "11"
    bad = client.post(
        shared_server.url,
        content=b"hello world",
        headers={**headers, "Upload-Checksum": checksum("sha256", b"hello")},
    )
    assert bad.status_code == 460
    assert offset_of(client, bad.headers["Location"]) == 0
    unsupported = client.post(
        shared_server.url,
        content=b"hello world",
        headers={**headers, "Upload-Checksum": "foo AAAA"},
    )
    assert unsupported.status_code == 400 and "Location" not in unsupported.headers


def test_interrupted_checksummed_chunk_is_discarded(server, client):
    """Checksum: the Server verifies "Once the entire request has been received"; a chunk cut
    off by a newer request cannot be verified, so it is discarded, while without a checksum
    the received part is kept ("store as much of the received data as possible")."""
    results = {}
    for with_checksum in (False, True):
        location = create_upload(client, server.url, 1 << 20)
        extra = (
            f"Upload-Checksum: {checksum('sha1', b'x' * (1 << 20))}\r\n" if with_checksum else ""
        )
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            (
                f"PATCH {upload_path(location)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
                f"Upload-Offset: 0\r\nContent-Length: {1 << 20}\r\n{extra}\r\n"
            ).encode()
            + b"x" * 300_000
        )
        # Once the PATCH holds the upload and receives its body, HEAD takes over: the stalled
        # PATCH stops and saves (or discards) its part.
        wait_receiving(server)
        results[with_checksum] = offset_of(client, location)
        sock.close()
    assert results[False] == 300_000
    assert results[True] == 0


def test_trailer_checksum_match_and_mismatch(shared_server, client):
    """Checksum: the hash "MAY be included as a trailer. If the Server can handle trailers,
    this behavior MUST be announced by adding checksum-trailer"; trailers "MUST be announced
    using the Trailer header and are only allowed in chunked transfers"."""
    data = [b"hello ", b"trailer ", b"world"]
    body = b"".join(data)
    location = create_upload(client, shared_server.url, len(body) * 2)
    headers = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    status, fields, _ = chunked_request(
        shared_server.port,
        "PATCH",
        upload_path(location),
        headers,
        data,
        {"Upload-Checksum": checksum("sha1", b"wrong")},
    )
    assert status == 460
    assert offset_of(client, location) == 0
    status, fields, _ = chunked_request(
        shared_server.port,
        "PATCH",
        upload_path(location),
        headers,
        data,
        {"Upload-Checksum": checksum("crc32", body)},
    )
    assert status == 204 and fields["upload-offset"] == str(len(body))
    headers["Upload-Offset"] = str(len(body))
    status, _, _ = chunked_request(
        shared_server.port,
        "PATCH",
        upload_path(location),
        headers,
        data,
        {"Upload-Checksum": checksum("sha512", body)},
    )
    assert status == 204
    assert client.get(location).content == body * 2


def test_announced_trailer_missing_is_400(shared_server, client):
    """A request that announces an Upload-Checksum trailer but ends without it cannot be
    verified: 400 and the chunk is discarded (Checksum: "the uploaded chunk MUST be
    discarded, and the upload and its offset MUST NOT be updated")."""
    location = create_upload(client, shared_server.url, 5)
    headers = {
        **TUS,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": "0",
        "Trailer": "Upload-Checksum",
    }
    status, _, _ = chunked_request(
        shared_server.port, "PATCH", upload_path(location), headers, [b"hello"]
    )
    assert status == 400
    assert offset_of(client, location) == 0


def test_unannounced_trailer_is_ignored(shared_server, client):
    """Trailer fields must be announced (RFC 7230 4.1.2, cited by Checksum): an unannounced
    Upload-Checksum trailer is not a header either, so the chunk is accepted unchecked."""
    location = create_upload(client, shared_server.url, 5)
    headers = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    lines = [f"{k}: {v}" for k, v in headers.items()]
    wire = (
        f"PATCH {upload_path(location)} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + "\r\n".join(lines)
        + "\r\n\r\n5\r\nhello\r\n0\r\nUpload-Checksum: sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        sock.sendall(wire)
        assert sock.recv(65536).startswith(b"HTTP/1.1 204")
    assert offset_of(client, location) == 5


def test_other_servers_do_not_advertise_checksum_trailer(mounted_app, client):
    """checksum-trailer is announced only "If the Server can handle trailers": a mounted app
    run by stock uvicorn cannot see them, so it advertises checksum alone and never accepts a
    chunk whose announced trailer checksum it could not verify (stock uvicorn may even show a
    trailer that arrives early as a header; then it is verified like one)."""
    url = f"http://127.0.0.1:{mounted_app}/api/tus/files/"
    extensions = client.options(url).headers["Tus-Extension"].split(",")
    assert "checksum" in extensions and "checksum-trailer" not in extensions
    location = create_upload(client, url, 5)
    headers = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    wrong = {"Upload-Checksum": checksum("sha1", b"other")}
    status, _, _ = chunked_request(
        mounted_app, "PATCH", upload_path(location), headers, [b"hello"], wrong
    )
    assert status in (400, 460)
    status, _, _ = chunked_request(
        mounted_app,
        "PATCH",
        upload_path(location),
        {**headers, "Trailer": "Upload-Checksum"},
        [b"hello"],
    )
    assert status == 400  # announced, never sent, and no way to see it: refused up front
    assert offset_of(client, location) == 0
    ok = patch(client, location, 0, b"hello", **{"Upload-Checksum": checksum("sha1", b"hello")})
    assert ok.status_code == 204
