"""The data path: request body -> (hashers, size guard) -> store, in bounded pieces.

Bytes are handed over by reference: each ASGI body message is shown to the observers (hashers)
and queued; once about FLUSH_BYTES are pending they go to the store in one `writev` on a worker
thread, while the event loop keeps reading the next piece (at most one write in flight, so
memory per request stays bounded by two batches whatever the chunk or upload size).
Periodic checkpoints make received bytes durable (fdatasync) and record them, also on a worker
thread and beside the reading, so a dropped or killed request loses at most about a second,
and the body is never stalled while the disk catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from tusserver.protocol import TusError
from tusserver.storage import Writer

# Write batch size: FLUSH_BYTES for a lone upload, less when many run at once in this process
# (FLUSH_BUDGET shared, at least MIN_FLUSH_BYTES), so memory stays flat with concurrency.
FLUSH_BYTES = 1024 * 1024
MIN_FLUSH_BYTES = 128 * 1024
FLUSH_BUDGET = 4 * 1024 * 1024
# Pending bytes below this are written inline at the end of a body (no thread hop for the
# small uploads that dominate request rates).
INLINE_WRITE_BYTES = 256 * 1024

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Checkpoint = Callable[[int], Coroutine[Any, Any, None]]


class Observer(Protocol):
    """Sees every accepted byte once (hashlib objects satisfy this)."""

    def update(self, data: bytes, /) -> None: ...


@dataclass
class Outcome:
    """How a body transfer ended."""

    received: int = 0
    complete: bool = False
    interrupted: str | None = None  # "disconnected", "timeout", "stopped", "shutdown"


class Sink:
    """Accepts body pieces up to `limit` bytes, feeds observers, batches writes.

    `received` counts accepted bytes, `written` those the store has written (the only ones a
    checkpoint may make durable and record).
    """

    def __init__(
        self,
        writer: Writer,
        limit: int | None,
        observers: Sequence[Observer] = (),
        *,
        concurrent: int = 1,
    ):
        self.writer = writer
        self.flush_bytes = max(
            MIN_FLUSH_BYTES, min(FLUSH_BYTES, FLUSH_BUDGET // max(1, concurrent))
        )
        self.limit = limit
        self.observers = observers
        self.received = 0
        self.written = 0
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self._inflight: asyncio.Future[int] | None = None

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

    def flush(self) -> None:
        """Write what is pending now, on the calling thread (no write may be in flight)."""
        if self._inflight is not None:
            raise RuntimeError("a background write is still in flight")
        if self.pending:
            pending, self.pending, self.pending_bytes = self.pending, [], 0
            self.written += self.writer.write(pending)

    async def wait_written(self) -> None:
        """Wait for the write in flight (StoreFull and other write errors surface here).

        The write runs on a thread that cancellation cannot stop: a waiter that is cancelled
        (a release request, shutdown) leaves the write in flight, so the next wait (the
        pump's shielded drain) still waits for it before anything else is written. Forgetting
        it would let two writes into the store at once, and its bytes go uncounted."""
        inflight = self._inflight
        if inflight is None:
            return
        try:
            written = await asyncio.shield(inflight)
        finally:
            if inflight.done():
                self._inflight = None
        self.written += written

    async def flush_async(self) -> None:
        """Start writing what is pending on a worker thread after the previous write ended."""
        await self.wait_written()
        if self.pending:
            pending, self.pending, self.pending_bytes = self.pending, [], 0
            loop = asyncio.get_running_loop()
            self._inflight = loop.run_in_executor(None, self.writer.write, pending)

    async def drain(self) -> None:
        """Everything accepted so far is written (small remainders inline)."""
        await self.wait_written()
        if self.pending_bytes <= INLINE_WRITE_BYTES and self.writer.inline_writes:
            self.flush()
        else:
            await self.flush_async()
            await self.wait_written()


async def pump(
    receive: Receive,
    sink: Sink,
    outcome: Outcome,
    *,
    network_timeout: float = 0,
    checkpoint: Checkpoint | None = None,
    checkpoint_interval: float = 0,
) -> None:
    """Move the whole body into the sink; `outcome` is kept current even if cancelled.

    On return (or cancellation) every accepted byte has been written to the store and any
    checkpoint in progress has finished, so the caller may sync, truncate or close the writer.
    """
    next_checkpoint = time.monotonic() + checkpoint_interval
    syncing: asyncio.Task[None] | None = None
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
            if sink.pending_bytes >= sink.flush_bytes:
                await sink.flush_async()
            if (
                checkpoint
                and checkpoint_interval
                and (syncing is None or syncing.done())
                and time.monotonic() >= next_checkpoint
            ):
                if syncing is not None:
                    syncing.result()  # surface a failed checkpoint
                await sink.wait_written()
                # Runs beside the reading; only bytes already written are made durable.
                syncing = asyncio.get_running_loop().create_task(checkpoint(sink.written))
                next_checkpoint = time.monotonic() + checkpoint_interval
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await sink.drain()
            finally:
                outcome.received = sink.received
                if syncing is not None:
                    await syncing


def _deadline(seconds: float) -> contextlib.AbstractContextManager[Any]:
    """A per-read timeout for stalled clients (the spec's network-error SHOULD)."""
    return anyio.fail_after(seconds) if seconds > 0 else contextlib.nullcontext()
