"""The body pump's bookkeeping of writes in flight (tusserver/transfer.py), in process.

A write runs on a worker thread that cancellation cannot stop; when the request is stopped
(a release request from another instance, shutdown) while the pump waits for that write,
the pump must still wait for it before it writes anything else: two writes at once into one
upload's writer interleave bytes (found by tests/test_s3_e2e.py under CPU load: a tail
object whose bytes were shifted by one batch).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from tusserver.storage import Writer
from tusserver.transfer import FLUSH_BYTES, Outcome, Sink, pump


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class GatedWriter(Writer):
    """Appends to memory; every write waits for `gate` and counts how many run at once."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.gate = threading.Event()
        self.started = threading.Event()
        self.lock = threading.Lock()
        self.active = self.most_active = 0

    def write(self, pieces: Sequence[bytes]) -> int:
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        self.started.set()
        self.gate.wait(10)
        for piece in pieces:
            self.data += piece
        with self.lock:
            self.active -= 1
        return sum(len(piece) for piece in pieces)

    def sync(self) -> int:
        return len(self.data)

    def discard_after(self, offset: int) -> None:
        del self.data[offset:]

    def close(self) -> None:
        return None


@pytest.mark.anyio
async def test_a_cancelled_pump_waits_for_its_write_in_flight() -> None:
    writer = GatedWriter()
    sink = Sink(writer, None)
    chunks = [bytes([n]) * FLUSH_BYTES for n in range(3)]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks
    ]
    second_taken = anyio.Event()

    async def receive() -> dict[str, Any]:
        message = messages.pop(0)
        if len(messages) == 1:
            second_taken.set()  # the pump now waits for the first write before the second
        return message

    outcome = Outcome()
    scope = anyio.CancelScope()

    async def run() -> None:
        with scope:
            await pump(receive, sink, outcome)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        await anyio.to_thread.run_sync(writer.started.wait, 10)  # the first write is running
        await second_taken.wait()
        scope.cancel()  # e.g. another instance asked for the upload
        writer.gate.set()
    assert writer.most_active == 1
    assert sink.written == 2 * FLUSH_BYTES == outcome.received
    assert bytes(writer.data) == chunks[0] + chunks[1]
