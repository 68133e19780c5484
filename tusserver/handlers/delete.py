"""DELETE: terminate an upload (Termination)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.core import TusCore
from tusserver.handlers.common import core_of, upload_id_of
from tusserver.hooks import HTTPResponse, apply_response


async def handle_delete(request: Request) -> Response:
    """204; an in-flight PATCH on the upload is stopped first, later requests get 410."""
    core = core_of(request)
    granted = await terminate(core, upload_id_of(request), request)
    return apply_response(Response(status_code=204), granted)


async def terminate(
    core: TusCore, upload_id: str, request: Request, *, refusable: bool = True
) -> HTTPResponse | None:
    """Terminate an upload for `request` (the one the hooks are told about) and return what
    the pre-terminate hook granted. Taking the lock stops an in-flight PATCH first; 404/410
    for unknown and gone uploads. `refusable=False` skips pre-terminate: the admin API's
    terminations are the operator's decision, not a client's that a hook may veto.
    post-terminate fires either way."""
    async with core.locked(upload_id) as (info, _):
        granted = await core.hooks.pre_terminate(request, info) if refusable else None
        hook = core.hooks.before_terminate(request, info)
        await core.terminate(info)
    await core.hooks.terminated(hook)  # post-terminate, in the background
    return granted
