"""Fuzzing with hypothesis: thousands of random and malformed requests against one server.

Rules under test (TEAM.md, "Bad input"): a clear 4xx, never a 5xx; never a file outside the
upload directory; and uploads being written at the same time stay byte-for-byte intact.
Well-formed HTTP goes through httpx; malformed HTTP (bodies longer or shorter than their
Content-Length, garbage request lines, huge headers) through raw sockets.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
from pathlib import Path

import httpx
import pytest
from conftest import TUS, create_upload, patch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MiB = 1024 * 1024
EXAMPLES = int(os.environ.get("TUSSERVER_FUZZ_EXAMPLES", "2000"))
RAW_EXAMPLES = int(os.environ.get("TUSSERVER_FUZZ_RAW_EXAMPLES", "400"))

header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
numbers = st.one_of(
    st.integers(-5, 2**64).map(str),
    st.sampled_from(["", " ", "1e3", "0x10", "+5", "9" * 30, "1,2", "-0"]),
    header_text,
)
metadata = st.one_of(
    header_text,
    st.lists(
        st.tuples(header_text, st.binary(max_size=30)).map(
            lambda kv: f"{kv[0]} {base64.b64encode(kv[1]).decode()}"
        ),
        max_size=4,
    ).map(",".join),
    st.just("k " + "QUFB" * 20000),  # 80 KB header value
)
ids = st.one_of(
    st.sampled_from(
        [
            "../tusserver.db",
            "..%2ftusserver.db",
            "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "..",
            ".locks",
            "tusserver.db",
            "a" * 300,
            "%00",
            "x/../../y",
            "....//....//z",
        ]
    ),
    st.text(
        st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#?"), max_size=40
    ),
)
HEADER_NAMES = [
    "Upload-Length",
    "Upload-Offset",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Concat",
    "Upload-Checksum",
    "Content-Type",
    "Tus-Resumable",
    "X-HTTP-Method-Override",
    "Upload-Expires",
]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "PUT"]))
    target = draw(st.sampled_from(["collection", "known", "random"]))
    headers: dict[str, str] = {}
    if draw(st.integers(0, 9)) > 0:  # mostly present, so requests get past the 412 check
        headers["Tus-Resumable"] = draw(st.sampled_from(["1.0.0"] * 8 + ["0.2.2", ""]))
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=5, unique=True)):
        if name == "Upload-Metadata":
            headers[name] = draw(metadata)
        elif name == "Content-Type":
            headers[name] = draw(
                st.sampled_from(["application/offset+octet-stream", "text/plain", "", "a/b;c"])
            )
        elif name == "X-HTTP-Method-Override":
            headers[name] = draw(st.sampled_from(["PATCH", "DELETE", "HEAD", "GET", "FOO"]))
        elif name in ("Upload-Length", "Upload-Offset", "Upload-Defer-Length"):
            headers[name] = draw(numbers)
        else:
            headers[name] = draw(header_text)
    body = draw(st.binary(max_size=2048))
    return method, target, headers, body if method in ("POST", "PATCH", "PUT") else b""


class Writer(threading.Thread):
    """An honest client uploading a known file in 256 KiB PATCHes while the fuzzer runs."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.data = os.urandom(6 * MiB)
        self.location = ""
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with httpx.Client(timeout=30) as http:
                while not self.stop.is_set():
                    self.location = create_upload(http, self.url, len(self.data))
                    for offset in range(0, len(self.data), 256 * 1024):
                        piece = self.data[offset : offset + 256 * 1024]
                        response = patch(http, self.location, offset, piece)
                        assert response.status_code == 204, response.text
        except BaseException as exc:  # reported by the test
            self.error = exc


