"""A raw-socket HTTP/1.1 client for tests that must control every byte on the wire:
bodies sent piece by piece (to kill or stop a server mid-body), bodies shorter or longer than
Content-Length, malformed requests. Real clients (tuspy, httpx, curl) cannot do that."""

from __future__ import annotations

import socket


class RawRequest:
    """One request on its own connection: headers first, then body pieces as the test likes."""

    def __init__(
        self,
        port: int,
        method: str,
        path: str,
        headers: dict[str, str],
        timeout: float = 20.0,
    ):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.sent = 0

    def send(self, data: bytes) -> bool:
        """Send body bytes; False if the server closed the connection meanwhile."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        self.sent += len(data)
        return True

    def response_head(self) -> tuple[int, dict[str, str], bytes]:
        """Status and headers (lower-case names) of the answer, and the bytes read past them
        (for HEAD requests, whose Content-Length announces no body)."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed before a response: {buf[:200]!r}")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, rest

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lower-case names) and body of the answer (Content-Length bodies)."""
        status, headers, rest = self.response_head()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest[:length]

    def close(self) -> None:
        self.sock.close()


def chunked_request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    chunks: list[bytes],
    trailers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One chunked request, with `trailers` announced in a Trailer header and sent after the
    last chunk (clients like httpx cannot send trailers); status, headers and body."""
    announce = {"Transfer-Encoding": "chunked", **headers}
    if trailers:
        announce["Trailer"] = ", ".join(trailers)
    wire = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks)
    wire += b"0\r\n"
    wire += "".join(f"{name}: {value}\r\n" for name, value in (trailers or {}).items()).encode()
    request = RawRequest(port, method, path, announce, timeout=10)
    try:
        request.send(wire + b"\r\n")
        return request.response()
    finally:
        request.close()


def patch_request(port: int, path: str, offset: int, length: int, **extra: str) -> RawRequest:
    """Start a tus PATCH that announces `length` body bytes."""
    headers = {
        "Tus-Resumable": "1.0.0",
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(length),
        **extra,
    }
    return RawRequest(port, "PATCH", path, headers)
