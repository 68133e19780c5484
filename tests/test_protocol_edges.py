"""Edge cases of the protocol against a live server: checksums that cannot match, bodies of the
wrong type on creation, lengths no disk could ever hold, and where to resume after a full disk.

Each test quotes the protocol.md sentence (tus 1.0.0) it checks.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import (
    ROOT,
    TUS,
    ServerProcess,
    create_upload,
    free_port,
    offset_of,
    patch,
    wait_for,
    wait_listening,
    wait_receiving,
)
from rawclient import chunked_request, patch_request

from tusserver.storage.file import FileStore, file_system_size

OCTET = "application/offset+octet-stream"
MiB = 1024 * 1024


def path_of(location: str) -> str:
    return httpx.URL(location).raw_path.decode()


def sized_checksum(algorithm: str, size: int) -> str:
    """A well-formed Upload-Checksum whose digest has `size` bytes (valid base64)."""
    return f"{algorithm} {base64.b64encode(bytes(size)).decode()}"


def registry_count(server: ServerProcess) -> int:
    with sqlite3.connect(server.upload_dir / "tusserver.db") as db:
        return int(db.execute("select count(*) from uploads").fetchone()[0])


def free_space(server: ServerProcess) -> int:
    """What the server's store reports as free (its 507 threshold)."""
    return FileStore(server.upload_dir).free_space()


def upload_files(server: ServerProcess) -> set[str]:
    """Every file and directory in the upload dir except the registry's own files."""
    return {
        str(p.relative_to(server.upload_dir))
        for p in server.upload_dir.rglob("*")
        if not p.name.startswith("tusserver.db")
    }


# -- 1. a checksum of the wrong length is a mismatch (460), not a bad request ----------------


@pytest.mark.parametrize("algorithm,size", [("sha1", 21), ("md5", 3), ("crc32", 8), ("sha512", 63)])
def test_wrong_length_checksum_is_460_after_the_body(server, client, algorithm, size):
    """Checksum: "Once the entire request has been received, the Server MUST verify the
    uploaded chunk against the provided checksum" ... "460 Checksum Mismatch if the checksums
    mismatch ... the uploaded chunk MUST be discarded, and the upload and its offset MUST NOT
    be updated." A digest of the wrong length is a checksum that does not match; the answer
    comes only once the whole body is in (the server is seen receiving it first)."""
    body = os.urandom(200_000)
    location = create_upload(client, server.url, 5 + len(body))
    assert patch(client, location, 0, b"01234").status_code == 204
    request = patch_request(
        server.port, path_of(location), 5, len(body),
        **{"Upload-Checksum": sized_checksum(algorithm, size)},
    )  # fmt: skip
    try:
        request.send(body[:100_000])
        # a 400 before the body would never get here: the server is reading the body
        wait_receiving(server)
        request.send(body[100_000:])
        status, headers, text = request.response()
    finally:
        request.close()
    assert status == 460, text
    assert b"cannot match" in text
    assert headers["upload-offset"] == "5"
    assert offset_of(client, location) == 5
    assert (server.upload_dir / location.rsplit("/", 1)[1]).stat().st_size == 5
    same = patch(client, location, 5, body, **{"Upload-Checksum": sized_checksum("sha1", 20)})
    assert same.status_code == 460  # right length, wrong value: the same answer
    ok = patch(client, location, 5, body)
    assert ok.status_code == 204 and client.get(location).content == b"01234" + body


@pytest.mark.parametrize(
    "value", ["sha3 " + base64.b64encode(b"x" * 20).decode(), "sha1 not*base64", "sha1 AAA"]
)
def test_unsupported_algorithm_or_bad_base64_stays_400(shared_server, client, value):
    """Checksum: "400 Bad Request if the checksum algorithm is not supported by the server";
    the header "MUST consist of the name of the used checksum algorithm and the Base64 encoded
    checksum", so undecodable base64 is a bad request too; nothing is stored."""
    location = create_upload(client, shared_server.url, 5)
    response = patch(client, location, 0, b"hello", **{"Upload-Checksum": value})
    assert response.status_code == 400, response.text
    assert offset_of(client, location) == 0