def tree(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


@pytest.fixture
def fuzz_server(make_server, tmp_path):
    (tmp_path / "jail").mkdir()
    return make_server(upload_dir=tmp_path / "jail" / "uploads")


def test_fuzz_random_requests(fuzz_server, tmp_path):
    """Thousands of random well-formed HTTP requests: never 5xx, nothing outside the upload
    dir, and a concurrent honest upload comes out intact."""
    server = fuzz_server
    outside_before = tree(tmp_path) - tree(server.upload_dir)
    http = httpx.Client(timeout=30)
    known = [create_upload(http, server.url, 100), create_upload(http, server.url, None)]
    writer = Writer(server.url)
    writer.start()
    seen: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(requests(), st.sampled_from(known), ids)
    def check(request, known_location, random_id) -> None:
        method, target, headers, body = request
        url = {
            "collection": server.url,
            "known": known_location,
            "random": server.url + random_id,
        }[target]
        headers = {name: value.strip() for name, value in headers.items()}  # as httpx requires
        try:
            response = http.request(method, url, headers=headers, content=body)
        except httpx.RemoteProtocolError:
            return  # the server refused malformed HTTP by closing: fine, not a 5xx
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        # 507 is the right answer to an Upload-Length larger than the free disk, not a fault.
        legitimate = response.status_code == 507 and "storage" in response.text
        assert response.status_code < 500 or legitimate, (method, url, headers, response.text)

    check()
    writer.stop.set()
    writer.join(60)
    assert writer.error is None, writer.error
    response = http.head(writer.location, headers=TUS)
    if response.headers.get("Upload-Offset") == str(len(writer.data)):
        path = server.upload_dir / writer.location.rsplit("/", 1)[-1]
        assert path.read_bytes() == writer.data
    http.close()
    outside_after = tree(tmp_path) - tree(server.upload_dir)
    new_outside = {p for p in outside_after - outside_before if not p.name.startswith("server-")}
    assert not new_outside, new_outside
    print(f"status codes seen: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= EXAMPLES * 0.9


def raw_exchange(port: int, payload: bytes) -> bytes:
    """Send bytes, half-close, read whatever comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer


@st.composite
def malformed(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["short", "long", "garbage", "huge-header", "bad-length"]))
    body = draw(st.binary(max_size=4096))
    declared = len(body)
    if kind == "short":
        declared = len(body) + draw(st.integers(1, 10**6))
    elif kind == "long":
        body += draw(st.binary(min_size=1, max_size=4096))
    method = draw(st.sampled_from(["PATCH", "POST", "HEAD", "GET"]))
    target = draw(st.sampled_from(["/files/", "/files/" + "a" * 32, "/files/../x", "/"]))
    lines = [f"{method} {target} HTTP/1.1", "Host: x", "Tus-Resumable: 1.0.0"]
    lines += ["Upload-Length: 10", "Upload-Offset: 0"]
    lines.append("Content-Type: application/offset+octet-stream")
    if kind == "bad-length":
        bad = draw(st.sampled_from(["-1", "abc", "1 2", "", "99999999999999999999"]))
        lines.append(f"Content-Length: {bad}")
    else:
        lines.append(f"Content-Length: {declared}")
    if kind == "huge-header":
        lines.append("X-Big: " + "a" * draw(st.integers(10_000, 200_000)))
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=2000)) + b"\r\n\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_fuzz_malformed_http_over_raw_sockets(fuzz_server):
    """Malformed HTTP: bodies shorter or longer than Content-Length, bad lengths, garbage,
    huge headers. Any answer is a 4xx (or a closed connection), never 5xx; the server stays
    healthy afterwards."""
    server = fuzz_server

    @settings(
        max_examples=RAW_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(malformed())
    def check(payload: bytes) -> None:
        answer = raw_exchange(server.port, payload)
        for status in _statuses(answer):
            assert status < 500, (payload[:300], answer[:300])

    check()
    assert httpx.get(server.origin + "/health").status_code == 200


def _statuses(answer: bytes) -> list[int]:
    statuses = []
    for line in answer.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 "):
            parts = line.split(b" ")
            if len(parts) > 1 and parts[1].isdigit():
                statuses.append(int(parts[1]))
    return statuses
