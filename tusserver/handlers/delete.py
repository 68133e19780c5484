"""DELETE: terminate an upload (Termination)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.handlers.common import core_of, upload_id_of
from tusserver.hooks import apply_response


async def handle_delete(request: Request) -> Response:
    """204; an in-flight PATCH on the upload is stopped first, later requests get 410."""
    core = core_of(request)
    async with core.locked(upload_id_of(request)) as (info, _):
        granted = await core.hooks.pre_terminate(request, info)  # may reject (400)
        hook = core.hooks.before_terminate(request, info)
        await core.terminate(info)
    await core.hooks.terminated(hook)  # post-terminate, in the background
    return apply_response(Response(status_code=204), granted)
