"""HEAD: where an upload stands (Core, "HEAD")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.concat import assemble_if_ready, current_length
from tusserver.core import TusCore
from tusserver.handlers.common import core_of, expiry_headers, upload_id_of
from tusserver.registry import UploadInfo


def state_headers(info: UploadInfo) -> dict[str, str]:
    """Upload-Offset always (but for unassembled finals); Upload-Length or
    Upload-Defer-Length; metadata verbatim."""
    headers = {"Upload-Offset": str(info.offset), "Cache-Control": "no-store"}
    if info.is_final and not info.finished:
        del headers["Upload-Offset"]
    if info.length is not None:
        headers["Upload-Length"] = str(info.length)
    elif not info.is_final:  # a final's length is its partials' sum, never deferred
        headers["Upload-Defer-Length"] = "1"
    if info.metadata_raw:
        headers["Upload-Metadata"] = info.metadata_raw
    headers.update(expiry_headers(info))
    return headers


async def handle_head(request: Request) -> Response:
    """200 with the upload's state; 404/410 for unknown or removed uploads.

    Like tusd, HEAD takes the upload's lock: a client resuming after a dropped connection asks
    HEAD first, which makes a stale request still holding the upload save what it received and
    let go, so the offset returned here is the real one and the following PATCH gets the lock.
    """
    core = core_of(request)
    async with core.locked(upload_id_of(request)) as (info, _):
        if info.is_final and not info.finished:
            info = await assemble_if_ready(core, info, request)  # e.g. one a crash cut short
    headers = state_headers(info)
    if info.concat:
        headers.update(await concat_headers(core, info))
    return Response(status_code=200, headers=headers)


async def concat_headers(core: TusCore, info: UploadInfo) -> dict[str, str]:
    """Concatenation: HEAD "MUST include the Upload-Concat header and its value as received";
    a final "SHOULD NOT contain the Upload-Offset header unless the concatenation has been
    successfully finished" and has Upload-Length once it "can be calculated"."""
    headers = {"Upload-Concat": info.concat or ""}
    if info.is_final and not info.finished:
        length = await current_length(core, info)
        if length is not None:
            headers["Upload-Length"] = str(length)
    return headers
