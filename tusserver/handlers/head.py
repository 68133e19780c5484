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
    """200 with the upload's state; 404/410 for unknown or removed uploads."""
    info = core_of(request).load(upload_id_of(request))
    return Response(status_code=200, headers=state_headers(info))
