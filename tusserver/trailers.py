"""A uvicorn HTTP/1.1 protocol that hands request trailers to the app (checksum-trailer).

ASGI has no way to pass request trailers, and stock uvicorn's httptools protocol appends
them to the request's header list (scope["headers"]), mixing them with real headers. This
subclass keeps trailer fields apart: each request's scope gets
`scope["extensions"]["tusserver.request_trailers"]`, a list that receives the trailer fields
(lower-cased name, value) before the final body message (`more_body: False`) is delivered, so
an app that has read the whole body can read its trailers. Apps can tell from the key's
presence that the server supports trailers; mounted apps run by other servers see no key and
so do not advertise checksum-trailer.

The `tusserver` command uses it (uvicorn `http=` option); it needs httptools, which
uvicorn[standard] installs.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tusserver.checksum import TRAILERS_EXTENSION

# Bound the trailer section like a header section (uvicorn/httptools bound the latter).
MAX_TRAILER_FIELDS = 32


class TrailerHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with request trailers kept out of the header list."""

    _in_body = False
    _trailers: list[tuple[bytes, bytes]]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_body = False
        self._trailers = []
        extensions: dict[str, Any] = {TRAILERS_EXTENSION: self._trailers}
        self.scope["extensions"] = extensions

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_body:
            super().on_header(name, value)
        elif len(self._trailers) < MAX_TRAILER_FIELDS:
            # llhttp reports trailer fields through the same callback, after the body.
            self._trailers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_body = True
        super().on_headers_complete()
