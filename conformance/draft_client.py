"""A minimal HTTP/1.1 client for the IETF resumable-upload draft, on a raw socket (TLS for
https URLs).

Common Python HTTP clients hide interim (1xx) responses, and the draft's `104 (Upload
Resumption Supported)` is the point: it carries the upload's Location before the body has
been sent. `Exchange` writes a request head, body pieces as the caller wants them (with pauses,
or cut off by closing the socket), and reads every interim response and the final one in wire
order. Server-agnostic: the conformance suite and tusserver's own tests both use it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Head:
    """A response head: status, reason and the header fields (names lower-cased, repeats kept)."""

    status: int
    reason: str
    fields: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The field's value, repeats joined with ", " (RFC 9110 §5.3); `default` if absent."""
        values = self.get_all(name)
        return ", ".join(values) if values else default

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key == name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value


@dataclass
class Reply:
    """The final response and the interim responses that came before it, in order."""

    status: int
    headers: Head
    body: bytes
    interims: list[Head]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Exchange:
    """One request on its own connection (closed when the reply has been read).

    `Exchange(url, "POST", headers)` sends the head at once; `send` writes body bytes (the
    caller's Content-Length or chunking is its own business: `chunked=True` frames each `send`
    as one chunk and `finish` writes the last one); `interim` waits for the next 1xx; `reply`
    reads the rest; `cut` closes the socket mid-body, as a dropped connection does.
    """

    def __init__(
        self,
        url: str,
        method: str,
        headers: Mapping[str, str],
        *,
        http_version: str = "1.1",
        chunked: bool = False,
        timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.method = method
        self.chunked = chunked
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if parts.scheme == "https":
            context = ssl.create_default_context()
            self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
        self.buffer = b""
        self.interims: list[Head] = []
        lines = [f"{method} {path} HTTP/{http_version}", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        if not any(name.lower() == "connection" for name in headers):
            lines.append("Connection: close")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    # -- sending ---------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if not data:
            return
        if self.chunked:
            data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
        self.sock.sendall(data)

    def send_all(self, pieces: Iterable[bytes], pause: float = 0.0) -> None:
        for piece in pieces:
            self.send(piece)
            if pause:
                time.sleep(pause)

    def finish(self) -> None:
        """End a chunked body (no-op otherwise)."""
        if self.chunked:
            self.sock.sendall(b"0\r\n\r\n")

    def cut(self) -> None:
        """Drop the connection now (a client that lost its network mid-body)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    # -- reading ---------------------------------------------------------------------------

    def interim(self, timeout: float = 10.0) -> Head:
        """The next interim response (AssertionError if a final response comes instead)."""
        head = self._read_head(timeout)
        if not 100 <= head.status < 200:
            raise AssertionError(f"expected an interim response, got {head.status}")
        self.interims.append(head)
        return head

    def reply(self, timeout: float = 30.0) -> Reply:
        """Every remaining interim response and the final response with its body."""
        while True:
            head = self._read_head(timeout)
            if 100 <= head.status < 200:
                self.interims.append(head)
                continue
            body = self._read_body(head, timeout)
            self.sock.close()
            return Reply(head.status, head, body, list(self.interims))

    def _fill(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def _fill_or_fail(self, timeout: float) -> None:
        if not self._fill(timeout):
            raise ConnectionError("connection closed in the middle of a chunked body")

    def _read_head(self, timeout: float) -> Head:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill(timeout):
                raise ConnectionError(f"connection closed before a response head: {self.buffer!r}")
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        _version, status, *reason = status_line.split(" ", 2)
        fields = []
        for line in lines:
            name, _, value = line.partition(":")
            fields.append((name.strip().lower(), value.strip()))
        return Head(int(status), reason[0] if reason else "", fields)

    def _read_body(self, head: Head, timeout: float) -> bytes:
        if head.status in (204, 304) or self.method == "HEAD":
            return b""
        length = head.get("content-length")
        if length is not None:
            while len(self.buffer) < int(length):
                if not self._fill(timeout):
                    break
            body, self.buffer = self.buffer[: int(length)], self.buffer[int(length) :]
            return body
        if "chunked" in (head.get("transfer-encoding") or "").lower():
            return self._read_chunked(timeout)
        while self._fill(timeout):
            pass
        body, self.buffer = self.buffer, b""
        return body

    def _read_chunked(self, timeout: float) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buffer:
                self._fill_or_fail(timeout)
            size_line, self.buffer = self.buffer.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(self.buffer) < size + 2:
                self._fill_or_fail(timeout)
            body += self.buffer[:size]
            self.buffer = self.buffer[size + 2 :]
            if size == 0:
                return body


def request(
    url: str,
    method: str,
    headers: Mapping[str, str],
    body: bytes = b"",
    *,
    http_version: str = "1.1",
    timeout: float = 30.0,
) -> Reply:
    """One whole request: head, body (Content-Length set unless given), then the reply."""
    fields = dict(headers)
    framed = any(name.lower() in ("content-length", "transfer-encoding") for name in fields)
    if (method not in ("HEAD", "GET", "DELETE", "OPTIONS") or body) and not framed:
        fields["Content-Length"] = str(len(body))
    exchange = Exchange(url, method, fields, http_version=http_version, timeout=timeout)
    exchange.send(body)
    return exchange.reply(timeout)