def test_wrong_length_checksum_on_creation_with_upload_is_460(shared_server, client):
    """Creation With Upload: "similar rules as for the PATCH request and response apply": a
    wrong-length digest is a mismatch, 460 with the Location of the (empty) upload."""
    response = client.post(
        shared_server.url,
        content=b"hello world",
        headers={
            **TUS,
            "Upload-Length": "11",
            "Content-Type": OCTET,
            "Upload-Checksum": sized_checksum("sha256", 31),
        },
    )
    assert response.status_code == 460, response.text
    assert response.headers["Upload-Offset"] == "0"
    assert offset_of(client, response.headers["Location"]) == 0


def test_wrong_length_trailer_checksum_is_460(server, client):
    """Checksum: the checksum "MAY be included as a trailer" and is verified "Once the entire
    request has been received": a trailer digest of the wrong length is a mismatch (460), the
    chunk is discarded and the offset stays."""
    location = create_upload(client, server.url, 10)
    assert patch(client, location, 0, b"01234").status_code == 204
    headers = {**TUS, "Content-Type": OCTET, "Upload-Offset": "5"}
    wrong = {"Upload-Checksum": sized_checksum("sha1", 21)}
    status, fields, text = chunked_request(
        server.port, "PATCH", path_of(location), headers, [b"567", b"89"], wrong
    )
    assert status == 460, text
    assert fields["upload-offset"] == "5"
    assert offset_of(client, location) == 5
    assert (server.upload_dir / location.rsplit("/", 1)[1]).stat().st_size == 5


# -- 2. a POST body of another type: 415, nothing created ------------------------------------

HOOK = textwrap.dedent(
    """\
    #!/bin/sh
    cat > /dev/null
    echo "$(basename "$0") $TUS_ID" >> "$(dirname "$0")/../calls"
    """
)


@pytest.fixture
def hooked_server(make_server, tmp_path: Path) -> tuple[ServerProcess, Path]:
    """A server whose pre-create and post-create file hooks append to a `calls` file."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for event in ("pre-create", "post-create"):
        (hooks / event).write_text(HOOK)
        (hooks / event).chmod(0o755)
    return make_server("--hooks-dir", str(hooks)), tmp_path / "calls"


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", None])
@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
def test_post_body_of_another_type_is_415(hooked_server, client, content_type, transfer):
    """Creation With Upload: "The Client MUST include the Content-Type:
    application/offset+octet-stream header"; Core: otherwise "the server SHOULD return a 415
    Unsupported Media Type status". The body is not silently dropped: nothing is created and no
    creation hook runs."""
    server, calls = hooked_server
    before = upload_files(server)
    headers = {**TUS, "Upload-Length": "5"}
    if content_type:
        headers["Content-Type"] = content_type
    if transfer == "chunked":
        status, _, text = chunked_request(server.port, "POST", "/files/", headers, [b"hel", b"lo"])
    else:
        response = client.post(server.url, content=b"hello", headers=headers)
        status, text = response.status_code, response.content
    assert status == 415, text
    assert OCTET.encode() in text
    assert registry_count(server) == 0
    assert upload_files(server) == before
    assert not calls.exists()  # pre-create is blocking: it would have run before the answer
    # the same request without a body is an ordinary creation, and the hooks do run for it
    location = create_upload(client, server.url, 5, {"Content-Type": content_type or "x/y"})
    uid = location.rsplit("/", 1)[1]
    wait_for(lambda: f"post-create {uid}" in calls.read_text(), 20, "post-create")
    events = [line.split()[0] for line in calls.read_text().splitlines()]
    assert events == ["pre-create", "post-create"]  # for this upload only (TUS_ID is set later)
    assert registry_count(server) == 1


@pytest.mark.parametrize(
    "headers,chunks",
    [
        ({}, None),
        ({"Content-Type": "text/plain"}, None),
        ({"Content-Type": "application/json", "Content-Length": "0"}, None),
        ({"Content-Type": "text/plain"}, []),  # chunked, ends at once
        ({}, []),
    ],
)
def test_bodyless_post_with_any_content_type_creates(shared_server, client, headers, chunks):
    """Creation: "An empty POST request is used to create a new upload resource"; without a
    body the Content-Type is not creation-with-upload's business, so any (or none) is fine."""
    all_headers = {**TUS, "Upload-Length": "3", **headers}
    if chunks is None:
        response = client.post(shared_server.url, headers=all_headers)
        status, fields = response.status_code, {k.lower(): v for k, v in response.headers.items()}
    else:
        status, fields, _ = chunked_request(
            shared_server.port, "POST", "/files/", all_headers, chunks
        )
    assert status == 201
    assert "upload-offset" not in fields
    assert patch(client, fields["location"], 0, b"abc").status_code == 204


