"""DELETE: terminate an upload (Termination)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.handlers.common import core_of, upload_id_of


async def handle_delete(request: Request) -> Response:
    """204; an in-flight PATCH on the upload is stopped first, later requests get 410."""
    core = core_of(request)
    upload_id = upload_id_of(request)
    async with core.locks.hold(upload_id, core.settings.lock_timeout):
        info = core.load(upload_id)
        core.terminate(info)
    return Response(status_code=204)
