"""GET /admin/api/events?status=: the dashboard's live view as Server-Sent Events.

Each `snapshot` event carries the stats and the first page of uploads (with the cursor of the
next page), sent whenever either changed. The registry is polled about once a second, so the
view is the same whichever worker or instance serves the stream. Streams end at once on
SIGTERM/SIGINT (as the per-upload /events do: the browser reconnects to a live worker) and
when the registry cannot be read (the page reconnects).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tusserver.admin.api import DEFAULT_LIMIT, filter_of, page, stats
from tusserver.errors import BackendUnavailable
from tusserver.handlers.common import core_of
from tusserver.processing.status import KEEPALIVE, STOPPING, watch_shutdown
from tusserver.registry import UploadFilter

POLL = 1.0


async def snapshot(request: Request, where: UploadFilter) -> str:
    """The current view as compact JSON (compared as text to detect changes)."""
    view = {"stats": await stats(core_of(request)), **await page(request, where, DEFAULT_LIMIT)}
    return json.dumps(view, separators=(",", ":"))


async def handle_events(request: Request) -> Response:
    """The stream; a bad ?status= is refused (400) before it starts."""
    where = filter_of(request)
    watch_shutdown()

    async def stream() -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        last, last_sent = "", time.monotonic()
        while not STOPPING.is_set():
            try:
                text = await snapshot(request, where)
            except BackendUnavailable:
                return
            if text != last:
                last, last_sent = text, time.monotonic()
                yield f"event: snapshot\ndata: {text}\n\n"
            elif time.monotonic() - last_sent > KEEPALIVE:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            await anyio.sleep(POLL)
        yield "event: shutdown\ndata: {}\n\n"  # the server restarts: reconnect

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
