"""POST: create an upload (Creation, Creation With Upload, Creation Defer Length)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.handlers.common import core_of, expiry_headers, optional_int, upload_url
from tusserver.protocol import (
    TusError,
    is_offset_stream,
    parse_defer_length,
    parse_metadata,
)
from tusserver.registry import UploadInfo


def _length_from_headers(request: Request) -> int | None:
    """Exactly one of Upload-Length or `Upload-Defer-Length: 1` (Creation, "POST")."""
    length = optional_int(request, "Upload-Length")
    defer = request.headers.get("Upload-Defer-Length")
    if defer is not None:
        parse_defer_length(defer)
        if length is not None:
            raise TusError(400, "send either Upload-Length or Upload-Defer-Length, not both")
        return None
    if length is None:
        raise TusError(400, "Upload-Length or Upload-Defer-Length header required")
    return length


async def handle_post(request: Request) -> Response:
    """201 + Location; with a body (creation-with-upload) also Upload-Offset."""
    core = core_of(request)
    length = _length_from_headers(request)
    metadata = parse_metadata(request.headers.get("Upload-Metadata", ""))
    info = UploadInfo(
        id=core.new_id(),
        length=length,
        metadata_raw=metadata.raw if metadata else None,
        metadata=metadata.text() if metadata else {},
    )
    with_body = is_offset_stream(request.headers.get("content-type"))
    declared = optional_int(request, "Content-Length")
    remaining = core.remaining(info)
    if with_body and declared is not None and remaining is not None and declared > remaining:
        raise TusError(413, "request body exceeds the upload length")
    core.create(info)
    headers = {"Location": upload_url(request, info.id)}
    if with_body:
        async with core.locks.hold(info.id, core.settings.lock_timeout) as lock:
            await core.receive(request.receive, info, lock)
        headers["Upload-Offset"] = str(info.offset)
    headers.update(expiry_headers(info))
    return Response(status_code=201, headers=headers)
