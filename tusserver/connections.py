"""Connection limits of the `tusserver` command: head timeout, idle timeout, head size, cap.

Stock uvicorn never closes a connection that is slow to send its request head (its keep-alive
timer is cancelled by the first byte that arrives and only re-armed after a response), does not
bound the head (llhttp does not, and httptools joins a header value or URL with every piece it
is fed, so a large head sent in small pieces costs quadratic time on the event loop that serves
everyone), and keeps accepting until the process runs out of descriptors, after which asyncio
stops accepting for a second at a time and uvloop drops newcomers. This module closes those
holes; `ConnectionLimitsMixin` sits on top of the protocol chain in tusserver.fastbody:

- Head timer (`--read-header-timeout`): from the accept for a new connection, from the first
  byte of the next request on a keep-alive connection (like Go's ReadHeaderTimeout); bytes
  arriving do not extend it. On expiry: `408` and close, or a plain close if the connection
  never sent anything.
- Idle timer (`--idle-timeout`): uvicorn's keep-alive timer, from the end of a response until
  the first byte of the next request. The two never overlap on one request, so a keep-alive
  connection waits at most idle + head timeout for its next head.
- Head size (`--max-header-size`): counted before the parser sees the bytes. Pieces of an
  unfinished head are held and fed in one go once the blank line arrives, so parsing stays
  linear; past the limit the answer is `431` and the connection is closed, nothing more read.
- Cap (`--max-connections` per worker; 0 = auto, see `auto_max_connections`): a newcomer over
  the cap closes the connection that has waited longest for a request head (a slow head or an
  idle keep-alive connection, never one with a request in progress); if every connection is
  busy the newcomer gets `503`. Kept below the descriptor limit so accept never fails.

Cost: about 2 us per request (four overridden parser callbacks; a request takes ~90 us), and
one attribute test per socket read on the body path.
"""

from __future__ import annotations

import asyncio
import http
import logging
import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tusserver.config import Settings

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Protocol
else:  # the real base arrives through the MRO; no httptools import for `tusserver --help`
    _Protocol = asyncio.Protocol

log = logging.getLogger("tusserver")

# Descriptors kept for the process itself: listening socket, stdio, log files, registry
# (database, WAL, shared memory), event loop, hook pipes. About 20 in use when idle.
BASE_RESERVE = 64
REPORT_FIRST = 1.0  # the first shed is reported after this long (one line per burst) ...
REPORT_EVERY = 10.0  # ... and then at most once per this many seconds
NEVER = 10.0**9  # uvicorn wants a number of seconds for "no idle timeout"


