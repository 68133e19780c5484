"""The raw large-body path of the `tusserver` command's HTTP protocol (tusserver.fastbody):
bodies of 64 KiB and more bypass the HTTP parser, so its framing must stay exact: keep-alive
and pipelined requests after a large body, bodies split at odd places, early answers."""

from __future__ import annotations

import itertools
import os
import socket
import urllib.parse

from conftest import TUS, create_upload

MiB = 1024 * 1024


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str]]]:
    """`count` responses from one connection (all bodies Content-Length framed)."""
    buf = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            buf += sock.recv(65536)
        buf = buf[length:]
        out.append((int(lines[0].split(" ")[1]), headers))
    return out


def patch_bytes(path: str, offset: int, body: bytes) -> bytes:
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def head_bytes(path: str) -> bytes:
    return f"HEAD {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n\r\n".encode()


def test_pipelined_requests_after_large_bodies(server, client):
    """Two large PATCHes and a HEAD written in one go on one connection, cut into pieces at
    awkward places (inside headers, exactly at body ends): three correct answers, exact bytes.
    Core/PATCH: "The Server MUST acknowledge successful PATCH requests with the 204 No Content
    status. It MUST include the Upload-Offset header containing the new offset."""
    data = os.urandom(3 * MiB + 12345)
    location = create_upload(client, server.url, len(data))
    path = urllib.parse.urlparse(location).path
    split = 2 * MiB + 7
    wire = (
        patch_bytes(path, 0, data[:split])
        + patch_bytes(path, split, data[split:])
        + head_bytes(path)
    )
    cuts = sorted({0, 10, 200, 70_000, split, split + 150, len(wire) - 30, len(wire)})
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        for start, end in itertools.pairwise(cuts):
            sock.sendall(wire[start:end])
        answers = read_responses(sock, 3)
    assert [status for status, _ in answers] == [204, 204, 200]
    assert answers[0][1]["upload-offset"] == str(split)
    assert answers[1][1]["upload-offset"] == str(len(data))
    assert answers[2][1]["upload-offset"] == str(len(data))
    assert (server.upload_dir / path.rsplit("/", 1)[-1]).read_bytes() == data


def test_early_answer_to_a_large_body_keeps_the_connection_usable(shared_server, client):
    """A large PATCH with a wrong offset is answered 409 before its body is read (Core/PATCH:
    "If the offsets do not match, the Server MUST respond with the 409 Conflict status without
    modifying the upload resource"); the unread body is skipped and the next request on the
    same connection is answered correctly."""
    location = create_upload(client, shared_server.url, 2 * MiB)
    path = urllib.parse.urlparse(location).path
    wire = patch_bytes(path, 5, os.urandom(MiB)) + head_bytes(path)
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=20) as sock:
        sock.sendall(wire)
        answers = read_responses(sock, 2)
    assert answers[0][0] == 409
    assert answers[1] == (200, answers[1][1])
    assert answers[1][1]["upload-offset"] == "0"
    assert client.head(location, headers=TUS).headers["Upload-Offset"] == "0"
