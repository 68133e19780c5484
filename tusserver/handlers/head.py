"""HEAD: where an upload stands (Core, "HEAD")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.handlers.common import core_of, expiry_headers, upload_id_of
from tusserver.registry import UploadInfo


def state_headers(info: UploadInfo) -> dict[str, str]:
    """Upload-Offset always; Upload-Length or Upload-Defer-Length; metadata verbatim."""
    headers = {"Upload-Offset": str(info.offset), "Cache-Control": "no-store"}
    if info.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(info.length)
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
    async with core_of(request).locked(upload_id_of(request)) as (info, _):
        pass
    return Response(status_code=200, headers=state_headers(info))