def nofile_limit() -> int:
    """The soft descriptor limit of this process."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit to the hard one (what a server may use without
    privileges; distributions start services at 1024) and return the soft limit in force.
    Workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # e.g. a hard limit above the kernel's nr_open
        return soft
    return hard


def accept_backlog(nofile: int) -> int:
    """uvicorn's backlog: a sixteenth of the descriptor limit, 64 to 2048 (uvicorn's default).
    It bounds how many connections one wakeup of the loop accepts."""
    return max(64, min(2048, nofile // 16))


def auto_max_connections(nofile: int, concurrent_uploads: int = 0) -> int:
    """`--max-connections 0`: what is left of the descriptor limit after BASE_RESERVE, two
    descriptors (data file, lock) per body in flight (`--max-concurrent-uploads` when set,
    else an eighth of the limit) and three accept bursts of the backlog size (connections
    accepted before the cap can shed: the loop accepts, then creates transports, then runs
    connection_made, and closes a shed connection's socket one turn later).
    1024 descriptors -> 512 connections; 65536 -> 42944."""
    uploads = concurrent_uploads if concurrent_uploads > 0 else nofile // 8
    return max(16, nofile - BASE_RESERVE - 2 * uploads - 3 * accept_backlog(nofile))


@dataclass(frozen=True)
class Limits:
    """What the protocol enforces, resolved once per worker process."""

    read_header_timeout: float
    max_header_size: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        cap = settings.max_connections or auto_max_connections(
            nofile_limit(), settings.max_concurrent_uploads
        )
        return cls(settings.read_header_timeout, settings.max_header_size, cap)


_limits: Limits | None = None


def configure(settings: Settings) -> Limits:
    """Set this process's limits from `settings`: by uvicorn_options() when serving in this
    process, by tusserver.app.create_app_from_env in each `--workers N` process."""
    global _limits
    _limits = Limits.from_settings(settings)
    return _limits


def current() -> Limits:
    """This process's limits, as configure() set them; the defaults if it was never called
    (the protocol run by some other launcher than the `tusserver` command)."""
    return _limits if _limits is not None else configure(Settings())


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Configure this process's limits and return the uvicorn options they need. Call it
    after raise_nofile_limit(): the automatic cap and the backlog follow the soft limit."""
    configure(settings)
    return {
        "loop": settings.loop,
        "timeout_keep_alive": settings.idle_timeout or NEVER,
        "backlog": accept_backlog(nofile_limit()),
        # the same head limit for uvicorn's h11 protocol, used when httptools is missing
        "h11_max_incomplete_event_size": settings.max_header_size,
    }


def _head_end(tail: bytes, data: bytes) -> int:
    """How many bytes of `data` finish a request head (through its blank line), or -1.
    `tail` holds the last bytes (at most 3) of the same head received before `data`."""
    if tail:
        at = (tail + data[:3]).find(b"\r\n\r\n")
        if at >= 0:
            return at + 4 - len(tail)
    at = data.find(b"\r\n\r\n")
    return at + 4 if at >= 0 else -1


def error_response(status: int, message: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete `Connection: close` answer written straight to the transport."""
    body = message.encode()
    lines = [b"HTTP/1.1 %d %s" % (status, http.HTTPStatus(status).phrase.encode())]
    lines += [name + b": " + value for name, value in headers]
    lines += [b"content-type: text/plain; charset=utf-8", b"content-length: %d" % len(body)]
    lines += [b"connection: close", b"", body]
    return b"\r\n".join(lines)


class _Shedding:
    """Connections closed or refused at the cap, logged as one line per burst."""

    closed = 0
    refused = 0
    last = -REPORT_EVERY
    timer: asyncio.TimerHandle | None = None

    @classmethod
    def note(cls, loop: asyncio.AbstractEventLoop, *, refused: bool) -> None:
        if refused:
            cls.refused += 1
        else:
            cls.closed += 1
        if cls.timer is None:
            delay = max(REPORT_FIRST, cls.last + REPORT_EVERY - loop.time())
            cls.timer = loop.call_later(delay, cls.report, loop)

    @classmethod
    def report(cls, loop: asyncio.AbstractEventLoop) -> None:
        log.warning(
            "open connections reached the cap of %d per worker (--max-connections): closed %d"
            " still waiting for a request head (oldest first), refused %d with 503",
            current().max_connections,
            cls.closed,
            cls.refused,
        )
        cls.closed = cls.refused = 0
        cls.last = loop.time()
        cls.timer = None


# Connections of this worker between requests (head not complete yet), longest waiting first.
_waiting: dict[ConnectionLimitsMixin, None] = {}


class ConnectionLimitsMixin(_Protocol):
    """Head timer, head size limit and connection cap for uvicorn's httptools protocol; put it
    first in the bases of the protocol class."""

    _limits: Limits
    _awaiting_head = True  # between requests: the bytes arriving belong to a request head
    _head_begun = False  # the parser saw the first byte of that head
    _head_bytes = 0  # bytes of that head received so far
    _tail = b""  # its last 3 bytes, to spot a blank line split across reads
    _held: bytearray  # the unfinished head not fed to the parser yet (no per-piece objects)
    _head_timer: asyncio.TimerHandle | None = None
    _spoke = False  # the client sent at least one byte on this connection

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._limits = current()
        self._held = bytearray()
        _waiting[self] = None
        self._arm_head_timer()
        if len(self.connections) > self._limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        _waiting.pop(self, None)
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._awaiting_head:  # request body: straight on, no per-byte work
            super().data_received(data)
            return
        if self.transport.is_closing():  # refused: nothing more is looked at
            return
        self._spoke = True
        before = self._head_bytes
        end = _head_end(self._tail, data)
        self._head_bytes = before + len(data)
        if (before + end if end >= 0 else self._head_bytes) > self._limits.max_header_size:
            limit = self._limits.max_header_size
            self._refuse(431, f"request head larger than {limit} bytes (--max-header-size)")
            return
        if end < 0:
            self._tail = (self._tail + data[-3:])[-3:]
        if end < 0 and before:
            # Unfinished head: hold it; the parser gets it whole with the piece that ends it.
            self._held += data
            self._unset_keepalive_if_required()  # not idle any more: the head timer runs
            self._arm_head_timer()
            return
        if self._held:
            self._held += data
            data = bytes(self._held)
            self._held = bytearray()
        super().data_received(data)
        if self._awaiting_head and self._head_begun:
            self._arm_head_timer()

    def on_message_begin(self) -> None:
        self._head_begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._awaiting_head = self._head_begun = False
        if self._head_timer is not None:
            self._cancel_head_timer()
        _waiting.pop(self, None)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True
        self._head_bytes = 0
        self._tail = b""
        _waiting[self] = None

    def _busy(self) -> bool:
        """A request of this connection is still being answered."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        timeout = self._limits.read_header_timeout
        if timeout > 0 and self._head_timer is None:
            self._head_timer = self.loop.call_later(timeout, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._busy():  # a pipelined head stalled behind a response: close after it
            self.cycle.keep_alive = False
            return
        if self._spoke:
            self._refuse(408, "request head not received in time (--read-header-timeout)")
        else:  # a connection that never said anything gets no answer
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` and close; with a response in flight just close (it would mix)."""
        self._held = bytearray()
        if not self._busy():
            headers = self.server_state.default_headers
            if status == 503:
                headers = [*headers, (b"retry-after", b"1")]
            self.transport.write(error_response(status, message + "\n", headers))
        self.transport.close()

    def _make_room(self) -> None:
        """Over the cap: close the connection waiting longest for a head, else refuse self."""
        for other in _waiting:
            if other is not self and not other._busy():
                del _waiting[other]
                # Counted out now: more newcomers may arrive before its close completes.
                self.connections.discard(other)
                other.transport.close()
                _Shedding.note(self.loop, refused=False)
                return
        _waiting.pop(self, None)
        self.connections.discard(self)
        self._refuse(503, "too many open connections; retry later (--max-connections)")
        _Shedding.note(self.loop, refused=True)