# -- 3. a length no disk could ever hold: 413, not 507 ---------------------------------------


def test_upload_length_beyond_the_disk_is_413(make_server, client):
    """Creation: "If the length of the upload exceeds the maximum ... the Server MUST respond
    with the 413 Request Entity Too Large status." More than the whole file system can never
    fit (413, said plainly); more than is free today but less than the disk stays 507 (space
    may be freed). Tus-Max-Size stays what --max-size says."""
    server = make_server("--max-size", "1000T")
    assert client.options(server.url).headers["Tus-Max-Size"] == str(1000 * 2**40)
    total = file_system_size(server.upload_dir)
    before = upload_files(server)
    for headers in ({}, {"Content-Type": OCTET}):
        never = client.post(server.url, headers={**TUS, "Upload-Length": str(total + 1), **headers})
        assert never.status_code == 413, never.text
        assert "never fit" in never.text and never.headers["content-type"].startswith("text/plain")
    assert free_space(server) < total  # something is on the disk: the next can't fit
    later = client.post(server.url, headers={**TUS, "Upload-Length": str(total)})
    assert later.status_code == 507, later.text
    assert registry_count(server) == 0 and upload_files(server) == before


def test_deferred_length_beyond_the_disk_is_413(shared_server, client):
    """Creation: "the Client MUST set the Upload-Length header in the next PATCH request, once
    the length is known"; a length more than the whole disk gets 413 and the upload is left
    as it was (still deferred, offset unchanged), so a real length can follow."""
    location = create_upload(client, shared_server.url, None)
    total = file_system_size(shared_server.upload_dir)
    response = patch(client, location, 0, b"abc", **{"Upload-Length": str(total + 1)})
    assert response.status_code == 413, response.text
    assert "never fit" in response.text
    head = client.head(location, headers=TUS)
    assert head.headers["Upload-Offset"] == "0" and head.headers["Upload-Defer-Length"] == "1"
    assert patch(client, location, 0, b"abc", **{"Upload-Length": "3"}).status_code == 204


