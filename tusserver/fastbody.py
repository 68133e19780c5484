"""A leaner request-body path for uvicorn's httptools protocol (large PATCH bodies).

Measured on a 2-core machine, stock uvicorn spends most of its CPU for a 1 GiB body in its
body path, not in the app: every socket read is parsed by llhttp, which hands each body piece
over as a fresh copy; the piece is appended to a bytearray (second copy) that `receive()` turns
into bytes (third copy); and reading is paused whenever 64 KiB are waiting, so the transport
stops and restarts reading (two epoll_ctl calls, one event-loop round trip) every ~256 KB.

This mixin changes only the body of requests with a Content-Length of at least RAW_BODY_MIN
(no Transfer-Encoding, no upgrade):

- once the headers are parsed, body bytes bypass llhttp: the socket read (`bytes` from the
  event loop) is handed to the app as is, by reference; llhttp gets a fresh parser for the
  next request on the connection when the body is complete;
- `receive()` returns what is buffered, joined only if there is more than one piece;
- reading pauses only when HIGH_WATER bytes wait for the app, so memory per request stays
  bounded (HIGH_WATER + one socket read) whatever the upload size.

It also sends interim (1xx) responses, which ASGI cannot express (only 103 Early Hints has a
message type, which uvicorn does not implement): a request gets the scope extension
`tusserver.interim` (INTERIM_EXTENSION) unless it is HTTP/1.0 (RFC 9110 §15.2: "A server MUST
NOT send a 1xx response to an HTTP/1.0 client"), and the app sends
`{"type": INTERIM_MESSAGE, "status": 104, "headers": [...]}` through `send` before the final
response (the IETF resumable-upload draft's 104 Upload Resumption Supported). An app mounted
under another server sees no extension and sends none.

Everything else (headers, small and chunked bodies, trailers, keep-alive, pipelining, 100
Continue, disconnects) is uvicorn's own code. The mixin composes with other subclasses of
HttpToolsProtocol (tusserver.trailers for checksum-trailer) by cooperative `super()` calls:
`class P(FastBodyMixin, TrailerHttpToolsProtocol)`; tusserver.connections goes on top (head
timeout and size, connection cap) and looks at socket reads only between requests.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from tusserver import metrics
from tusserver.connections import ConnectionLimitsMixin
from tusserver.core import begin_shutdown_all
from tusserver.interim import INTERIM_EXTENSION, INTERIM_MESSAGE, interim_head

# Bodies below this go through llhttp as usual: the bypass only pays off for large bodies.
RAW_BODY_MIN = 64 * 1024
# Pause reading from the socket once this much body waits for the app: HIGH_WATER with one
# connection, less with many (BUFFER_BUDGET shared), never below MIN_HIGH_WATER. Memory then
# stays flat with concurrency, and a lone large upload still reads in big batches.
HIGH_WATER = 1024 * 1024
MIN_HIGH_WATER = 128 * 1024
BUFFER_BUDGET = 4 * 1024 * 1024


def high_water(connections: int) -> int:
    """Per-connection pause threshold when `connections` are open."""
    return max(MIN_HIGH_WATER, min(HIGH_WATER, BUFFER_BUDGET // max(1, connections)))


class FastBodyCycle(RequestResponseCycle):
    """uvicorn's request cycle with the body kept as a list of pieces (no bytearray copies)."""

    chunks: list[bytes]
    buffered: int
    final_sent: bool

    def adopt(self) -> None:
        """Initialise the extra state on a cycle created by uvicorn (class swapped in)."""
        self.chunks = []
        self.buffered = 0
        self.final_sent = False

    def add(self, body: bytes, limit: int) -> bool:
        """Buffer one piece; True when the reader should pause (`limit` bytes buffered)."""
        self.chunks.append(body)
        self.buffered += len(body)
        self.message_event.set()
        return self.buffered > limit

    def _continue(self) -> None:
        """Send the pending 100 Continue, if the client asked for one and has not had it."""
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False

    async def send(self, message: Any) -> None:
        if message["type"] != INTERIM_MESSAGE:
            await super().send(message)
            return
        if self.response_started or self.disconnected or self.transport.is_closing():
            return  # too late for an interim response; the final one says it all
        # A 104 promises the body will be read, so a 100 Continue the client waits for goes
        # first ("MUST NOT omit the 100 (Continue) response because it has sent an interim
        # response with the 104", draft-ietf-httpbis-resumable-upload-10 §5).
        self._continue()
        self.transport.write(interim_head(message["status"], message.get("headers", [])))

    async def receive(self) -> Any:
        self._continue()
        idle = not self.disconnected and not self.response_complete and not self.chunks
        if idle and (self.more_body or self.final_sent):
            # Nothing buffered: wait for body, the end of the message or a disconnect.
            self.flow.resume_reading()
            await self.message_event.wait()
        self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        self.flow.resume_reading()
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not self.more_body:
            self.final_sent = True
        return {"type": "http.request", "body": body, "more_body": self.more_body}


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The body length when the raw bypass is safe for this request, else 0."""
    length = 0
    for name, value in headers:
        if name in (b"transfer-encoding", b"upgrade"):
            return 0
        if name == b"content-length":
            if not value.strip().isdigit():
                return 0
            length = int(value)
    return length if length >= RAW_BODY_MIN else 0


class FastBodyMixin(HttpToolsProtocol):
    """Mix in before any HttpToolsProtocol subclass to get the raw body path."""

    _raw_pending = 0  # Content-Length of a large body whose headers were just parsed
    _body_seen = 0  # body bytes llhttp delivered for that request before the bypass starts
    _raw_left = 0  # body bytes still expected on the raw path

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if type(cycle) is RequestResponseCycle:
            cycle.__class__ = FastBodyCycle
            assert isinstance(cycle, FastBodyCycle)
            cycle.adopt()
        self._body_seen = 0
        self._raw_pending = _content_length(self.headers)
        if self.scope["http_version"] != "1.0":  # no 1xx to HTTP/1.0 (RFC 9110 §15.2)
            self.scope.setdefault("extensions", {})[INTERIM_EXTENSION] = {}

    def on_body(self, body: bytes) -> None:
        if not isinstance(self.cycle, FastBodyCycle):
            super().on_body(body)
            return
        if self.cycle.response_complete or (
            self.parser.should_upgrade() and self._should_upgrade()
        ):
            return
        self._body_seen += len(body)
        self._deliver(body)

    def _deliver(self, body: bytes) -> None:
        cycle = self.cycle
        assert isinstance(cycle, FastBodyCycle)
        if cycle.response_complete:
            return  # answered early (e.g. 413): the rest of the body is read and dropped
        if cycle.add(body, high_water(len(self.connections))):
            self.flow.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self._raw_left:
            self._unset_keepalive_if_required()
            if len(data) < self._raw_left:
                self._raw_left -= len(data)
                self._deliver(data)
                return
            head, data = data[: self._raw_left], data[self._raw_left :]
            self._raw_left = 0
            self._deliver(head)
            self.on_message_complete()
            if data:  # the next request: through the whole protocol stack (head limits)
                self.data_received(data)
            return
        super().data_received(data)
        if self._raw_pending and self.parser is not None and not self.transport.is_closing():
            left = self._raw_pending - self._body_seen
            self._raw_pending = 0
            if left > 0:
                # Headers parsed, body incomplete: the rest bypasses llhttp, which starts
                # afresh for the next request once this body is complete.
                self._raw_left = left
                self.parser = _new_parser(self)


def _new_parser(protocol: HttpToolsProtocol) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(protocol)
    with contextlib.suppress(AttributeError):  # httptools < 0.6.3, as uvicorn does
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


def _base_protocol() -> type[HttpToolsProtocol]:
    """The checksum-trailer protocol when present (it owns trailers), else uvicorn's."""
    try:
        from tusserver.trailers import TrailerHttpToolsProtocol
    except ImportError:  # pragma: no cover - trailers module not installed
        return HttpToolsProtocol
    return TrailerHttpToolsProtocol


class TusHttpProtocol(ConnectionLimitsMixin, FastBodyMixin, _base_protocol()):  # type: ignore[misc]
    """The protocol the `tusserver` command runs: connection limits (tusserver.connections),
    raw large bodies, request trailers."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        metrics.OPEN_CONNECTIONS.inc()

    def connection_lost(self, exc: Exception | None) -> None:
        metrics.OPEN_CONNECTIONS.dec()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown reached this connection (SIGTERM).

        uvicorn only stops keep-alive and waits for running requests; a PATCH streaming a
        large body would hold the shutdown until --shutdown-timeout and then be cancelled.
        Telling the cores first makes every in-flight body stop at once, make what it
        received durable, record the offset and answer 503, so the server exits promptly
        and clients resume from a correct offset.
        """
        begin_shutdown_all()
        super().shutdown()
