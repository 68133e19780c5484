"""GET /admin/api/events?status=: the dashboard's live view as Server-Sent Events.

Each `snapshot` event carries the stats and the first page of uploads (with the cursor of the
next page), sent whenever either changed. The view is the registry's, so it is the same
whichever worker or instance serves the stream. However many dashboards are open, a process
reads the registry at most once a second per status filter for the listing and once every
STATS_EVERY seconds for the totals (Shared): on SQLite each read holds the connection's lock.

The first snapshot is read before the stream starts, so a registry that cannot be read
answers 503; later, such a failure ends the stream (the page reconnects). After SIGTERM or
SIGINT, streams end at their next poll, within about a second, with `event: shutdown` (as the
per-upload /events do: the browser reconnects to a live worker).
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tusserver.admin.api import DEFAULT_LIMIT, Rows, filter_of, page_of, rows_of, stats
from tusserver.core import TusCore
from tusserver.errors import BackendUnavailable
from tusserver.handlers.common import core_of
from tusserver.processing.status import KEEPALIVE, STOPPING, Shared, watch_shutdown
from tusserver.registry import UploadFilter

POLL = 1.0
STATS_EVERY = 5.0


@dataclass
class _Feed:
    """What one core's streams share: listings per filter (few: one per ?status=) and the
    stats."""

    rows: Shared[Rows] = field(default_factory=lambda: Shared(POLL))
    stats: Shared[dict[str, Any]] = field(default_factory=lambda: Shared(STATS_EVERY))


_FEEDS: weakref.WeakKeyDictionary[TusCore, _Feed] = weakref.WeakKeyDictionary()


async def snapshot(request: Request, where: UploadFilter) -> str:
    """The current view as compact JSON (compared as text to detect changes); the items
    are rendered for this request (their URLs carry its host and mount path)."""
    core = core_of(request)
    feed = _FEEDS.setdefault(core, _Feed())
    rows = await feed.rows.get(where, lambda: rows_of(core, where, DEFAULT_LIMIT))
    totals = await feed.stats.get(None, lambda: stats(core))
    view = {"stats": totals, **page_of(request, rows, DEFAULT_LIMIT)}
    return json.dumps(view, separators=(",", ":"))


async def handle_events(request: Request) -> Response:
    """The stream; a bad ?status= is refused (400), an unreadable registry (503), before it
    starts."""
    where = filter_of(request)
    first = await snapshot(request, where)  # BackendUnavailable: the app's 503
    watch_shutdown()

    async def stream() -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        yield f"event: snapshot\ndata: {first}\n\n"
        last, last_sent = first, time.monotonic()
        while True:
            await anyio.sleep(POLL)
            if STOPPING.is_set():
                yield "event: shutdown\ndata: {}\n\n"  # the server restarts: reconnect
                return
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

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
