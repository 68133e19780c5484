"""PATCH: append bytes at the upload's offset (Core, "PATCH")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.checksum import chunk_check
from tusserver.concat import partial_finished
from tusserver.handlers.common import (
    core_of,
    expiry_headers,
    optional_int,
    required_int,
    upload_id_of,
)
from tusserver.hooks import apply_response
from tusserver.protocol import TusError, check_offset_content_type
from tusserver.registry import UploadInfo

INTERRUPTED = {
    "stopped": "upload interrupted by a newer request for the same upload",
    "timeout": "request body timed out; resume from Upload-Offset",
}


def _check_fits(info: UploadInfo, remaining: int | None, content_length: int | None) -> None:
    """Refuse up front a body that would carry the upload past its length (413)."""
    if content_length is not None and remaining is not None and content_length > remaining:
        raise TusError(413, "request body exceeds the upload's remaining length")


async def handle_patch(request: Request) -> Response:
    """204 + new Upload-Offset; 409 on offset mismatch without touching the upload."""
    core = core_of(request)
    upload_id = upload_id_of(request)
    check_offset_content_type(request.headers.get("content-type"))
    offset = required_int(request, "Upload-Offset")
    new_length = optional_int(request, "Upload-Length")
    content_length = optional_int(request, "Content-Length")
    check = chunk_check(request.headers, request.scope)  # 400 before any byte is read
    async with core.locked(upload_id, receiving=True) as (info, hold):
        if info.is_final:
            raise TusError(403, "final uploads of a concatenation cannot be patched")
        if offset != info.offset:
            raise TusError(409, "Upload-Offset does not match", {"Upload-Offset": str(info.offset)})
        was_finished = info.finished
        if new_length is not None:
            await core.declare_length(info, new_length)
        _check_fits(info, core.remaining(info), content_length)
        async with core.hooks.receiving(request, info) as progress:  # post-receive
            outcome = await core.receive(
                request.receive,
                info,
                hold,
                observers=(*(check.observers if check else ()), progress),
                checkpoints=check is None,  # never record bytes not verified yet
                verify=check.verify if check else None,
            )
        if progress.stopped is not None:  # a post-receive hook answered StopUpload
            await core.hooks.stop_upload(request, info, progress, core.terminate)
    if info.is_partial and info.finished:
        await partial_finished(core, info)
    if outcome.interrupted == "shutdown":  # what arrived is saved; resume after the restart
        raise TusError(
            503,
            "server is shutting down; resume from Upload-Offset",
            {"Upload-Offset": str(info.offset), "Retry-After": "2", "Connection": "close"},
        )
    if outcome.interrupted in INTERRUPTED:
        raise TusError(400, INTERRUPTED[outcome.interrupted], {"Upload-Offset": str(info.offset)})
    headers = {"Upload-Offset": str(info.offset), **expiry_headers(info)}
    finished = None
    if info.finished and not was_finished:  # pre-finish may add to the response; post-finish
        finished = await core.hooks.finished(request, info)
    return apply_response(Response(status_code=204, headers=headers), finished)
