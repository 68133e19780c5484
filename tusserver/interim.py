"""Interim (1xx) responses between the app and the `tusserver` command's HTTP protocol.

ASGI defines no message for a 1xx response other than 103 Early Hints (which uvicorn does not
implement), yet the IETF resumable-upload draft announces an upload with `104 (Upload
Resumption Supported)` before its body is read. tusserver.fastbody's protocol offers the scope
extension INTERIM_EXTENSION (never to HTTP/1.0 clients) and writes an INTERIM_MESSAGE sent
through ASGI `send` straight to the socket; `send_interim` is the app's side, a no-op where
the extension is missing (create_app() mounted under another server).
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from starlette.requests import Request

INTERIM_EXTENSION = "tusserver.interim"
INTERIM_MESSAGE = "tusserver.http.response.interim"
REASONS = {104: "Upload Resumption Supported"}


def supports_interim(request: Request) -> bool:
    """Whether the server running the app can send a 1xx for this request."""
    return INTERIM_EXTENSION in request.scope.get("extensions", {})


async def send_interim(request: Request, status: int, headers: Mapping[str, str]) -> bool:
    """Send one interim response if the server can; False when it cannot (nothing sent)."""
    if not supports_interim(request):
        return False
    encoded = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]
    await request._send({"type": INTERIM_MESSAGE, "status": status, "headers": encoded})
    return True


def interim_head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The bytes of an HTTP/1.1 interim response. Only 1xx codes other than 101 (which
    switches protocols) are allowed, and header lines are checked for CR/LF (no response
    splitting, whatever the app passes)."""
    if not 100 <= status < 200 or status == 101:
        raise ValueError(f"{status} is not an interim status")
    reason = REASONS.get(status) or _phrase(status)
    lines = [f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")]
    for name, value in headers:
        if b"\r" in name + value or b"\n" in name + value or b":" in name:
            raise ValueError(f"invalid interim header {name!r}")
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Informational"
