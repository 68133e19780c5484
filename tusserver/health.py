"""/health and /ready: can this worker take uploads right now? 200 or 503.

Neither waits for the backends to start (a database that does not answer must not hang the
probes): before they are, /ready answers 503 "backends not started" and /health reports the
registry check as failed.

/health reports what an upload needs, as JSON: the store accepts new data (a file store: a
probe file in the upload directory), its free space is above the --min-free-space reserve,
the registry answers a query and locks can be taken. /ready is the load balancer's short
question: are the backends connected, does the registry answer, is this instance not shutting
down. Both
are polled, so each check is cheap (one tiny file, one statvfs, one query with a short
timeout: a database that hangs must not hang the probe).
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tusserver.core import TusCore
from tusserver.errors import BackendUnavailable

# How long the registry may take to answer a probe's query before it counts as down.
PING_SECONDS = 2.0


async def _store(core: TusCore) -> tuple[bool, str]:
    try:
        await anyio.to_thread.run_sync(core.store.check)
    except Exception as exc:  # OSError from a file store; a remote store raises its own
        return False, f"store cannot take uploads: {getattr(exc, 'strerror', None) or exc}"
    return True, "ok"


def _disk(core: TusCore) -> tuple[bool, str, int | None]:
    free = core.store.free_space()
    reserve = core.settings.min_free_space
    if free is not None and free <= reserve:
        return False, f"free space {free} bytes is at or below the reserve of {reserve}", free
    return True, "ok", free


async def _registry(core: TusCore) -> tuple[bool, str]:
    try:
        with anyio.fail_after(PING_SECONDS):
            await core.registry.ping()
    except TimeoutError:
        return False, f"registry did not answer within {PING_SECONDS:g} s"
    except Exception as exc:  # BackendUnavailable, or anything a broken backend raises
        return False, f"registry unreachable: {exc}"
    return True, "ok"


async def check(core: TusCore) -> tuple[int, dict[str, Any]]:
    """(status code, report) for the health endpoint."""
    writable, writable_msg = await _store(core)
    disk_ok, disk_msg, free = _disk(core)
    registry_ok, registry_msg = await _registry(core)
    locks_ok, locks_msg = _locks(core)
    healthy = writable and disk_ok and registry_ok and locks_ok
    report = {
        "status": "ok" if healthy else "fail",
        "checks": {
            "store": {"ok": writable, "detail": writable_msg},
            "disk": {
                "ok": disk_ok,
                "detail": disk_msg,
                "free_bytes": free,
                "reserve_bytes": core.settings.min_free_space,
            },
            "registry": {"ok": registry_ok, "detail": registry_msg},
            "locks": {"ok": locks_ok, "detail": locks_msg},
        },
        "started": core.started,  # the backends are connected (see /ready)
        "active_uploads": core.active_receives,
        "shutting_down": core.shutting_down.is_set(),
    }
    return (200 if healthy else 503), report


async def health_endpoint(request: Request) -> Response:
    """GET/HEAD /health: 200 when uploads can be taken, else 503; JSON either way."""
    core: TusCore = request.app.state.core
    status, report = await check(core)
    return JSONResponse(report, status_code=status, headers={"Cache-Control": "no-store"})


async def not_ready(core: TusCore) -> str | None:
    """Why this instance should get no new uploads now (None: it can take them)."""
    if core.shutting_down.is_set():
        return "shutting down"
    if not core.started:
        core.start_soon()  # never waited for here: the next probe sees how it went
        return "backends not started"
    locks_ok, locks_detail = _locks(core)
    if not locks_ok:
        return locks_detail
    registry_ok, detail = await _registry(core)
    return None if registry_ok else detail


def _locks(core: TusCore) -> tuple[bool, str]:
    try:
        core.locker.check()
    except BackendUnavailable as exc:
        return False, f"locks unavailable: {exc}"
    return True, "ok"


async def readiness_endpoint(request: Request) -> Response:
    """GET/HEAD /ready: 200 {"status": "ready"}, else 503 {"status": "not ready", "reason"}."""
    reason = await not_ready(request.app.state.core)
    body = {"status": "ready"} if reason is None else {"status": "not ready", "reason": reason}
    return JSONResponse(
        body, status_code=200 if reason is None else 503, headers={"Cache-Control": "no-store"}
    )
