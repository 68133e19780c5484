"""PATCH: append bytes at the upload's offset (Core, "PATCH")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.handlers.common import (
    core_of,
    expiry_headers,
    optional_int,
    required_int,
    upload_id_of,
)
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
    async with core.locked(upload_id) as (info, lock):
        if offset != info.offset:
            raise TusError(409, "Upload-Offset does not match", {"Upload-Offset": str(info.offset)})
        if new_length is not None:
            core.declare_length(info, new_length)
        _check_fits(info, core.remaining(info), content_length)
        outcome = await core.receive(request.receive, info, lock)
    if outcome.interrupted in INTERRUPTED:
        raise TusError(400, INTERRUPTED[outcome.interrupted], {"Upload-Offset": str(info.offset)})
    headers = {"Upload-Offset": str(info.offset), **expiry_headers(info)}
    return Response(status_code=204, headers=headers)
