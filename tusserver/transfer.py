"""The data path: request body -> (hashers, size guard) -> store, in bounded pieces.

Bytes are handed over by reference: each ASGI body message is shown to the observers (hashers)
and queued for one `writev` once about FLUSH_BYTES are pending, so memory per request is
bounded by FLUSH_BYTES plus one message whatever the chunk or upload size. Periodic checkpoints
make received bytes durable and record them, so a dropped or killed request loses little.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from tusserver.protocol import TusError
from tusserver.storage import Writer

FLUSH_BYTES = 1024 * 1024

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Checkpoint = Callable[[int], Awaitable[None]]


class Observer(Protocol):
    """Sees every accepted byte once (hashlib objects satisfy this)."""

    def update(self, data: bytes, /) -> None: ...


@dataclass
class Outcome:
    """How a body transfer ended."""

    received: int = 0
    complete: bool = False
    interrupted: str | None = None  # "disconnected", "timeout", "stopped"


class Sink:
    """Accepts body pieces up to `limit` bytes, feeds observers, batches writes."""

    def __init__(self, writer: Writer, limit: int | None, observers: Sequence[Observer] = ()):
        self.writer = writer
        self.limit = limit
        self.observers = observers
        self.received = 0
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def feed(self, data: bytes) -> None:
        """Take one piece; 413 if it would carry the upload past its length or the max size."""
        if not data:
            return
        if self.limit is not None and self.received + len(data) > self.limit:
            raise TusError(413, "request body exceeds the upload's remaining length")
        for observer in self.observers:
            observer.update(data)
        self.pending.append(data)
        self.pending_bytes += len(data)
        self.received += len(data)
        if self.pending_bytes >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write what is pending in one writev."""
        if self.pending:
            pending, self.pending, self.pending_bytes = self.pending, [], 0
            self.writer.write(pending)


async def pump(
    receive: Receive,
    sink: Sink,
    outcome: Outcome,
    *,
    network_timeout: float = 0,
    checkpoint: Checkpoint | None = None,
    checkpoint_interval: float = 0,
) -> None:
    """Move the whole body into the sink; `outcome` is kept current even if cancelled."""
    next_checkpoint = time.monotonic() + checkpoint_interval
    try:
        while True:
            try:
                with _deadline(network_timeout):
                    message = await receive()
            except TimeoutError:
                outcome.interrupted = "timeout"
                return
            if message["type"] == "http.disconnect":
                outcome.interrupted = "disconnected"
                return
            sink.feed(message.get("body", b""))
            outcome.received = sink.received
            if not message.get("more_body", False):
                outcome.complete = True
                return
            if checkpoint and checkpoint_interval and time.monotonic() >= next_checkpoint:
                sink.flush()
                await checkpoint(sink.received)
                next_checkpoint = time.monotonic() + checkpoint_interval
    finally:
        outcome.received = sink.received
        sink.flush()


def _deadline(seconds: float) -> contextlib.AbstractContextManager[Any]:
    """A per-read timeout for stalled clients (the spec's network-error SHOULD)."""
    return anyio.fail_after(seconds) if seconds > 0 else contextlib.nullcontext()
