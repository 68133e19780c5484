"""DELETE: terminate an upload (Termination)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.handlers.common import core_of, upload_id_of


async def handle_delete(request: Request) -> Response:
    """204; an in-flight PATCH on the upload is stopped first, later requests get 410."""
    core = core_of(request)
    async with core.locked(upload_id_of(request)) as (info, _):
        core.terminate(info)
    return Response(status_code=204)
