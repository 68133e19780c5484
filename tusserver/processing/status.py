"""GET {base}{id}/status (JSON) and GET {base}{id}/events (Server-Sent Events).

Both read only the registry, so they answer from any worker process: the upload row (offset
recorded at least once per second during long PATCHes) and the job row (progress written twice
a second by whichever process runs the job). /events polls on an interval and sends an event
only when the data changed, ending with `event: end` once the job (or upload) is final.
Rates are computed from successive (time, offset) samples this process has seen.

`result` beside `status` tells how an ended job went: ok, completed_with_errors (processed, some
rows malformed: see {base}{id}/errors.csv) or failed; `processing.error_count` is the running
count of malformed rows, in every event.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tusserver.config import Settings
from tusserver.core import TusCore
from tusserver.handlers.common import core_of, upload_id_of
from tusserver.processing.jobs import (
    RESULT_OK,
    job_result,
    job_summary,
    runner_for,
    select_plugins,
)
from tusserver.registry import GONE_STATES, Job, UploadInfo
from tusserver.registry.base import COMPLETED, JOB_FAILED, PROCESSING

POLL = 0.25
KEEPALIVE = 15.0
FINAL = ("completed", "failed", "terminated", "expired")
T = TypeVar("T")

# Set when the process got SIGTERM/SIGINT: open event streams end at once (clients reconnect
# after `retry`) instead of holding a graceful shutdown for --shutdown-timeout.
STOPPING = threading.Event()
_watching = False


def watch_shutdown() -> None:
    """Chain a flag-setting handler in front of the server's SIGTERM/SIGINT handlers.

    Called on the first /events request, when the ASGI server's handlers are in place (uvicorn
    installs them around serving). Main thread only; other servers' handlers are kept.
    """
    global _watching
    if _watching or threading.current_thread() is not threading.main_thread():
        return
    _watching = True
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            STOPPING.set()
            previous(signum, frame)

        signal.signal(sig, handler)


class RateTracker:
    """Recent (time, value) samples per key -> rate over a sliding window; bounded size."""

    def __init__(self, window: float = 10.0, keys: int = 4096):
        self.window = window
        self.keys = keys
        self.samples: OrderedDict[str, list[tuple[float, int]]] = OrderedDict()

    def rate(self, key: str, at: float, value: int) -> float | None:
        samples = self.samples.pop(key, [])
        if not samples or samples[-1] != (at, value):
            samples.append((at, value))
        samples = [s for s in samples if s[0] >= at - self.window] or samples[-1:]
        self.samples[key] = samples[-64:]
        while len(self.samples) > self.keys:
            self.samples.popitem(last=False)
        first_at, first_value = samples[0]
        if at > first_at:
            return (value - first_value) / (at - first_at)
        return None


UPLOAD_RATES = RateTracker()


def _eta(remaining: int, rate: float | None) -> float | None:
    if remaining <= 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return round(remaining / rate, 1)


def upload_status(info: UploadInfo) -> dict[str, Any]:
    """Upload progress: offset, length, %, bytes/s and ETA."""
    rate = UPLOAD_RATES.rate("u:" + info.id, info.updated, info.offset)
    if rate is None and info.updated > info.created:
        rate = info.offset / (info.updated - info.created)  # average since creation
    length = info.length
    return {
        "state": info.state,
        "offset": info.offset,
        "length": length,
        "percent": round(100.0 * info.offset / length, 2) if length else None,
        "bytes_per_second": round(rate) if rate is not None else None,
        "eta_seconds": _eta(length - info.offset, rate) if length is not None else None,
    }


def _job_rate(job: Job) -> float | None:
    """Bytes per second of the current run (from its last progress write) or of the ended one."""
    if job.started is None:
        return None
    if job.state == PROCESSING:
        elapsed = job.updated - job.started
    elif job.state in (COMPLETED, JOB_FAILED) and job.finished is not None:
        elapsed = job.finished - job.started
    else:
        return None
    return job.bytes_done / elapsed if elapsed > 0 else None


def processing_status(job: Job) -> dict[str, Any]:
    """Processing progress of a job (results once it ended)."""
    total = job.size
    done = job.bytes_done
    state = job.state
    rate = _job_rate(job)
    out = {
        "status": state,
        "plugins": job.plugins,
        "attempts": job.attempts,
        "bytes_processed": done,
        "bytes_total": total,
        "percent": round(100.0 * done / total, 2) if total else (100.0 if state in FINAL else 0.0),
        "records": job.records,
        "bytes_per_second": round(rate) if rate is not None else None,
        "eta_seconds": _eta(total - done, rate) if state == PROCESSING else None,
        "progress": job.progress,
        "error_count": job.error_count,
        "error": job.error,
        "result": job_result(job),
    }
    if state in (COMPLETED, JOB_FAILED):
        summary = job_summary(job)
        out["has_errors"] = summary["has_errors"]
        out["results"] = summary["results"]
    return out


def status_of(settings: Settings, info: UploadInfo, job: Job | None) -> dict[str, Any]:
    """The /status document: overall status plus upload and processing progress."""
    if info.state in GONE_STATES:
        status = info.state
    elif not info.finished:
        status = "uploading"
    elif job is not None:
        status = job.state
    elif not info.is_partial and select_plugins(settings, info.metadata):
        status = "queued"  # the post-finish hook has not queued the job yet
    else:
        status = "completed"  # nothing to process (partial uploads never are)
    if job is not None:
        result = job_result(job) if status == job.state else None
    else:
        result = RESULT_OK if status == "completed" else None  # nothing to process
    return {
        "id": info.id,
        "status": status,
        "result": result,
        "upload": upload_status(info),
        "processing": processing_status(job) if job is not None else None,
    }


async def _load(request: Request) -> tuple[UploadInfo, Job | None]:
    core = core_of(request)
    info = await core.load(upload_id_of(request))  # 404 unknown, 410 terminated/expired
    return info, await _job(core, info)


async def _job(core: TusCore, info: UploadInfo) -> Job | None:
    """The upload's job; a finished upload that should have one but has none (it finished
    before --plugins was set, or its post-finish was lost) gets it queued now."""
    job = await core.registry.get_job(info.id)
    if job is None and info.finished and info.state not in GONE_STATES:
        runner = runner_for(core)
        if runner is not None and await runner.enqueue(info.id):
            job = await core.registry.get_job(info.id)
    return job


class Shared(Generic[T]):
    """The latest value per key, computed at most once per `ttl` seconds however many
    callers ask: a caller that finds it stale while another computes it waits for that
    computation instead of starting its own. A failed computation stores nothing. At most
    `keys` keys are kept (all are dropped past that: they are recomputed on demand)."""

    def __init__(self, ttl: float, keys: int = 4096) -> None:
        self.ttl = ttl
        self.keys = keys
        self._values: dict[Hashable, tuple[float, T]] = {}
        self._locks: dict[Hashable, anyio.Lock] = {}

    def _fresh(self, key: Hashable) -> tuple[float, T] | None:
        cached = self._values.get(key)
        return cached if cached is not None and time.monotonic() - cached[0] < self.ttl else None

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        cached = self._fresh(key)
        if cached is None:
            if len(self._locks) > self.keys:
                self._values.clear()
                self._locks.clear()
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = anyio.Lock()
            async with lock:
                cached = self._fresh(key)  # computed while this caller waited?
                if cached is None:
                    cached = time.monotonic(), await compute()
                    self._values[key] = cached
        return cached[1]


# One registry read per upload per poll interval, however many streams watch it (per process).
_STATUS: Shared[tuple[dict[str, Any], str] | None] = Shared(POLL)


async def _shared_status(core: TusCore, upload_id: str) -> tuple[dict[str, Any], str] | None:
    """The upload's /status document and its JSON text; None once the upload is unknown."""

    async def read() -> tuple[dict[str, Any], str] | None:
        current = await core.registry.get(upload_id)
        if current is None:
            return None
        doc = status_of(core.settings, current, await _job(core, current))
        return doc, json.dumps(doc, separators=(",", ":"))

    return await _STATUS.get((id(core), upload_id), read)


async def handle_status(request: Request) -> Response:
    """GET {base}{id}/status."""
    info, job = await _load(request)
    return JSONResponse(status_of(core_of(request).settings, info, job))


async def handle_events(request: Request) -> Response:
    """GET {base}{id}/events: the /status document as SSE whenever it changes."""
    core = core_of(request)
    info, _ = await _load(request)
    upload_id = info.id
    watch_shutdown()

    async def stream() -> AsyncIterator[str]:
        last = ""
        last_sent = time.monotonic()
        yield "retry: 1000\n\n"
        while True:
            found = await _shared_status(core, upload_id)
            if found is None:
                return
            doc, text = found
            if text != last:
                last = text
                last_sent = time.monotonic()
                yield f"event: status\ndata: {text}\n\n"
            if doc["status"] in FINAL:
                yield f"event: end\ndata: {json.dumps({'status': doc['status']})}\n\n"
                return
            if STOPPING.is_set():
                yield "event: shutdown\ndata: {}\n\n"  # the server restarts: reconnect
                return
            if time.monotonic() - last_sent > KEEPALIVE:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            await anyio.sleep(POLL)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
