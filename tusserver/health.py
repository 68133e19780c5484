"""/health: can this worker take uploads right now? 200 or 503 with a JSON report.

Checks what an upload needs: the upload directory accepts a new file, free disk is above the
--min-free-space reserve, and the registry answers a query. Load balancers and orchestrators
poll it; each check is cheap (one tiny file, one statvfs, one SELECT).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tusserver.core import TusCore, free_space


def _dir_writable(core: TusCore) -> tuple[bool, str]:
    probe = core.settings.upload_dir / f".health-{secrets.token_hex(6)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        return False, f"upload dir not writable: {exc.strerror or exc}"
    return True, "ok"


def _disk(core: TusCore) -> tuple[bool, str, int]:
    free = free_space(core.settings.upload_dir)
    reserve = core.settings.min_free_space
    if free <= reserve:
        return False, f"free disk {free} bytes is at or below the reserve of {reserve}", free
    return True, "ok", free


def _registry(core: TusCore) -> tuple[bool, str]:
    try:
        core.registry.ping()
    except Exception as exc:
        return False, f"registry unreachable: {exc}"
    return True, "ok"


def check(core: TusCore) -> tuple[int, dict[str, Any]]:
    """(status code, report) for the health endpoint."""
    writable, writable_msg = _dir_writable(core)
    disk_ok, disk_msg, free = _disk(core)
    registry_ok, registry_msg = _registry(core)
    healthy = writable and disk_ok and registry_ok
    report = {
        "status": "ok" if healthy else "fail",
        "checks": {
            "upload_dir": {"ok": writable, "detail": writable_msg},
            "disk": {
                "ok": disk_ok,
                "detail": disk_msg,
                "free_bytes": free,
                "reserve_bytes": core.settings.min_free_space,
            },
            "registry": {"ok": registry_ok, "detail": registry_msg},
        },
        "active_uploads": core.active_receives,
        "shutting_down": core.shutting_down.is_set(),
    }
    return (200 if healthy else 503), report


async def health_endpoint(request: Request) -> Response:
    """GET/HEAD /health: 200 when uploads can be taken, else 503; JSON either way."""
    core: TusCore = request.app.state.core
    status, report = check(core)
    return JSONResponse(report, status_code=status, headers={"Cache-Control": "no-store"})