def test_final_concatenation_beyond_the_disk_is_413(server, client):
    """Concatenation: "The length of the final upload MUST be the sum of the length of all
    partial uploads"; when that sum is more than the whole disk, creating the final gets 413
    (a partial may be listed several times)."""
    total, free = file_system_size(server.upload_dir), free_space(server)
    length = min(free // 4, total // 4)
    times = total // length + 1
    if times > 200:
        pytest.skip(f"disk too full to build a final of more than {total} bytes from partials")
    partial = create_upload(client, server.url, length, {"Upload-Concat": "partial"})
    final = f"final;{' '.join([path_of(partial)] * times)}"
    response = client.post(server.url, headers={**TUS, "Upload-Concat": final})
    assert response.status_code == 413, response.text
    assert "never fit" in response.text
    assert registry_count(server) == 1  # the partial only
    ok = client.post(server.url, headers={**TUS, "Upload-Concat": f"final;{path_of(partial)}"})
    assert ok.status_code == 201


# -- 4. a PATCH cut short by a full disk says where to resume --------------------------------

FULL_SERVER = textwrap.dedent(
    """\
    import dataclasses, os, sys
    from pathlib import Path

    import uvicorn

    from tusserver.app import create_app
    from tusserver.backends import build
    from tusserver.config import Settings
    from tusserver.core import TusCore
    from tusserver.storage import StoreFull
    from tusserver.storage.file import FileStore, FileWriter

    PORT, DIRECTORY, CAPACITY = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])


    class FullWriter(FileWriter):
        def write(self, pieces):
            room = CAPACITY - os.fstat(self.fd).st_size
            data = b"".join(pieces)
            if len(data) > room:
                super().write([data[: max(0, room)]])
                raise StoreFull(28, "no space left for upload data (simulated)")
            return super().write(pieces)


    class FullStore(FileStore):
        def writer(self, info, parts=(), reserve=None):
            return FullWriter(self.local_path(info.id), info.offset)


    settings = Settings(upload_dir=DIRECTORY)
    backends = dataclasses.replace(build(settings), store=FullStore(settings.upload_dir))
    app = create_app(settings, TusCore(settings, backends))
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
    """
)


@pytest.fixture
def full_store_server(tmp_path: Path) -> Iterator[str]:
    """A real server (stock uvicorn) whose store hits ENOSPC at 1 MiB + 12345 bytes."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", FULL_SERVER, str(port), str(tmp_path / "up"), str(MiB + 12345)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}/files/"
    finally:
        proc.terminate()
        proc.wait(10)


def test_507_mid_body_carries_upload_offset_simulated(full_store_server, client):
    """Core/PATCH: "The Server SHOULD always attempt to store as much of the received data as
    possible"; the 507 that ends a PATCH on a full disk (simulated ENOSPC through the store)
    carries the recorded Upload-Offset, the same value HEAD reports, so a client can resume
    without asking first."""
    data = os.urandom(3 * MiB)
    location = create_upload(client, full_store_server, len(data))
    full = patch(client, location, 0, data)
    assert full.status_code == 507, full.text
    kept = offset_of(client, location)
    assert 0 < kept < len(data)
    assert full.headers["Upload-Offset"] == str(kept)


def test_small_disk_413_507_and_resume_offset(make_server, tmpfs):
    """On a real 8 MiB file system: a length over 8 MiB can never fit (413, Creation: "the
    Server MUST respond with the 413 Request Entity Too Large status"); 8 MiB fits the disk but
    not its free space (507); a PATCH that fills the disk gets 507 with the Upload-Offset that
    HEAD then reports (Core: "store as much of the received data as possible"), and resumes
    from there once space is freed."""
    server = make_server("--min-free-space", "256K", upload_dir=tmpfs / "uploads")
    http = httpx.Client(timeout=30)
    never = http.post(server.url, headers={**TUS, "Upload-Length": str(8 * MiB + 1)})
    assert never.status_code == 413 and "never fit" in never.text
    not_now = http.post(server.url, headers={**TUS, "Upload-Length": str(8 * MiB)})
    assert not_now.status_code == 507 and "storage" in not_now.text

    filler, data = os.urandom(5 * MiB), os.urandom(3 * MiB)
    a = create_upload(http, server.url, len(filler))
    c = create_upload(http, server.url, len(data))
    assert patch(http, a, 0, filler).status_code == 204
    full = patch(http, c, 0, data)
    assert full.status_code == 507, full.text
    kept = offset_of(http, c)
    assert 0 <= kept < len(data)
    assert full.headers["Upload-Offset"] == str(kept)
    assert http.delete(a, headers=TUS).status_code == 204
    resumed = patch(http, c, int(full.headers["Upload-Offset"]), data[kept:])
    assert resumed.status_code == 204, resumed.text
    assert http.get(c).content == data
    http.close()
