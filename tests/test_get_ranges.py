"""GET downloads through the store's reader: the whole body, single byte ranges (RFC 9110
§14), 416, ranges the server ignores, filenames, large bodies and clients that leave early."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
from pathlib import Path

import httpx
import pytest
from conftest import ServerProcess, create_upload, patch, wait_for

from tusserver.ranges import Unsatisfiable, byte_range

MiB = 1024 * 1024
DIGITS = b"0123456789"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def finished_upload(
    http: httpx.Client, server: ServerProcess, data: bytes, metadata: str | None = None
) -> str:
    """A finished upload holding `data`; returns its URL."""
    headers = {"Upload-Metadata": metadata} if metadata else None
    location = create_upload(http, server.url, len(data), headers)
    assert patch(http, location, 0, data).status_code == 204
    return location


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=2-5", 10, (2, 6)),
        ("bytes=7-", 10, (7, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=5-99999999999999999999999", 10, (5, 10)),
        ("BYTES=0-1", 10, (0, 2)),
        ("bytes= 1-2 ,", 10, (1, 3)),  # empty list elements are ignored
        ("bytes=0005-0007", 10, (5, 8)),
        ("bytes=5-2", 10, None),  # last before first: invalid, so ignored
        ("bytes=0-1,3-4", 10, None),  # several ranges: the whole body instead
        ("items=0-1", 10, None),
        ("bytes 0-1", 10, None),
        ("bytes=", 10, None),
        ("bytes=abc", 10, None),
        ("bytes=--1", 10, None),
        ("bytes=1-2-3", 10, None),
        ("bytes=-1", 0, None),  # an empty body has no range to describe
        ("bytes=0-" + "9" * 5000, 10, (0, 10)),  # more digits than int() takes
    ],
)
def test_byte_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10-", 10),
        ("bytes=10-20", 10),
        ("bytes=-0", 10),
        ("bytes=0-", 0),
        ("bytes=" + "9" * 50 + "-", 10),
    ],
)
def test_byte_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        byte_range(header, size)


def test_full_download(shared_server: ServerProcess, client: httpx.Client) -> None:
    location = finished_upload(client, shared_server, DIGITS)
    response = client.get(location)
    assert response.status_code == 200
    assert response.content == DIGITS
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Length"] == "10"
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Content-Range" not in response.headers


def test_empty_download(shared_server: ServerProcess, client: httpx.Client) -> None:
    location = create_upload(client, shared_server.url, 0)
    for headers in [{}, {"Range": "bytes=-5"}]:
        response = client.get(location, headers=headers)
        assert response.status_code == 200 and response.content == b""
        assert response.headers["Content-Length"] == "0"


@pytest.mark.parametrize(
    ("header", "content", "content_range"),
    [
        ("bytes=2-5", b"2345", "bytes 2-5/10"),
        ("bytes=0-0", b"0", "bytes 0-0/10"),
        ("bytes=7-", b"789", "bytes 7-9/10"),
        ("bytes=-3", b"789", "bytes 7-9/10"),
        ("bytes=5-100", b"56789", "bytes 5-9/10"),
        ("bytes=-100", DIGITS, "bytes 0-9/10"),
    ],
)
def test_single_range(
    shared_server: ServerProcess,
    client: httpx.Client,
    header: str,
    content: bytes,
    content_range: str,
) -> None:
    location = finished_upload(client, shared_server, DIGITS)
    response = client.get(location, headers={"Range": header})
    assert response.status_code == 206
    assert response.content == content
    assert response.headers["Content-Range"] == content_range
    assert response.headers["Content-Length"] == str(len(content))
    assert response.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_range(
    shared_server: ServerProcess, client: httpx.Client, header: str
) -> None:
    location = finished_upload(client, shared_server, DIGITS)
    response = client.get(location, headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == "bytes */10"
    assert response.content == b""


@pytest.mark.parametrize(
    "header", ["bytes=5-2", "bytes=0-1,3-4", "bytes=0-1, 5-", "items=0-1", "bytes=x-y", "bytes"]
)
def test_ignored_range_sends_everything(
    shared_server: ServerProcess, client: httpx.Client, header: str
) -> None:
    location = finished_upload(client, shared_server, DIGITS)
    response = client.get(location, headers={"Range": header})
    assert response.status_code == 200
    assert response.content == DIGITS
    assert "Content-Range" not in response.headers


@pytest.mark.parametrize(
    ("filename", "filetype", "disposition"),
    [
        (
            "zoë résumé.pdf",
            "application/pdf",
            "inline; filename*=utf-8''zo%C3%AB%20r%C3%A9sum%C3%A9.pdf",
        ),
        (
            "../../etc/报告.html",
            "text/html",
            "attachment; filename*=utf-8''%E6%8A%A5%E5%91%8A.html",
        ),
        ('plain"name.txt', "text/plain", 'inline; filename="plainname.txt"'),
    ],
)
def test_filenames(
    shared_server: ServerProcess,
    client: httpx.Client,
    filename: str,
    filetype: str,
    disposition: str,
) -> None:
    metadata = f"filename {b64(filename)},filetype {b64(filetype)}"
    location = finished_upload(client, shared_server, DIGITS, metadata)
    response = client.get(location, headers={"Range": "bytes=1-2"})
    assert response.status_code == 206 and response.content == b"12"
    assert response.headers["Content-Disposition"] == disposition
    assert response.headers["Content-Type"].split(";")[0] == filetype


def test_large_download_is_byte_identical(
    shared_server: ServerProcess, client: httpx.Client
) -> None:
    data = os.urandom(20 * MiB)
    location = finished_upload(client, shared_server, data)
    digest = hashlib.sha256()
    with client.stream("GET", location) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(data))
        for piece in response.iter_bytes():
            digest.update(piece)
    assert digest.digest() == hashlib.sha256(data).digest()
    start, end = MiB - 3, 3 * MiB + 5  # across the reader's chunk boundaries
    partial = client.get(location, headers={"Range": f"bytes={start}-{end}"})
    assert partial.status_code == 206
    assert partial.content == data[start : end + 1]


def _open_fds(pid: int, path: Path) -> int:
    """How many descriptors of process `pid` refer to `path`."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(fd) == str(path)
    return count


def test_client_leaving_mid_download_closes_the_reader(
    shared_server: ServerProcess, client: httpx.Client
) -> None:
    location = finished_upload(client, shared_server, os.urandom(20 * MiB))
    assert shared_server.proc is not None
    pid = shared_server.proc.pid
    path = (shared_server.upload_dir / location.rsplit("/", 1)[1]).resolve()
    request = f"GET {location.split(str(shared_server.port), 1)[1]} HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", shared_server.port)) as sock:
            sock.sendall(request.encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            wait_for(lambda: _open_fds(pid, path), 10, "the reader open")
    wait_for(lambda: _open_fds(pid, path) == 0, 10, "the reader closed")
